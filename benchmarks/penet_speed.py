"""PENet speed on this CPU against the original's way of running it, timed in one process.

Usage: python benchmarks/penet_speed.py [--model penet_50] [--threads 2] [--pairs 5]

The baseline is our own PENet with the same weights, run the way the original implementation
runs it: default memory format, the 1-channel window repeated to 3 channels into a 3-channel
stem, the squeeze-excitation gate, the residual sum and the activation as three passes, and
glibc's allocator as a plain process has it. Ours: ``channels_last_3d``, the 1-channel stem
(its kernel summed over the three channels) computed as a 2-D convolution of depth taps, the
gate and the sum in one pass, freed memory kept for reuse (``radfusion.allocator``).

Each figure is timed alternately, baseline then ours, after an untimed call of each, and the
ratio is the median of the pairs' ratios. Figures: one 24 x 192 x 192 window (batch 1), a
386-slice study (16 windows, one at a time: the
fastest batch on a CPU for both), a training step of batch 2 (focal loss, SGD), and
bf16 autocast inference of ours against ours in fp32 (it wins only where the CPU has bf16
instructions: avx512_bf16 or AMX).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import types

import torch
from torch import nn

from _results import result  # benchmarks/ is on sys.path when a script runs
from radfusion.allocator import glibc_defaults, retain_freed_memory
from radfusion.devices import cpu_has_bf16
from radfusion.imaging.module import focal_loss
from radfusion.imaging.penet import Bottleneck
from radfusion.imaging.registry import create_model

CL = torch.channels_last_3d


def _original_block_forward(self, x):
    """Bottleneck.forward as the original writes it: gate, stochastic depth, sum, activation,
    each its own pass."""
    identity = self.shortcut(x)
    if self.training and self.survival < 1.0:
        keep = torch.rand(x.shape[0], 1, 1, 1, 1, device=x.device) < self.survival
        if not keep.any():
            return nn.functional.leaky_relu(identity)
    out = self.act(self.norm1(self.conv1(x)))
    out = self.act(self.norm2(self.conv2(out)))
    out = self.se(self.norm3(self.conv3(out)))
    if self.training and self.survival < 1.0:
        out = out * keep / self.survival
    return self.act(out + identity)


def build(name: str) -> tuple[nn.Module, nn.Module]:
    """(baseline, ours) with the same weights."""
    baseline = create_model(name, in_chans=3)
    for block in baseline.modules():
        if isinstance(block, Bottleneck):
            block.forward = types.MethodType(_original_block_forward, block)
    ours = create_model(name)
    state = baseline.state_dict()
    state["stem.0.weight"] = state["stem.0.weight"].sum(1, keepdim=True)
    ours.load_state_dict(state)
    return baseline, ours.to(memory_format=CL)


def _once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def paired(baseline_fn, ours_fn, pairs: int, allocators: bool = True) -> tuple:
    """Median seconds of each, and the median of the pairs' ratios (baseline / ours); with
    ``allocators``, the baseline runs on glibc's defaults and ours retains freed memory."""
    a, b = [], []
    for _ in range(pairs):
        if allocators:
            glibc_defaults()
        baseline_fn()
        a.append(_once(baseline_fn))
        if allocators:
            retain_freed_memory()
        ours_fn()
        b.append(_once(ours_fn))
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    return statistics.median(a), statistics.median(b), statistics.median(ratios)


def train_step(model: nn.Module, x: torch.Tensor):
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    target = torch.tensor([1.0, 0.0])

    def step():
        loss = focal_loss(model(x).squeeze(1), target)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="penet_50")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"{platform.processor() or platform.machine()}, {args.threads} threads, torch "
        f"{torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )
    baseline, ours = build(args.model)
    for norm in baseline.modules():  # blocks that are not the identity, so outputs can differ
        if isinstance(norm, nn.GroupNorm | nn.BatchNorm3d):
            nn.init.uniform_(norm.weight, 0.5, 1.5)
    ours.load_state_dict({**baseline.state_dict(), "stem.0.weight": ours.stem[0].weight})
    baseline.eval(), ours.eval()
    window = torch.randn(1, 1, 24, 192, 192)
    study = torch.randn(16, 1, 24, 192, 192)
    aim = {"window": ">= 2", "study": ">= 2", "train step": ">= 1.5"}
    against = "the original's way, same weights, same process"
    figures = {}
    with torch.inference_mode():
        a = baseline.forward_features(window.expand(-1, 3, -1, -1, -1))
        b = ours.forward_features(window.to(memory_format=CL))
        gap = ((a - b).abs().max() / a.abs().max()).item()
        print(f"embedding difference baseline - ours: {gap:.1e} of its largest value")
        figures["window"] = paired(
            lambda: baseline(window.expand(-1, 3, -1, -1, -1)),
            lambda: ours(window.to(memory_format=CL)),
            args.pairs,
        )
        figures["study"] = paired(
            lambda: [baseline(w[None].expand(-1, 3, -1, -1, -1)) for w in study],
            lambda: [ours(w[None].to(memory_format=CL)) for w in study],
            max(args.pairs // 2, 2),
        )

        # bf16 autocast of ours, one window: timed once where the CPU has no bf16 instructions
        # (there it is emulated, 30x slower), as a pair elsewhere.
        native = cpu_has_bf16()
        retain_freed_memory()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            start = time.perf_counter()
            low = ours(window.to(memory_format=CL)).float()
            bf16_s = time.perf_counter() - start
            if native:
                bf16_s = min(bf16_s, _once(lambda: ours(window.to(memory_format=CL))))
        fp32_s = _once(lambda: ours(window.to(memory_format=CL)))
        drift = (low - ours(window.to(memory_format=CL))).abs().max().item()
    baseline.train(), ours.train()
    batch = torch.randn(2, 1, 24, 192, 192)
    figures["train step"] = paired(
        train_step(baseline, batch.expand(-1, 3, -1, -1, -1)),
        train_step(ours, batch.to(memory_format=CL)),
        max(args.pairs - 1, 2),
    )
    for figure, (t_base, t_ours, ratio) in figures.items():
        print(f"{figure:10s} baseline {t_base:7.3f} s  ours {t_ours:7.3f} s  ratio {ratio:4.2f}x")
        result("penet_speed", f"{args.model} {figure}", t_ours, "s", ratio, against, aim[figure])
    print(
        f"bf16 autocast, one window: {bf16_s:.3f} s against fp32 {fp32_s:.3f} s "
        f"({fp32_s / bf16_s:.2f}x; largest logit change {drift:.3f}); this CPU "
        + ("has bf16 instructions" if native else "has no bf16 instructions (avx512_bf16, AMX)")
    )
    result("penet_speed", f"{args.model} bf16 window", bf16_s, "s", fp32_s / bf16_s, "ours fp32")


if __name__ == "__main__":
    main()
