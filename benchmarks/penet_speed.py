"""PENet speed on this CPU: seconds per window, GFLOP/s, a training step, a whole study.

Usage: python benchmarks/penet_speed.py [--models penet_50,penet_small] [--threads 2]

The anchor is the original PENet-50 implementation measured on the same 2-core CPU with
torch 2.13.0 (see the issue): 0.52 s per window for inference (batch 1, 24 x 192 x 192,
65.7 GFLOP), 4.4 s for a training step of batch 2 (forward + backward) and 8.3 s for a
386-slice study (16 windows). Prints our figures, default memory format and
``channels_last_3d``, and the speed-up against the anchor.
"""

from __future__ import annotations

import argparse
import time

import torch

from _results import result  # benchmarks/ is on sys.path when a script runs
from radfusion.imaging.module import focal_loss
from radfusion.imaging.registry import create_model

ANCHOR = {"window": 0.52, "train_step": 4.4, "study": 8.3}
GFLOP_PER_WINDOW = 65.7  # PENet-50 on a 24 x 192 x 192 window (the anchor's count)


def _time(fn, repeats):
    fn()  # warm-up: allocator, oneDNN primitive cache
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="penet_50")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for name in args.models.split(","):
        for layout in ("default", "channels_last_3d"):
            fmt = torch.channels_last_3d if layout != "default" else torch.contiguous_format
            model = create_model(name).eval().to(memory_format=fmt)
            window = torch.randn(1, 1, 24, 192, 192).to(memory_format=fmt)
            study = torch.randn(16, 1, 24, 192, 192).to(memory_format=fmt)
            with torch.inference_mode():
                t_window = _time(lambda m=model, x=window: m(x), args.repeats)
                studies = {
                    b: _time(
                        lambda m=model, x=study, b=b: [m(x[i : i + b]) for i in range(0, 16, b)], 1
                    )
                    for b in (1, 2, 4)
                }
                best_batch = min(studies, key=studies.get)
                t_study = studies[best_batch]
            model.train()
            opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
            batch = torch.randn(2, 1, 24, 192, 192).to(memory_format=fmt)
            target = torch.tensor([1.0, 0.0])

            def step(m=model, x=batch, y=target, o=opt):
                loss = focal_loss(m(x).squeeze(1), y)
                o.zero_grad()
                loss.backward()
                o.step()

            t_step = _time(step, max(args.repeats - 1, 1))
            line = (
                f"{name:11s} {layout:16s} window {t_window:6.3f} s "
                f"({ANCHOR['window'] / t_window:4.2f}x anchor"
            )
            if name == "penet_50":
                line += f", {GFLOP_PER_WINDOW / t_window:5.0f} GFLOP/s"
            line += (
                f") | train step (batch 2) {t_step:6.2f} s ({ANCHOR['train_step'] / t_step:4.2f}x)"
                f" | 386-slice study (16 windows, batches of {best_batch}) {t_study:6.2f} s "
                f"({ANCHOR['study'] / t_study:4.2f}x)"
            )
            print(line, flush=True)
            tag = f"{name} {layout}"
            result(
                "penet_speed",
                f"{tag}: window",
                t_window,
                "s",
                ANCHOR["window"] / t_window,
                "original PENet (anchor)",
                ">= 2" if name == "penet_50" else "",
            )
            result(
                "penet_speed",
                f"{tag}: train step",
                t_step,
                "s",
                ANCHOR["train_step"] / t_step,
                "original PENet (anchor)",
                ">= 1.5" if name == "penet_50" else "",
            )
            result(
                "penet_speed",
                f"{tag}: study",
                t_study,
                "s",
                ANCHOR["study"] / t_study,
                "original PENet (anchor)",
                ">= 2" if name == "penet_50" else "",
            )


if __name__ == "__main__":
    main()
