"""Seconds for the whole evaluation, against fairlearn's bootstrapped MetricFrame.

Usage: python benchmarks/evaluation.py [--bootstrap 2000]

Three models on a 190-study test set (the paper's sizes: N = 1837, Tables 1-2), two subsets,
seven groups, six metrics (+ Brier, ECE), EODs, DeLong: ``radfusion.evaluation.evaluate``.
Baseline, in the same process: fairlearn's ``MetricFrame(..., n_boot=2000)`` computing the
same six grouped metrics with CIs, per model, subset and attribute.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame

from _results import result  # benchmarks/ is on sys.path when a script runs
from radfusion.evaluation.evaluate import ATTRIBUTES, evaluate
from radfusion.evaluation.metrics import THRESHOLD_METRICS, auroc, youden_threshold
from radfusion.synthetic.design import design_cohort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", type=int, default=2000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    design = design_cohort(1837, rng).set_index("idx")
    studies = design.assign(
        age_group=np.where(design["age"] > 80, ">80", "<=80"),
        non_subsegmental=design["pe_type"] != "subsegmental",
    )
    y = studies["label"].to_numpy()
    predictions = {
        name: pd.Series(
            np.clip(0.5 + s * (y - 0.5) + rng.normal(0, 0.2, len(y)), 0, 1), index=studies.index
        )
        for name, s in (("image", 0.25), ("ehr", 0.4), ("fusion_mean", 0.5))
    }

    start = time.perf_counter()
    evaluate(studies, predictions, n_boot=args.bootstrap, seed=0)
    ours = time.perf_counter() - start

    # The baseline is slow (minutes): time one model x subset x attribute frame and scale by
    # the 3 x 2 x 4 such frames the full evaluation needs.
    start = time.perf_counter()
    test = studies[studies["split"] == "test"]
    metrics = {**THRESHOLD_METRICS, "auroc": auroc}
    prob = predictions["ehr"]
    val = (studies["split"] == "val").to_numpy()
    threshold, _, _ = youden_threshold(y[val], prob[val])
    score = prob[test.index].to_numpy()
    for name, fn in metrics.items():  # AUROC needs scores, the rest decisions
        pred = score if name == "auroc" else score >= threshold
        MetricFrame(
            metrics={name: fn},
            y_true=test["label"].to_numpy(),
            y_pred=pred,
            sensitive_features=test["gender"],
            n_boot=args.bootstrap,
            ci_quantiles=[0.025, 0.975],
            random_state=0,
        )
    frames = len(predictions) * 2 * len(ATTRIBUTES)
    base = (time.perf_counter() - start) * frames
    print(
        f"3 models x 2 subsets x 7 groups x 6 metrics, {args.bootstrap} resamples, 190 test studies"
    )
    print(f"radfusion evaluate (+ EODs, calibration, DeLong): {ours:7.2f} s")
    print(
        f"fairlearn MetricFrame(n_boot={args.bootstrap}) : {base:7.2f} s (baseline; timed on 1 "
        f"of {frames} model x subset x attribute frames, scaled)"
    )
    print(f"speed-up: {base / ours:.1f} x")
    result(
        "evaluation",
        "whole evaluation",
        ours,
        "s",
        base / ours,
        f"fairlearn MetricFrame n_boot={args.bootstrap}",
        "faster",
    )


if __name__ == "__main__":
    main()
