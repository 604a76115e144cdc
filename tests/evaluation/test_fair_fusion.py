"""The fairness-aware fusion weight: chosen on validation alone, the smallest TPR gap among the
weights within delta of the best AUROC, checked against a brute force written here."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from radfusion.fusion import FAIR_DELTAS, fuse, fuse_files


def _cohort(n=800, seed=0):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n)
    gender = rng.choice(["Female", "Male"], n)
    male = gender == "Male"
    # model a ranks well but misses men's positives; model b is fair and a little weaker
    a = np.clip(0.45 * label + rng.uniform(0, 0.55, n) - 0.25 * (male & (label == 1)), 0, 1)
    b = np.clip(0.3 * label + rng.uniform(0, 0.7, n), 0, 1)
    studies = pd.DataFrame(
        {"label": label, "split": np.where(np.arange(n) < n // 2, "val", "test"), "gender": gender},
        index=pd.Index(np.arange(n), name="idx"),
    )
    return studies, pd.DataFrame({"a": a, "b": b}, index=studies.index)


def _brute_force(studies, probs, delta):
    val = studies["split"] == "val"
    y, g = studies.loc[val, "label"].to_numpy(), studies.loc[val, "gender"].to_numpy()
    rows = []
    for w in np.round(np.arange(0, 1.0001, 0.05), 10):
        s = probs.loc[val].to_numpy() @ [w, 1 - w]
        fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
        j = tpr - fpr
        t = thr[np.flatnonzero(j >= j[1:].max() - 1e-12)].max()
        rates = [
            ((s >= t) & (y == 1) & (g == x)).sum() / ((y == 1) & (g == x)).sum()
            for x in ("Female", "Male")
        ]
        rows.append((w, roc_auc_score(y, s), abs(rates[0] - rates[1])))
    best = max(r[1] for r in rows)
    ok = [r for r in rows if r[1] >= best - delta - 1e-12]
    return min(ok, key=lambda r: (r[2], -r[1]))[0]


@pytest.mark.parametrize("delta", [0.0, 0.02, 0.1])
def test_the_weight_is_the_brute_forces(delta):
    studies, probs = _cohort()
    fused = fuse(probs, "fair", studies, attribute="gender", delta=delta)
    w = fused.attrs["sweep"]["weight"]
    assert w == pytest.approx(_brute_force(studies, probs, delta))
    np.testing.assert_allclose(fused, probs.to_numpy() @ [w, 1 - w])


def test_a_looser_delta_never_widens_the_validation_gap():
    studies, probs = _cohort(seed=1)
    sweep = fuse(probs, "fair", studies).attrs["sweep"]
    gap = dict(zip(sweep["weights"], sweep["val_tpr_gap"], strict=True))
    chosen = [gap[sweep["choices"][str(d)]] for d in FAIR_DELTAS]
    assert chosen == sorted(chosen, reverse=True) and chosen[-1] < chosen[0]


def test_test_labels_never_move_it(tmp_path):
    studies, probs = _cohort(seed=2)
    for model in probs:
        frame = pd.DataFrame({"idx": probs.index, "prob": probs[model], "split": studies["split"]})
        frame.to_csv(tmp_path / f"{model}.csv", index=False)
    out = fuse_files(tmp_path, ["a", "b"], "fair", studies, attribute="gender", delta=0.02)
    first = out.read_bytes()
    sweep = json.loads(out.with_suffix(".sweep.json").read_text())
    assert sweep["attribute"] == "gender" and sweep["models"] == ["a", "b"]
    flipped = studies.copy()
    test = flipped["split"] == "test"
    flipped.loc[test, "label"] = 1 - flipped.loc[test, "label"]
    flipped.loc[test, "gender"] = "Male"
    fuse_files(tmp_path, ["a", "b"], "fair", flipped, attribute="gender", delta=0.02)
    assert out.read_bytes() == first
