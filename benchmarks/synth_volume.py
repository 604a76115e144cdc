"""Seconds to generate and write one full-size synthetic study, against ``np.save``.

Usage: python benchmarks/synth_volume.py [--slices 386] [--size 512] [--repeats 3]

Prints the median seconds per study for the synthetic writer (phantom rendered straight into a
memory-mapped ``.npy``, then renamed into place) and for ``np.save`` of the same array to the
same folder, measured in the same process, and their ratio. The target is a ratio under 5.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from _results import result  # benchmarks/ is on sys.path when a script runs
from radfusion.synthetic.writer import _write_volume


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=386)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    shape = (args.slices, args.size, args.size)
    seeds = np.random.SeedSequence(0).spawn(args.repeats)
    synth, save = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i in range(args.repeats):
            path = folder / f"{i}.npy"
            start = time.perf_counter()
            _write_volume((i, path, shape, "central", seeds[i], 0, 1.0))  # true calibre
            synth.append(time.perf_counter() - start)
            array = np.load(path)
            start = time.perf_counter()
            np.save(folder / f"copy-{i}.npy", array)
            save.append(time.perf_counter() - start)
            (folder / f"copy-{i}.npy").unlink()
            path.unlink()
    s, b = statistics.median(synth), statistics.median(save)
    mib = np.prod(shape) * 2 / 2**20
    print(f"volume {shape} int16 ({mib:.0f} MiB), median of {args.repeats}")
    print(f"synthetic study : {s:8.3f} s  ({mib / s:7.0f} MiB/s)")
    print(f"np.save baseline: {b:8.3f} s  ({mib / b:7.0f} MiB/s)")
    print(f"ratio           : {s / b:8.1f} x  (target < 5)")
    result(
        "synth_volume",
        "synthetic study",
        s,
        "s",
        b / s,
        "np.save of the same array",
        ">= 0.2 (< 5x slower)",
    )


if __name__ == "__main__":
    main()
