"""Group-specific thresholds: fairlearn's ``ThresholdOptimizer`` fitted on the validation split,
applied to the test split, with what it costs.

For each model and each of the paper's attributes, the optimizer picks one (possibly randomised)
threshold per group under an equal-opportunity (``true_positive_rate_parity``) or an
equalized-odds constraint, maximising balanced accuracy on validation. The test decisions it
makes are then scored beside the paper's single Youden threshold: sensitivity, specificity,
accuracy, and the TPR and FPR gaps between the two groups, each with a bootstrap CI on the same
resamples. Test labels are never seen by the fit. A study whose group is unknown keeps the
single threshold. Group thresholds need the group at prediction time.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

from radfusion.evaluation.bootstrap import interval
from radfusion.evaluation.metrics import FROM_COUNTS, confusion

__all__ = ["COLUMNS", "CONSTRAINTS", "mitigate"]

#: Our names for fairlearn's constraints.
CONSTRAINTS = {"equal_opportunity": "true_positive_rate_parity", "equalized_odds": "equalized_odds"}
COLUMNS = ["model", "attribute", "method", "metric", "value", "ci_low", "ci_high", "note"]
REPORTED = ("sensitivity", "specificity", "accuracy", "tpr_gap", "fpr_gap")


class _Scores(ClassifierMixin, BaseEstimator):
    """A fitted 'classifier' whose probability is the model's score itself (column 0)."""

    def fit(self, x, y):
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, x):
        p = np.asarray(x, dtype=float)[:, 0]
        return np.column_stack([1 - p, p])

    def predict(self, x):
        return (self.predict_proba(x)[:, 1] >= 0.5).astype(int)


def _scores(y, pred, groups, pair, weights) -> dict[str, np.ndarray | float]:
    """The reported metrics of decisions ``pred``: point values (``weights`` None) or one per
    bootstrap row."""
    out = {name: FROM_COUNTS[name](*confusion(y, pred, weights)) for name in REPORTED[:3]}
    rates = {}
    for group in pair:
        members = groups == group
        w = None if weights is None else weights[:, members]
        cells = confusion(y[members], pred[members], w)
        rates[group] = (FROM_COUNTS["sensitivity"](*cells), FROM_COUNTS["fpr"](*cells))
    a, b = pair
    out["tpr_gap"] = np.abs(np.asarray(rates[a][0]) - np.asarray(rates[b][0]))
    out["fpr_gap"] = np.abs(np.asarray(rates[a][1]) - np.asarray(rates[b][1]))
    return out


def mitigate(
    model: str,
    val: pd.DataFrame,
    test: pd.DataFrame,
    prob: pd.Series,
    threshold: float,
    counts: np.ndarray,
    attributes: dict[str, tuple[str, tuple[str, str]]],
    *,
    seed: int = 0,
    level: float = 0.95,
) -> list[tuple]:
    """Rows of ``mitigation.csv`` for one model: per attribute, the single threshold and each
    constraint's group thresholds. ``counts`` are the test set's bootstrap draw counts."""
    from fairlearn.postprocessing import ThresholdOptimizer

    y_test = test["label"].to_numpy().astype(bool)
    s_test = prob.reindex(test.index).to_numpy(float)
    rows = []
    for attribute, (column, pair) in attributes.items():
        groups = test[column].to_numpy()
        decisions = {"single threshold": s_test >= threshold}
        notes = {"single threshold": ""}
        fit_rows = val[val[column].isin(pair)]
        for name, constraint in CONSTRAINTS.items():
            method = f"group thresholds ({name})"
            optimizer = ThresholdOptimizer(
                estimator=_Scores().fit(None, None),
                constraints=constraint,
                objective="balanced_accuracy_score",
                prefit=True,
                predict_method="predict_proba",
            )
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    optimizer.fit(
                        prob.loc[fit_rows.index].to_numpy(float)[:, None],
                        fit_rows["label"].to_numpy(),
                        sensitive_features=fit_rows[column].to_numpy(),
                    )
            except (ValueError, ZeroDivisionError) as exc:  # a group without both classes
                decisions[method] = None
                notes[method] = f"not fitted on validation: {str(exc).splitlines()[0][:120]}"
                continue
            known = np.isin(groups, pair)
            pred = decisions["single threshold"].copy()  # unknown groups: the single threshold
            if known.any():
                pred[known] = optimizer.predict(
                    s_test[known][:, None], sensitive_features=groups[known], random_state=seed
                ).astype(bool)
            decisions[method] = pred
            notes[method] = "" if known.all() else f"{int((~known).sum())} unknown: single"
        for method, pred in decisions.items():
            if pred is None:
                for metric in REPORTED:
                    rows.append(
                        (model, attribute, method, metric, np.nan, np.nan, np.nan, notes[method])
                    )
                continue
            point = _scores(y_test, pred, groups, pair, None)
            reps = _scores(y_test, pred, groups, pair, counts)
            for metric in REPORTED:
                value = float(point[metric])
                low, high = interval(np.asarray(reps[metric], float), level)
                rows.append((model, attribute, method, metric, value, low, high, notes[method]))
    return rows
