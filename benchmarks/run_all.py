"""Run every speed benchmark and print one table of figures and ratios.

Usage: python benchmarks/run_all.py [--quick] [--out FILE.md] [--only NAME,...]

Each script measures its baseline in the same process and prints ``RESULT`` lines
(``_results.py``); this collects them into one Markdown table (the README's) with the machine
it ran on. ``--quick`` uses smaller inputs (a minute or two instead of several).

Not run here: ``penet_gpu.py`` (it needs a CUDA GPU) and the scripts that measure models, not
speed, and print no ``RESULT`` line (``fresh_cohort.py`` and ``clot_sensitivity.py`` need a
finished run; ``phantom_visibility.py``, ``clot_patches.py`` and ``phantom_figure.py`` study
the phantom). ``tests/test_benchmark_scripts.py`` runs every script on tiny inputs
(``penet_gpu.py`` where there is a GPU; elsewhere it checks the one-line refusal) and checks
that every script printing ``RESULT`` lines is listed in ``SCRIPTS``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: script -> (full arguments, quick arguments)
SCRIPTS = {
    "synth_volume": ([], ["--slices", "96", "--repeats", "2"]),
    "validate_cohort": ([], ["--studies", "400"]),
    "ehr_features": (["--baseline-studies", "300"], ["--studies", "300", "--copies", "1"]),
    "evaluation": ([], ["--bootstrap", "500"]),
    "ct_pipeline": ([], ["--slices", "96", "--dicom-slices", "40", "--pairs", "1"]),
    "ehr_grid": ([], ["--studies", "300", "--pairs", "1"]),
    "meds_codes": ([], ["--events", "1000000", "--subjects", "4000"]),
    "full_size": ([], ["--studies", "1", "--model", "penet_small", "--ehr-studies", "300"]),
    "penet_speed": (["--model", "penet_50"], ["--model", "penet_small", "--pairs", "2"]),
    "small_findings": ([], ["--seeds", "0"]),
}


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--only", default=None)
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(SCRIPTS)
    rows, failed = [], []
    for name in names:
        full, quick = SCRIPTS[name]
        cmd = [sys.executable, str(HERE / f"{name}.py"), *(quick if args.quick else full)]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        found = [
            json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")
        ]
        if proc.returncode or not found:
            failed.append(name)
            print(f"{name}: failed ({proc.returncode})\n{proc.stderr[-2000:]}", file=sys.stderr)
        rows += found
        print(f"{name}: {len(found)} figure(s) in {seconds:.0f} s", file=sys.stderr)
    lines = [
        f"Machine: {machine()}.",
        "",
        "| benchmark | figure | value | ratio | against (same process) | aim |",
        "|---|---|---:|---:|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['benchmark']} | {r['figure']} | {r['value']:,.4g} {r['unit']} | "
            f"{r['ratio']:.2f}x | {r['against']} | {r['aim']} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
