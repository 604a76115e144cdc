"""Evaluate any set of models exactly as the paper does, with confidence intervals.

Per model: the operating point is Youden's J on the **validation** split, applied unchanged
to the test set and every subgroup. On two test subsets (``all``, ``non_subsegmental``) and
seven groups (overall, Female/Male, White/Others, >80/<=80): the six metrics plus Brier score
and ECE, with stratified-bootstrap 95% intervals; per attribute the paper's EOD
(|TPR(a) - TPR(b)|) and beyond it the signed TPR difference, the equalized-odds difference
and the AUROC gap; DeLong's test between every pair of models. Beyond the paper, detection by
PE subtype: each subtype's test positives against every test negative (AUROC, and the
sensitivity at the operating point), with intervals from the same resamples.

Point values of grouped metrics come from fairlearn's ``MetricFrame`` and its named
fairness metrics; the intervals come from one vectorised bootstrap (``bootstrap.py``) shared
by all models on a subset, so models are compared on the same resamples.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from fairlearn.metrics import (
    MetricFrame,
    equal_opportunity_difference,
    equalized_odds_difference,
)

from radfusion.data.layout import EXTRA_GROUP_ATTRIBUTES, GROUP_ATTRIBUTES
from radfusion.errors import RadfusionError
from radfusion.evaluation.bootstrap import Resamples, interval, stratified_counts
from radfusion.evaluation.delong import delong_test
from radfusion.evaluation.intersections import COLUMNS as INTERSECTION_COLUMNS
from radfusion.evaluation.intersections import intersections
from radfusion.evaluation.metrics import (
    METRICS,
    THRESHOLD_METRICS,
    auprc,
    auroc,
    brier,
    ece,
    why_undefined,
    youden_threshold,
)
from radfusion.evaluation.mitigation import COLUMNS as MITIGATION_COLUMNS
from radfusion.evaluation.mitigation import mitigate

__all__ = [
    "ATTRIBUTES",
    "PE_SUBTYPES",
    "SUBSETS",
    "Evaluation",
    "cohort_attributes",
    "evaluate",
    "outcome_columns",
]

SUBSETS = ("all", "non_subsegmental")
#: attribute -> (studies column, groups in the paper's order)
ATTRIBUTES = {"overall": (None, ("all",)), **GROUP_ATTRIBUTES}
#: The columns of ``outcomes.csv``: what the report needs, without the data folder.
OUTCOME_COLUMNS = ["label", "pe_type", "split", "non_subsegmental", "gender", "race", "age_group"]


def cohort_attributes(studies: pd.DataFrame) -> dict:
    """The paper's attributes, and each extra one whose column the studies carry with some
    study in one of its groups (ethnicity, on an INSPECT cohort)."""
    extra = {
        name: spec
        for name, spec in EXTRA_GROUP_ATTRIBUTES.items()
        if spec[0] in studies.columns and studies[spec[0]].isin(spec[1]).any()
    }
    return {**ATTRIBUTES, **extra}


def outcome_columns(studies: pd.DataFrame) -> list[str]:
    extra = [spec[0] for spec in EXTRA_GROUP_ATTRIBUTES.values() if spec[0] in studies.columns]
    return OUTCOME_COLUMNS + extra


SCORE_METRICS = {"auroc": auroc, "auprc": auprc, "brier": brier, "ece": ece}
REPORTED = (*METRICS, "auprc", "brier", "ece")
FAIRNESS = ("eod", "tpr_diff_signed", "equalized_odds_diff", "auroc_gap")
PE_SUBTYPES = ("central", "segmental", "subsegmental")
SUBTYPE_COLUMNS = [
    "model",
    "pe_type",
    "n_positive",
    "n_negative",
    "auroc",
    "auroc_ci_low",
    "auroc_ci_high",
    "sensitivity",
    "sensitivity_ci_low",
    "sensitivity_ci_high",
]


@dataclass
class Evaluation:
    metrics: pd.DataFrame
    thresholds: pd.DataFrame
    fairness: pd.DataFrame
    comparisons: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    #: detection by PE subtype on the whole test set (empty without a ``pe_type`` column)
    subtypes: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SUBTYPE_COLUMNS))
    #: gender x race x age cells: size, TPR and FPR with CIs, and the gap between cells
    intersections: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=INTERSECTION_COLUMNS)
    )
    #: group thresholds fitted on validation, scored on test beside the single threshold
    mitigation: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=MITIGATION_COLUMNS)
    )


def _group_frames(y, score, pred, groups):
    """fairlearn MetricFrames: threshold metrics on decisions, score metrics on scores."""
    by_decision = MetricFrame(
        metrics=THRESHOLD_METRICS, y_true=y, y_pred=pred, sensitive_features=groups
    )
    by_score = MetricFrame(metrics=SCORE_METRICS, y_true=y, y_pred=score, sensitive_features=groups)
    return by_decision, by_score


def evaluate(
    studies: pd.DataFrame,
    predictions: dict[str, pd.Series],
    *,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    min_cell_size: int = 10,
    thresholds: dict[str, float] | None = None,
) -> Evaluation:
    """Evaluate ``predictions`` (model name -> probabilities indexed by idx) on ``studies``
    (indexed by idx: ``label``, ``split``, ``non_subsegmental``, ``gender``, ``race``,
    ``age_group``).

    ``thresholds`` fixes each named model's operating point instead of choosing it on the
    validation split: an external validation applies the thresholds the models' own run
    chose (the group-threshold mitigation, which learns on validation, is then left out)."""
    if not predictions:
        raise RadfusionError("nothing to evaluate: no models")
    attributes = cohort_attributes(studies)
    rng = np.random.default_rng(seed)
    test = studies[studies["split"] == "test"]
    subsets = {"all": test, "non_subsegmental": test[test["non_subsegmental"]]}
    # One resample matrix per subset, shared by every model (a paired bootstrap).
    counts = {
        name: stratified_counts(part["label"].to_numpy(), n_boot, rng)
        for name, part in subsets.items()
    }

    metric_rows, threshold_rows, fairness_rows, subtype_rows, notes = [], [], [], [], []
    cell_rows: list[tuple] = []
    mitigation_rows: list[tuple] = []
    for model, prob in predictions.items():
        if thresholds is not None:
            if model not in thresholds:
                raise RadfusionError(f"{model}: no fixed operating point given for it")
            threshold_rows.append((model, float(thresholds[model]), np.nan, np.nan))
            threshold = float(thresholds[model])
        else:
            val = studies[studies["split"] == "val"].index.intersection(prob.index)
            y_val = studies.loc[val, "label"].to_numpy()
            if len(np.unique(y_val)) < 2:
                raise RadfusionError(
                    f"{model}: the validation split needs positive and negative studies with "
                    "predictions to choose the operating point"
                )
            threshold, val_sens, val_spec = youden_threshold(y_val, prob.loc[val].to_numpy())
            threshold_rows.append((model, threshold, val_sens, val_spec))
        mitigation_rows.extend(
            []
            if thresholds is not None
            else mitigate(
                model,
                studies.loc[val],
                test,
                prob,
                threshold,
                counts["all"],
                {k: v for k, v in attributes.items() if k != "overall"},
                seed=seed,
                level=level,
            )
        )
        for subset, part in subsets.items():
            covered = part.index.isin(prob.index)
            y = part["label"].to_numpy()
            score = prob.reindex(part.index).to_numpy()
            res = Resamples(counts[subset], y, np.nan_to_num(score), threshold)
            if subset == "all" and "pe_type" in part.columns:
                subtype_rows.extend(_by_subtype(model, part, covered, res, level))
            if subset == "all":
                cell_rows.extend(
                    intersections(
                        model, part, res, covered, min_cell_size=min_cell_size, level=level
                    )
                )
            for attribute, (column, groups) in attributes.items():
                labels = (pd.Series("all", index=part.index) if column is None else part[column])[
                    covered
                ]
                yc, sc = y[covered], score[covered]
                pc = sc >= threshold
                by_decision, by_score = _group_frames(yc, sc, pc, labels.to_numpy())
                replicates = {}
                for group in groups:
                    members = covered & (labels.reindex(part.index).to_numpy() == group)
                    in_frame = group in by_decision.by_group.index
                    reps = res.metrics(members)
                    replicates[group] = reps
                    for metric in REPORTED:
                        frame = by_score if metric in SCORE_METRICS else by_decision
                        value = float(frame.by_group.loc[group, metric]) if in_frame else np.nan
                        low, high = interval(reps[metric], level)
                        note = ""
                        if not np.isfinite(value):
                            gm = labels.to_numpy() == group
                            note = (
                                why_undefined(metric, yc[gm], pc[gm]) if in_frame else "no studies"
                            )
                            low = high = np.nan
                        metric_rows.append(
                            (
                                model,
                                subset,
                                attribute,
                                group,
                                metric,
                                value,
                                low,
                                high,
                                int(members.sum()),
                                note,
                            )
                        )
                if attribute != "overall":
                    fairness_rows.extend(
                        _fairness(
                            model,
                            subset,
                            attribute,
                            groups,
                            yc,
                            pc,
                            sc,
                            labels,
                            by_decision,
                            by_score,
                            replicates,
                            level,
                        )
                    )
    comparisons = _comparisons(subsets, predictions)
    for attribute, (column, groups) in attributes.items():
        unknown = ~test[column].isin(groups) if column is not None else None
        if unknown is not None and unknown.any():
            positives = int(test.loc[unknown, "label"].sum())
            notes.append(
                f"{attribute}: {int(unknown.sum())} test studies ({positives} positive) belong "
                f"to neither {groups[0]} nor {groups[1]}; they are left out of the {attribute} "
                "gaps (fairness.csv n_excluded)"
            )
    return Evaluation(
        metrics=pd.DataFrame(
            metric_rows,
            columns=[
                "model",
                "subset",
                "attribute",
                "group",
                "metric",
                "value",
                "ci_low",
                "ci_high",
                "n",
                "note",
            ],
        ),
        thresholds=pd.DataFrame(
            threshold_rows, columns=["model", "threshold", "val_sensitivity", "val_specificity"]
        ),
        fairness=pd.DataFrame(
            fairness_rows,
            columns=[
                "model",
                "subset",
                "attribute",
                "metric",
                "value",
                "ci_low",
                "ci_high",
                "n_excluded",
                "note",
            ],
        ),
        comparisons=comparisons,
        notes=notes,
        subtypes=pd.DataFrame(subtype_rows, columns=SUBTYPE_COLUMNS),
        intersections=pd.DataFrame(cell_rows, columns=INTERSECTION_COLUMNS),
        mitigation=pd.DataFrame(mitigation_rows, columns=MITIGATION_COLUMNS),
    )


def _by_subtype(model, part, covered, res: Resamples, level):
    """Per subtype: its positives with predictions against every negative with one."""
    label = part["label"].to_numpy()
    negatives = covered & (label == 0)
    n_neg = int(negatives.sum())
    rows = []
    for subtype in PE_SUBTYPES:
        positives = covered & (label == 1) & part["pe_type"].eq(subtype).to_numpy()
        n_pos = int(positives.sum())
        auc = sens = np.nan
        auc_ci = sens_ci = (np.nan, np.nan)
        if n_pos:
            members = positives | negatives
            reps = res.metrics(members)
            sens, sens_ci = float(res.pred[positives].mean()), interval(reps["sensitivity"], level)
            if n_neg:
                auc = auroc(res.y[members], res.score[members])
                auc_ci = interval(reps["auroc"], level)
        rows.append((model, subtype, n_pos, n_neg, auc, *auc_ci, sens, *sens_ci))
    return rows


def _fairness(
    model,
    subset,
    attribute,
    groups,
    y,
    pred,
    score,
    labels,
    by_decision,
    by_score,
    replicates,
    level,
):
    a, b = groups
    # The gap compares exactly the attribute's two groups: a study whose value is unknown
    # (neither Female nor Male, no age) is counted and left out, for the point value and its
    # interval alike (the replicates are those of the two groups only).
    sf = labels.to_numpy()
    known = np.isin(sf, groups)
    excluded = int((~known).sum())
    y, pred, sf = y[known], pred[known], sf[known]
    tpr = by_decision.by_group["sensitivity"]
    have = a in tpr.index and b in tpr.index
    tpr_a = float(tpr.get(a, np.nan)) if have else np.nan
    tpr_b = float(tpr.get(b, np.nan)) if have else np.nan
    defined = have and np.isfinite(tpr_a) and np.isfinite(tpr_b)
    values = {
        # fairlearn's named metrics: max - min over the two groups.
        "eod": equal_opportunity_difference(y, pred, sensitive_features=sf) if defined else np.nan,
        "tpr_diff_signed": tpr_a - tpr_b,
        "equalized_odds_diff": equalized_odds_difference(y, pred, sensitive_features=sf)
        if defined and len(np.unique(y[sf == a])) == 2 and len(np.unique(y[sf == b])) == 2
        else np.nan,
        "auroc_gap": abs(
            float(by_score.by_group["auroc"].get(a, np.nan))
            - float(by_score.by_group["auroc"].get(b, np.nan))
        )
        if have
        else np.nan,
    }
    ra, rb = replicates[a], replicates[b]
    reps = {
        "eod": np.abs(ra["sensitivity"] - rb["sensitivity"]),
        "tpr_diff_signed": ra["sensitivity"] - rb["sensitivity"],
        "equalized_odds_diff": np.fmax(
            np.abs(ra["sensitivity"] - rb["sensitivity"]), np.abs(ra["fpr"] - rb["fpr"])
        ),
        "auroc_gap": np.abs(ra["auroc"] - rb["auroc"]),
    }
    rows = []
    for metric in FAIRNESS:
        value = float(values[metric])
        low, high = interval(reps[metric], level)
        note = (
            ""
            if np.isfinite(value)
            else f"undefined: a group of {attribute} lacks "
            + ("positives" if metric in ("eod", "tpr_diff_signed") else "positives or negatives")
        )
        if not np.isfinite(value):
            low = high = np.nan
        if excluded:
            unknown = f"{excluded} studies with an unknown {attribute} left out"
            note = f"{note}; {unknown}" if note else unknown
        rows.append((model, subset, attribute, metric, value, low, high, excluded, note))
    return rows


def _comparisons(subsets, predictions) -> pd.DataFrame:
    rows = []
    for subset, part in subsets.items():
        for a, b in itertools.combinations(predictions, 2):
            common = part.index.intersection(predictions[a].index).intersection(
                predictions[b].index
            )
            y = part.loc[common, "label"].to_numpy()
            if len(np.unique(y)) < 2:
                rows.append((subset, a, b, np.nan, np.nan, np.nan, np.nan))
                continue
            auc_a, auc_b, p = delong_test(
                y, predictions[a].loc[common].to_numpy(), predictions[b].loc[common].to_numpy()
            )
            rows.append((subset, a, b, auc_a, auc_b, auc_a - auc_b, p))
    return pd.DataFrame(
        rows, columns=["subset", "model_a", "model_b", "auroc_a", "auroc_b", "diff", "p_value"]
    )


def evaluate_files(
    data_dir,
    sources,
    out_dir,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    allow_missing: bool = False,
    min_cell_size: int = 10,
    data_section=None,
    image_models=(),
    ehr_models=(),
) -> Evaluation:
    """``radfusion evaluate``: read the cohort's outcomes and every predictions file, evaluate,
    and write ``metrics.csv``, ``thresholds.csv``, ``fairness.csv``, ``comparisons.csv``,
    ``subtypes.csv`` and ``intersections.csv``. ``data_section`` (the config's ``data``)
    names the cohort's layout and the task whose label is scored. A model of ``image_models``
    may lack the studies without a volume, one of ``ehr_models`` those without an EHR: it is
    evaluated on the studies it scored, as the paired comparisons always are."""
    from pathlib import Path

    from radfusion.data.cohort import load_outcomes
    from radfusion.io import write_csv, write_json
    from radfusion.predictions import collect_prediction_files, read_predictions
    from radfusion.rundir import EvalDir

    studies = load_outcomes(data_dir, data_section)
    unscorable = _unscorable(studies, image_models, ehr_models)
    predictions, notes = {}, []
    for path in collect_prediction_files(sources):
        lacking, may_lack = unscorable.get(path.stem, ("input", ()))
        predictions[path.stem], file_notes = read_predictions(
            path, studies, allow_missing=allow_missing, may_lack=may_lack, lacking=lacking
        )
        notes.extend(file_notes)
    result = evaluate(studies, predictions, n_boot=n_boot, seed=seed, min_cell_size=min_cell_size)
    result.notes = notes + result.notes
    out = EvalDir(Path(out_dir))
    # What the report needs to draw curves and the cohort summary, without the data folder.
    outcomes = studies.loc[:, outcome_columns(studies)]
    write_csv(outcomes.reset_index(), out.outcomes)
    write_json(
        {
            "data": str(data_dir),
            "predictions": [str(s) for s in sources],
            "bootstrap": n_boot,
            "seed": seed,
            "allow_missing": allow_missing,
            "models": list(predictions),
            "notes": result.notes,
        },
        out.meta,
    )
    for table in EvalDir.TABLES:
        write_csv(getattr(result, table), getattr(out, table), float_format="%.6g")
    return result


def _unscorable(studies: pd.DataFrame, image_models, ehr_models) -> dict[str, tuple]:
    """The input each model needs and the studies without it, which the model could not
    score: an image model's without a volume, an EHR model's without an EHR."""
    out = {}
    for column, lacking, models in (
        ("has_volume", "volume", image_models),
        ("has_ehr", "EHR", ehr_models),
    ):
        if column in studies.columns:
            without = studies.index[~studies[column].astype(bool).to_numpy()]
            out.update(dict.fromkeys(models, (lacking, without)))
    return out


def auroc_summary(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per model: test AUROC with its CI on all studies and on non-subsegmental PE
    (columns ``all_value``, ``all_ci_low``, ..., ``non_subsegmental_ci_high``)."""
    rows = metrics[(metrics["attribute"] == "overall") & (metrics["metric"] == "auroc")]
    out = pd.DataFrame(index=pd.Index(list(dict.fromkeys(rows["model"])), name="model"))
    for subset in ("all", "non_subsegmental"):
        part = rows[rows["subset"] == subset].set_index("model")
        for what in ("value", "ci_low", "ci_high"):
            out[f"{subset}_{what}"] = part[what].reindex(out.index)
    return out.reset_index()
