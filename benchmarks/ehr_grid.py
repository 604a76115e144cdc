"""The EHR model's grid search: warm-started regularisation paths against 60 cold fits.

Usage: python benchmarks/ehr_grid.py [--studies 720] [--pairs 3] [--jobs 2]

Builds the paper's EHR features for a synthetic cohort of ``--studies`` (the demo's size by
default; no volumes are written), then tunes the paper's elastic net over its whole grid two
ways, alternately in one process: ``tune(warm_start=False)``, every grid point fitted from
zero, and ``tune(warm_start=True)``, one path per (l1_ratio, class_weight) from the strongest
penalty to the weakest, each fit starting from the previous solution. It prints the median
time of each, the median of the pairs' ratios, and for both the chosen point with its
validation and test AUROC: the warm path must choose a model as good as the full grid's.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from _results import result  # benchmarks/ is on sys.path when a script runs
from radfusion.data.layout import EHR_TABLES
from radfusion.ehr.features import build_features
from radfusion.ehr.model import tune
from radfusion.ehr.vocabulary import default_vocabulary
from radfusion.synthetic.design import design_cohort
from radfusion.synthetic.events import generate_events


def cohort_features(studies: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    design = design_cohort(studies, rng)
    vocab = default_vocabulary()
    ehr = generate_events(design, vocab, rng)
    train = design.loc[design["split"] == "train", "idx"]
    tables = build_features(ehr.events, ehr.studies, vocabulary=vocab, train_idx=train)
    x = pd.concat([tables[name] for name in EHR_TABLES], axis=1)
    design = design.set_index("idx").loc[x.index]
    return x, design["label"].to_numpy(), design["split"].to_numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=720)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    x, y, split = cohort_features(args.studies)
    tr, va, te = (split == s for s in ("train", "val", "test"))
    print(
        f"{len(x)} studies ({tr.sum()} train, {va.sum()} val, {te.sum()} test), "
        f"{x.shape[1]} features; the paper's grid, {args.jobs} jobs"
    )

    def run(warm: bool):
        start = time.perf_counter()
        out = tune("elasticnet", x[tr], y[tr], x[va], y[va], n_jobs=args.jobs, warm_start=warm)
        return time.perf_counter() - start, out

    times: dict[bool, list[float]] = {False: [], True: []}
    chosen = {}
    for _ in range(args.pairs):
        for warm in (False, True):
            seconds, chosen[warm] = run(warm)
            times[warm].append(seconds)
    ratios = [c / w for c, w in zip(times[False], times[True], strict=True)]
    for warm, label in ((False, "60 cold fits"), (True, "warm paths  ")):
        out = chosen[warm]
        test = roc_auc_score(y[te], out.model.predict_proba(x[te])[:, 1])
        scores = out.scores["score"].to_numpy()
        print(
            f"{label}: {statistics.median(times[warm]):6.1f} s  chose {out.params}  "
            f"val {out.score:.4f}  test {test:.4f}  "
            f"({int((~out.scores['converged']).sum())} fits not converged)"
        )
        chosen[warm] = (test, scores)
    gap = np.abs(chosen[True][1] - chosen[False][1])
    print(
        f"grid points' val AUROC, warm vs cold: max |difference| {gap.max():.4f}, "
        f"mean {gap.mean():.4f}"
    )
    ratio = statistics.median(ratios)
    print(f"speed-up (median of {args.pairs} pairs): {ratio:.2f}x")
    result(
        "ehr_grid",
        "elastic-net grid",
        statistics.median(times[True]),
        "s",
        ratio,
        "60 cold fits",
        "faster",
    )


if __name__ == "__main__":
    main()
