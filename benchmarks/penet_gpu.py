"""PENet-50 on a CUDA GPU: windows per second, inference and training, by precision.

Usage: python benchmarks/penet_gpu.py [--model penet_50] [--batch 16]

Needs a CUDA GPU (``run_all.py`` leaves it out). Batches of 24 x 192 x 192 windows in
``channels_last_3d``, cuDNN autotuning on. Three precisions: strict fp32 (TF32 off), TF32
convolutions (PyTorch's default for cuDNN) and bf16 autocast. Training is SGD on BCE
(forward, backward, step). Ratios are against strict fp32, measured in the same process.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from _results import result  # benchmarks/ is on sys.path when a script runs
from radfusion.imaging.registry import create_model


def _rate(fn, windows: int, repeats: int) -> float:
    for _ in range(3):  # warm-up: cuDNN autotuning, the allocator
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return windows * repeats / (time.perf_counter() - start)


def measure(name: str, batch: int, precision: str) -> tuple[float, float]:
    """(inference, training) windows per second for one precision."""
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    bf16 = precision == "bf16"
    model = create_model(name).cuda().to(memory_format=torch.channels_last_3d)
    x = torch.randn(batch, 1, 24, 192, 192, device="cuda")
    x = x.to(memory_format=torch.channels_last_3d)
    y = torch.zeros(batch, 1, device="cuda")
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def autocast():
        return torch.autocast("cuda", torch.bfloat16) if bf16 else contextlib.nullcontext()

    def infer():
        with torch.inference_mode(), autocast():
            model(x)

    def train():
        with autocast():
            logits = model(x).float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    model.eval()
    infer_rate = _rate(infer, batch, 10)
    model.train()
    return infer_rate, _rate(train, batch, 5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="penet_50")
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("penet_gpu: no CUDA GPU here")
    torch.backends.cudnn.benchmark = True
    rates = {}
    for precision in ("fp32", "tf32", "bf16"):
        rates[precision] = measure(args.model, args.batch, precision)
        torch.cuda.empty_cache()
    against = f"strict fp32 on the same {torch.cuda.get_device_name(0)}"
    base_infer, base_train = rates["fp32"]
    for precision, (infer_rate, train_rate) in rates.items():
        name = f"{args.model} {precision}"
        result(
            "penet_gpu",
            f"{name} inference",
            infer_rate,
            "windows/s",
            infer_rate / base_infer,
            against,
        )
        result(
            "penet_gpu",
            f"{name} training",
            train_rate,
            "windows/s",
            train_rate / base_train,
            against,
        )


if __name__ == "__main__":
    main()
