"""Can a PENet variant learn to find a finding a few voxels wide? Steps to find it, by design.

Usage: python benchmarks/small_findings.py [--model penet_tiny] [--size 3] [--steps 200]
       [--seeds 0,1,2]

The task: 24 x 60 x 60 windows of faint noise; half of them hold one bright cube of
``--size`` voxels a side (+0.16 after normalisation, about 300 HU) somewhere. The model trains
with AdamW (lr 1e-3) and BCE on balanced batches of 8, then scores 256 fresh windows; the
AUROC says whether it found the cube. Designs of the same model are compared:

* the original: strided 1x1 shortcuts and a head biased to the focal-loss prior 0.01;
* ``shortcut="maxpool"``: the downsampling shortcuts max-pool first, so the cube's response
  survives every stage (a strided 1x1 convolution keeps one position in eight);
* ``prior=0.5``: the head starts at the balanced batches' positive rate;
* both;
* ``norm="batch"``: BatchNorm in place of the original's GroupNorm (which normalises each
  window by its own statistics), alone and with the two changes above;

and, for reference, a plain 3-layer CNN (3x3x3 convolutions, BatchNorm, ReLU, 2x max-pools).

A 3-voxel cube is a segmental clot at 64 pixels, or a subsegmental one at the paper's 192.
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from _results import result
from radfusion.imaging.registry import create_model


class PlainCNN(nn.Module):
    """The reference: three conv-BatchNorm-ReLU-maxpool layers, global average pooling."""

    def __init__(self):
        super().__init__()
        layers, widths = [], [1, 16, 32, 64]
        for cin, cout in itertools.pairwise(widths):
            layers += [nn.Conv3d(cin, cout, 3, padding=1), nn.BatchNorm3d(cout), nn.ReLU()]
            layers.append(nn.MaxPool3d(2))
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(widths[-1], 1)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3, 4)))


PLAIN = "plain 3-layer CNN (reference)"
DESIGNS = {
    "original": {},
    "maxpool shortcut": {"shortcut": "maxpool"},
    "prior 0.5": {"prior": 0.5},
    "maxpool shortcut + prior 0.5": {"shortcut": "maxpool", "prior": 0.5},
    "batchnorm": {"norm": "batch"},
    "batchnorm + maxpool shortcut + prior 0.5": {
        "norm": "batch",
        "shortcut": "maxpool",
        "prior": 0.5,
    },
    PLAIN: None,
}


def batch(rng: np.random.Generator, n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = rng.normal(0, 0.05, (n, 1, 24, 60, 60)).astype(np.float32)
    y = rng.random(n) < 0.5
    for i in np.flatnonzero(y):
        z, r, c = (int(rng.integers(0, dim - size + 1)) for dim in (24, 60, 60))
        x[i, 0, z : z + size, r : r + size, c : c + size] += 0.16
    return torch.from_numpy(x), torch.from_numpy(y.astype(np.float32))[:, None]


def train_and_score(model_name: str, args: dict | None, size: int, steps: int, seed: int) -> float:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = PlainCNN() if args is None else create_model(model_name, **args)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    for _ in range(steps):
        x, y = batch(rng, 8, size)
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x, y = batch(np.random.default_rng(10_000 + seed), 256, size)
    with torch.inference_mode():
        scores = torch.cat([model(x[i : i + 32]) for i in range(0, 256, 32)])
    return float(roc_auc_score(y[:, 0].numpy(), scores[:, 0].numpy()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="penet_tiny")
    parser.add_argument("--size", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(
        f"{args.model} and a plain CNN: find a {args.size}-voxel cube in 24 x 60 x 60 noise after "
        f"{args.steps} steps of 8 (test AUROC, seeds {seeds})"
    )
    aurocs = {}
    for design, overrides in DESIGNS.items():
        t = time.perf_counter()
        scores = [train_and_score(args.model, overrides, args.size, args.steps, s) for s in seeds]
        aurocs[design] = float(np.mean(scores))
        print(
            f"  {design:30s} AUROC {aurocs[design]:.3f} "
            f"({', '.join(f'{s:.2f}' for s in scores)}) in {time.perf_counter() - t:.0f} s"
        )
    for design, auroc in aurocs.items():
        if design != "original":
            name = design if design == PLAIN else f"{args.model} {design}"
            result(
                "small_findings",
                f"{name}: AUROC on a {args.size}-voxel finding, {args.steps} steps",
                auroc,
                "AUROC",
                auroc / aurocs["original"],
                "the original design",
            )


if __name__ == "__main__":
    main()
