"""Does a trained image model see the phantom's emboli? Paired studies, with and without.

Usage: python benchmarks/clot_sensitivity.py RUN_DIR [--pairs 50] [--size 64] [--slices 56]
       [--calibre 3] [--seed 10000] [--model image|slicenet]

Renders each new study twice from the same random state, with and without its emboli (as
``phantom_visibility.py`` does): the same anatomy, contrast, noise and mimics, so whatever
else a model reads from a study is identical within a pair. Both go through the run's own
preprocessing and study-level inference (``radfusion.pipeline.predict``) of one imaging model:
PENet (``image``) or SliceNet (``slicenet``, when the run trained it). Per subtype it prints
how often the study with the clot scores higher, the same (the most suspicious window holds
no clot either way) or lower, and the mean difference in image probability: a model blind to
the clots scores higher and lower equally often. A study-level AUROC mixes
this with how the model ranks different patients; this isolates the clot.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from radfusion.data.layout import PE_TYPES
from radfusion.pipeline.predict import score_volumes
from radfusion.synthetic.phantom import render_with_and_without_emboli, sample_phantom


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished benchmark or demo run folder")
    parser.add_argument("--pairs", type=int, default=50, help="pairs per subtype")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--slices", type=int, default=56)
    parser.add_argument("--calibre", type=float, default=3.0, help="the demo's is 3")
    parser.add_argument("--seed", type=int, default=10_000, help="first study's seed")
    parser.add_argument("--model", choices=["image", "slicenet"], default="image")
    args = parser.parse_args()
    shape = (args.slices, args.size, args.size)
    print(
        f"{args.run}: {args.pairs} pairs per subtype, {args.slices} x {args.size} x {args.size}, "
        f"calibre {args.calibre:g}, model {args.model}"
    )
    with tempfile.TemporaryDirectory(prefix="radfusion-pairs-") as tmp:
        path = Path(tmp) / "study.npy"

        def score(volume: np.ndarray) -> float:
            np.save(path, volume)
            scores = score_volumes(args.run, {0: path}, hu_intercept=0, models=(args.model,))
            return float(scores[args.model]["prob"].iloc[0])

        for k, pe_type in enumerate(PE_TYPES):
            diffs = []
            for i in range(args.pairs):
                rng = np.random.default_rng(args.seed + k * args.pairs + i)
                params = sample_phantom(pe_type, rng, args.calibre)
                with_clots, without = render_with_and_without_emboli(shape, params, rng)
                diffs.append(score(with_clots) - score(without))
            d = np.array(diffs)
            print(
                f"{pe_type:13s} the study with the clot scored higher in {np.mean(d > 0):4.0%} "
                f"of pairs, the same in {np.mean(d == 0):4.0%}, lower in {np.mean(d < 0):4.0%}; "
                f"mean difference {d.mean():+.3f}"
            )


if __name__ == "__main__":
    main()
