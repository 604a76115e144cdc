"""The real job's size: seconds and peak memory per stage per study at 512 x 512 and Table 1's
slice counts, and what they project for the whole release.

Usage: python benchmarks/full_size.py [--studies 3] [--model penet_50] [--steps 3] [--threads 2]

Writes ``--studies`` synthetic studies at 512 x 512 (Table 1's slice counts: 409-531 here),
then, in this one process, each stage on its own with the paper's settings:

1. preprocess: each study resized to 208 x 208 into the cache (``build_cache``), against the
   I/O floor (reading the source and writing an output of the cached size, no resize);
2. a PENet training step, batch 2 of the paper's 24 x 192 x 192 windows drawn from the cache;
3. evaluation: every window of each study scored (``predict_studies``), against the model
   alone on the same number of windows already in memory (the cost of streaming them);
4. the EHR model: the paper's 60-point grid on a synthetic cohort of the release's 1837 studies.

Peak memory is the process's anonymous memory (RssAnon, sampled every 5 ms) above what it
held before the stage: its RSS also counts the memory-mapped cache's pages, which the kernel
drops under pressure. The projection multiplies the per-study and per-step figures out to the
release: 1837 studies, one epoch of 4096 windows (the recipe's), on this machine's CPU. No GPU
is measured here; ``benchmarks/penet_gpu.py`` measures one, and docs/experiments/gpu.md keeps
its figures.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from _results import result  # benchmarks/ is on sys.path when a script runs
from radfusion.config import TrainConfig
from radfusion.data import Cohort
from radfusion.imaging.inference import predict_studies, window_probs
from radfusion.imaging.module import focal_loss, memory_format
from radfusion.imaging.preprocess import PreprocessParams, build_cache, cohort_volumes
from radfusion.imaging.registry import create_model
from radfusion.imaging.windows import EvalWindows, TrainWindows
from radfusion.io import write_npy
from radfusion.synthetic.writer import write_synthetic_cohort

RELEASE_STUDIES = 1837
EPOCH_WINDOWS = 4096


class Peak:
    """The peak of RssAnon above its level at entry, sampled every 5 ms in a thread."""

    def __enter__(self):
        self.base = self.peak = _anon()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _anon())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _anon())

    @property
    def mb(self) -> float:
        return (self.peak - self.base) / 2**20


def _anon() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=3)
    parser.add_argument("--model", default="penet_50")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--ehr-studies", type=int, default=RELEASE_STUDIES)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = TrainConfig(model=args.model)  # the paper's window, crop, stride, batch
    params = PreprocessParams(size=208)
    rows = []

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_synthetic_cohort(
            root / "data", 60, size=args.size, keep=max(6, args.studies), workers=1
        )
        cohort = Cohort.load(root / "data")
        studies = cohort.studies.iloc[: args.studies]
        every = cohort_volumes(cohort)
        sources = {int(i): every[int(i)] for i in studies.index}
        slices = [int(np.load(p, mmap_mode="r").shape[0]) for p in sources.values()]
        print(
            f"{args.studies} studies at {args.size} x {args.size}, {min(slices)}-{max(slices)} "
            f"slices (median {statistics.median(slices):.0f}); model {args.model}, "
            f"{args.threads} threads"
        )

        # 1. preprocess, against the I/O floor
        t0 = time.perf_counter()
        for k, path in enumerate(sources.values()):
            source = np.load(path)
            out = np.zeros((slices[k], 208, 208), np.int16)
            out[:, : source.shape[1], : source.shape[2]] = source[:, :208, :208]
            write_npy(out, root / f"floor-{k}.npy")
        t_floor = time.perf_counter() - t0
        with Peak() as mem:
            t0 = time.perf_counter()
            built = build_cache(sources, root / "cache", params, workers=1)
            t_pre = time.perf_counter() - t0
        assert not built.failed, built.failed
        rows.append(("preprocess (512 -> 208)", t_pre / args.studies, "study", mem.mb))
        result(
            "full_size",
            "preprocess",
            t_pre / args.studies,
            "s/study",
            t_floor / t_pre,
            "I/O floor (read + write, no resize)",
        )

        # 2. a training step of batch 2
        model = create_model(args.model)
        fmt = memory_format(model)
        model = model.to(memory_format=fmt)
        train = TrainWindows(
            built.folder,
            studies,
            cohort.annotations,
            length=2 * (args.steps + 1),
            window=config.window,
            crop=config.crop,
            abnormal_prob=config.abnormal_prob,
        )
        opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
        batches = [
            torch.stack([train[2 * k][0], train[2 * k + 1][0]]).contiguous(memory_format=fmt)
            for k in range(args.steps + 1)
        ]
        target = torch.tensor([1.0, 0.0])
        model.train()
        times = []
        with Peak() as mem:
            for x in batches:
                t0 = time.perf_counter()
                loss = focal_loss(model(x).squeeze(1), target)
                opt.zero_grad()
                loss.backward()
                opt.step()
                times.append(time.perf_counter() - t0)
        t_step = statistics.median(times[1:])  # the first step warms the allocator up
        rows.append(("training step, batch 2", t_step, "step", mem.mb))

        # 3. evaluation, against the model alone on windows in memory
        eval_windows = EvalWindows(built.folder, studies, window=config.window, crop=config.crop)
        n_windows = len(eval_windows)
        with Peak() as mem:
            t0 = time.perf_counter()
            scored = predict_studies(model, built.folder, studies, config)
            t_eval = time.perf_counter() - t0
        assert len(scored) == args.studies and np.isfinite(scored["prob"]).all()
        x = eval_windows[0][0][None].contiguous(memory_format=fmt)
        model.eval()
        t0 = time.perf_counter()
        with torch.no_grad():
            for _ in range(min(n_windows, 8)):
                window_probs(model, x)
        t_model = (time.perf_counter() - t0) / min(n_windows, 8) * n_windows
        rows.append(("evaluation (every window)", t_eval / args.studies, "study", mem.mb))
        result(
            "full_size",
            "evaluation",
            t_eval / args.studies,
            "s/study",
            t_model / t_eval,
            "the model alone on windows in memory",
        )

    # 4. the EHR model at the release's size
    from ehr_grid import cohort_features
    from radfusion.ehr.model import tune

    x, y, split = cohort_features(args.ehr_studies)
    tr, va = split == "train", split == "val"
    with Peak() as mem:
        t0 = time.perf_counter()
        tune("elasticnet", x[tr], y[tr], x[va], y[va], n_jobs=args.threads)
        t_ehr = time.perf_counter() - t0
    rows.append((f"EHR grid ({args.ehr_studies} studies)", t_ehr, "cohort", mem.mb))

    print(f"\n{'stage':32s} {'seconds':>10s} {'per':>7s} {'peak MB':>8s}")
    for name, seconds, per, mb in rows:
        print(f"{name:32s} {seconds:10.2f} {per:>7s} {mb:8.0f}")
    steps = EPOCH_WINDOWS // 2
    per_slice = {"pre": t_pre / sum(slices), "eval": t_eval / sum(slices)}
    median_slices = 386  # Table 1's median
    projection = pd.DataFrame(
        [
            ("preprocess", per_slice["pre"] * median_slices * RELEASE_STUDIES),
            (f"one epoch of PENet ({steps} steps)", t_step * steps),
            ("evaluation (every study)", per_slice["eval"] * median_slices * RELEASE_STUDIES),
            ("EHR grid", t_ehr * (RELEASE_STUDIES / args.ehr_studies)),
        ],
        columns=["stage", "seconds"],
    )
    print(
        f"\nThe release ({RELEASE_STUDIES} studies, median {median_slices} slices) on this "
        f"machine's CPU, {args.threads} threads (per-slice rates scaled):"
    )
    for stage, seconds in projection.itertuples(index=False):
        print(f"  {stage:36s} {seconds / 3600:8.1f} h")
    print("  GPU: not measured by this script (benchmarks/penet_gpu.py; docs/experiments/gpu.md)")


if __name__ == "__main__":
    main()
