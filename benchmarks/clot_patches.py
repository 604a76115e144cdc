"""Are the phantom's clots visible locally? A small CNN on patches with exact labels.

Usage: python benchmarks/clot_patches.py [--subtype segmental] [--studies 240] [--size 64]
       [--calibre 3] [--steps 600]

Renders each study twice from the same random state, with and without its emboli, and cuts
the same 8 x 16 x 16 patch from both, centred (give or take 2 pixels) on a voxel the clot
changed: the positive and its hardest negative, the same anatomy without the clot. A 3-layer
CNN trains on three quarters of the pairs and prints its AUROC on the rest. Where it is high,
the clots are there to be seen at this size, and what a study-level model lacks is where to
look, not resolution (docs/experiments/penet-on-the-phantom.md, item 7).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from radfusion.imaging.windows import normalize
from radfusion.synthetic.phantom import render_with_and_without_emboli, sample_phantom

PATCH = (8, 16, 16)


def _pairs(subtype: str, studies: int, size: int, calibre: float):
    x, y = [], []
    for i in range(studies):
        rng = np.random.default_rng(50_000 + i)
        params = sample_phantom(subtype, rng, calibre)
        with_clot, without = render_with_and_without_emboli((56, size, size), params, rng)
        changed = np.argwhere(with_clot != without)
        if not len(changed):
            continue  # a clot between voxel centres: nothing to cut
        pad = [(p, p) for p in PATCH]
        a = np.pad(with_clot, pad, constant_values=-1000)
        b = np.pad(without, pad, constant_values=-1000)
        corner = changed[len(changed) // 2] + np.array(PATCH) // 2
        corner[1:] += rng.integers(-2, 3, 2)
        box = tuple(slice(int(c), int(c) + p) for c, p in zip(corner, PATCH, strict=True))
        x += [normalize(a[box]), normalize(b[box])]
        y += [1.0, 0.0]
    return torch.tensor(np.stack(x))[:, None], torch.tensor(y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subtype", default="segmental")
    parser.add_argument("--studies", type=int, default=240)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--calibre", type=float, default=3.0, help="the demo's is 3")
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args()
    torch.manual_seed(0)
    x, y = _pairs(args.subtype, args.studies, args.size, args.calibre)
    cut = len(x) * 3 // 4 // 2 * 2  # whole pairs on each side
    net = nn.Sequential(
        nn.Conv3d(1, 16, 3, padding=1),
        nn.BatchNorm3d(16),
        nn.ReLU(),
        nn.Conv3d(16, 32, 3, padding=1),
        nn.BatchNorm3d(32),
        nn.ReLU(),
        nn.MaxPool3d(2),
        nn.Conv3d(32, 32, 3, padding=1),
        nn.BatchNorm3d(32),
        nn.ReLU(),
        nn.AdaptiveMaxPool3d(1),
        nn.Flatten(),
        nn.Linear(32, 1),
    )
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    for step in range(args.steps):
        batch = torch.randint(0, cut, (32,))
        xb = torch.flip(x[batch], (4,)) if step % 2 else x[batch]
        loss = nn.functional.binary_cross_entropy_with_logits(net(xb).squeeze(1), y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        scores = net(x[cut:]).squeeze(1).numpy()
    print(
        f"{args.subtype} clots at {args.size} px, calibre {args.calibre:g}: {cut // 2} training "
        f"pairs, {(len(x) - cut) // 2} held out; final training loss {loss.item():.3f}; "
        f"held-out patch AUROC {roc_auc_score(y[cut:].numpy(), scores):.3f}"
    )


if __name__ == "__main__":
    main()
