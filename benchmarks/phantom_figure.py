"""Draw the figure in docs/phantom-positive.png: one positive synthetic study at full size.

Usage: python benchmarks/phantom_figure.py [--out docs/phantom-positive.png] [--seed 4]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from radfusion.synthetic.phantom import render_phantom, sample_phantom

WINDOW = (-100, 900)  # the paper's CTPA window: centre 400, width 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/phantom-positive.png"))
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    params = sample_phantom("central", rng)
    vol, slices = render_phantom((386, 512, 512), params, rng)
    clot = params.emboli[0]
    centre = (clot.start + clot.end) / 2
    k = int(centre[2] / (400 / 386))  # the slice through the clot's centre
    col = int((centre[0] + 180) / 360 * 512)
    row = int((centre[1] + 180) / 360 * 512)

    fig, axes = plt.subplots(1, 4, figsize=(16, 4.6))
    axes[0].imshow(vol[k], cmap="gray", vmin=-1000, vmax=400)
    axes[0].set_title(f"axial slice {k} (lung window)")
    axes[1].imshow(vol[k], cmap="gray", vmin=WINDOW[0], vmax=WINDOW[1])
    axes[1].set_title("same slice, CTPA window (400/1000)")
    r0, c0 = max(row - 40, 0), max(col - 40, 0)
    axes[2].imshow(vol[k, r0 : r0 + 80, c0 : c0 + 80], cmap="gray", vmin=WINDOW[0], vmax=WINDOW[1])
    axes[2].set_title(f"zoom: {clot.tube.level} embolus (dark) in contrast")
    axes[3].imshow(vol[:, row, :], cmap="gray", vmin=-1000, vmax=400, aspect=400 / 386 * 512 / 360)
    axes[3].axhline(k, color="tab:red", lw=0.8)
    axes[3].set_title("coronal reformat through the embolus")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        f"Synthetic CTPA phantom, central PE (seed {args.seed}); emboli on slices "
        f"{slices.min()}-{slices.max()}"
    )
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=72)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
