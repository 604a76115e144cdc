"""PENet training on a CUDA GPU: the loader alone, the model alone, and both, with the model
FLOP utilisation against the device's bf16 peak.

Usage: python benchmarks/penet_gpu.py [--cache CACHE_DIR] [--model penet_50] [--batch 8]
                                      [--steps 30] [--peak-tflops N]

Needs a CUDA GPU. Without ``--cache`` it writes a few full-size studies (int16, 400 slices of
208 x 208, the paper's cache) into a temporary folder first.

* loader alone: windows/s of radfusion's training ``DataLoader`` as the image stage builds it
  for a GPU (int16 windows, workers, pinned memory, prefetch), read and discarded;
* model alone: windows/s of forward + backward + SGD step on one batch kept on the device,
  ``bf16-mixed`` autocast, ``channels_last_3d``, cuDNN autotuning;
* both: the two together, windows normalised on the device, as ``Trainer.fit`` runs them.

Ratios: the loader's rate and the pipeline's against the model's (the loader is never the
bottleneck when the pipeline keeps the model's rate), and the model's FLOP/s against the bf16
peak (``--peak-tflops``, or the table below by device name). FLOPs are counted by PyTorch's
FlopCounterMode on one window (a training step: three times the forward's).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from _results import result  # benchmarks/ is on sys.path when a script runs
from radfusion.config import TrainConfig
from radfusion.imaging.datamodule import loader_options
from radfusion.imaging.module import focal_loss, model_input
from radfusion.imaging.registry import create_model
from radfusion.imaging.windows import TrainWindows

#: Dense bf16 tensor-core peaks (TFLOP/s, without sparsity) from the vendors' data sheets.
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}


def write_cache(folder: Path, studies: int, slices: int, size: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    for idx in range(studies):
        volume = rng.integers(-1000, 1500, (slices, size, size), dtype=np.int16)
        np.save(folder / f"{idx}.npy", volume)
        (folder / f"{idx}.json").write_text("{}")
    return pd.DataFrame({"label": rng.integers(0, 2, studies)}, index=range(studies))


def forward_flops(model, window: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(window)
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path)
    parser.add_argument("--model", default="penet_50")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--peak-tflops", type=float, default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("penet_gpu: no CUDA GPU here")
    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(0)
    peak = args.peak_tflops or next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)
    config = TrainConfig(model=args.model, batch_size=args.batch, num_workers=args.workers)
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or Path(tmp)
        studies = (
            write_cache(cache, 6, 400, 208)
            if args.cache is None
            else pd.DataFrame({"label": 0}, index=sorted(int(p.stem) for p in cache.glob("*.npy")))
        )
        windows = TrainWindows(
            cache,
            studies,
            pd.DataFrame(columns=["idx", "slice"]),
            length=args.batch * (args.steps + 3) * 4,
            normalized=False,
        )
        options = loader_options(config, gpu=True)
        loader = torch.utils.data.DataLoader(windows, batch_size=args.batch, **options)
        print(f"{name}; loader {options}")

        # The loader alone.
        it = iter(loader)
        for _ in range(3):
            next(it)
        start, n = time.perf_counter(), 0
        for _ in range(args.steps):
            x, _ = next(it)
            n += x.shape[0]
        loader_rate = n / (time.perf_counter() - start)

        model = create_model(args.model).cuda().to(memory_format=torch.channels_last_3d)
        flops = 3 * forward_flops(create_model(args.model), torch.zeros(1, 1, 24, 192, 192))
        opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

        def step(x, y):
            with torch.autocast("cuda", torch.bfloat16):
                logits = model(model_input(x, model)).squeeze(1).float()
            loss = focal_loss(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def timed(batches) -> float:
            torch.cuda.synchronize()
            start, n = time.perf_counter(), 0
            for x, y in batches:
                step(x, y)
                n += x.shape[0]
            torch.cuda.synchronize()
            return n / (time.perf_counter() - start)

        # The model alone: one int16 batch kept on the device.
        x, y = next(it)
        x, y = x.cuda(), y.float().cuda()
        for _ in range(3):  # cuDNN autotuning, the allocator
            step(x, y)
        model_rate = timed([(x, y)] * args.steps)

        # Both, as the image stage runs them.
        def batches():
            for _ in range(args.steps):
                xb, yb = next(it)
                yield xb.cuda(non_blocking=True), yb.float().cuda(non_blocking=True)

        both_rate = timed(batches())
    mfu = model_rate * flops / 1e12 / peak if peak else float("nan")
    print(
        f"loader {loader_rate:.0f} windows/s, model {model_rate:.0f} windows/s "
        f"({model_rate * flops / 1e12:.0f} TFLOP/s, {mfu:.0%} of the {peak} TFLOP/s bf16 peak), "
        f"both {both_rate:.0f} windows/s ({flops / 3e9:.1f} GFLOP per window forward)"
    )
    against = f"model alone on the {name}"
    result(
        "penet_gpu",
        f"{args.model} loader alone",
        loader_rate,
        "windows/s",
        loader_rate / model_rate,
        against,
        ">= 1",
    )
    result(
        "penet_gpu",
        f"{args.model} training, loader and model",
        both_rate,
        "windows/s",
        both_rate / model_rate,
        against,
        ">= 0.95",
    )
    if peak:
        result(
            "penet_gpu",
            f"{args.model} training, model alone",
            model_rate,
            "windows/s",
            mfu,
            f"bf16 peak {peak} TFLOP/s",
            ">= 0.40",
        )


if __name__ == "__main__":
    main()
