"""External validation: ``radfusion evaluate --models-from RUN_A --data COHORT_B``.

Run A's models score every study of cohort B (any layout), on run A's task, and are evaluated
at the operating points run A chose on its own validation split: nothing is tuned or refitted
on B. What transfers:

* the imaging models (PENet, SliceNet): always. B's volumes go through each checkpoint's own
  preprocessing into ``OUT/cache`` (resumable), then every window through the checkpoint;
* the EHR model: only where B yields A's feature columns. A model on MEDS code features
  (``ehr.features=codes``) is given B's events through A's fitted featuriser, provided enough
  of A's codes occur in B's vocabulary (:data:`MIN_SHARED_CODES`); a model on the RadFusion
  tables needs B's tables with the same columns. Otherwise it is reported as not
  transferable, with the reason;
* the fusions that learn nothing (mean, max), recomputed from the transferred models; the
  learned ones (weighted, stacked, fair) keep no weights to carry over and are reported so.

Writes ``OUT/predictions/*.csv``, ``OUT/eval/`` (the full evaluation of B, every study of B
as its test set), ``OUT/external.csv`` (each model's test metrics on A and on B side by side,
with CIs), ``OUT/calibration_shift.csv`` and ``OUT/report/report.html``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from radfusion.errors import RadfusionError
from radfusion.io import read_text, write_csv, write_json
from radfusion.rundir import RunDir

__all__ = ["MIN_SHARED_CODES", "ExternalResult", "external_validation"]

#: The share of run A's EHR codes that must occur in cohort B's events for the EHR model to
#: transfer: below it most of its columns would be zero for every study of B.
MIN_SHARED_CODES = 0.5
COMPARED = ("auroc", "auprc", "brier", "ece", "sensitivity", "specificity")


@dataclass
class ExternalResult:
    out: Path
    models: list[str]
    not_transferred: dict[str, str] = field(default_factory=dict)  # model -> why
    table: pd.DataFrame = field(default_factory=pd.DataFrame)


def _probs(path: Path) -> pd.Series:
    """A predictions file's probabilities by idx (files this module or run A wrote; a
    stranger's are checked by :func:`radfusion.predictions.read_predictions` first)."""
    frame = pd.read_csv(path, usecols=["idx", "prob"])
    return frame.set_index("idx")["prob"].astype(float)


def _run_config(run: RunDir):
    from radfusion.config import Config

    if not run.config.exists():
        raise RadfusionError(f"{run.root}: no config.yaml; is it a radfusion benchmark run?")
    import yaml

    return Config.model_validate(yaml.safe_load(read_text(run.config, "run config")) or {})


def _score_images(run: RunDir, cohort, out: RunDir, workers: int, batch_size) -> list[str]:
    from radfusion.imaging.inference import open_checkpoint, predict_studies
    from radfusion.imaging.preprocess import build_cache, cache_folder, cohort_volumes
    from radfusion.pipeline.predict import image_models, run_checkpoint

    scored = []
    volumes = cohort_volumes(cohort)
    for model in image_models(run.root):
        path = run_checkpoint(run.root, model)
        ckpt = open_checkpoint(path)
        summary = build_cache(volumes, out.cache, ckpt.preprocessing, workers=workers)
        if summary.failed:
            idx, why = next(iter(summary.failed.items()))
            raise RadfusionError(f"{len(summary.failed)} volume(s) of B failed; idx {idx}: {why}")
        studies = cohort.studies.loc[list(volumes)]
        predictions = predict_studies(
            ckpt.model,
            cache_folder(out.cache, ckpt.preprocessing),
            studies,
            ckpt.config,
            batch_size,
            source=path,
        )
        predictions.insert(2, "split", "test")
        write_csv(predictions, out.prediction(model), float_format="%.8f")
        scored.append(model)
    return scored


def _ehr_matrix(meta: dict, cohort) -> tuple[object | None, str | None]:
    """Cohort B's EHR matrix in run A's columns, or None and why it cannot be built."""
    features = meta.get("features", {})
    source, names = features.get("source"), features.get("names") or []
    if source == "codes":
        from radfusion.ehr.codes import CodeFeaturiser
        from radfusion.ehr.train import code_studies

        featuriser = CodeFeaturiser.from_dict(features.get("featuriser") or {})
        try:
            studies, root = code_studies(cohort)
        except RadfusionError as exc:
            return None, f"cohort B has no MEDS EHR to featurise ({exc})"
        from radfusion.data.meds import read_event_arrays

        events = cohort.meds_events() if root == cohort.meds_root else read_event_arrays(root)
        known = set(map(str, events.codes))
        shared = sum(code in known for code in featuriser.codes_)
        share = shared / max(len(featuriser.codes_), 1)
        if share < MIN_SHARED_CODES:
            return None, (
                f"only {shared} of run A's {len(featuriser.codes_)} EHR codes occur in cohort "
                f"B's events ({share:.0%}, under {MIN_SHARED_CODES:.0%}): different vocabularies"
            )
        built = featuriser.transform(events, studies)
        if built.names != names:
            return None, "the featuriser's columns differ from the model's (a corrupt run?)"
        return built.matrix, None
    if cohort.layout != "radfusion" or source not in ("release", "meds"):
        return None, (
            f"run A's EHR model reads {source} features, which a {cohort.layout}-layout "
            "cohort does not have"
        )
    from radfusion.ehr.model import check_features
    from radfusion.ehr.train import feature_matrix

    frame, _ = feature_matrix(cohort, source)
    try:
        return check_features(frame, names, what=f"cohort B's EHR features ({source})"), None
    except RadfusionError as exc:
        return None, str(exc)


def _score_ehr(run: RunDir, cohort, out: RunDir) -> str | None:
    """Write B's EHR predictions with A's model; returns why not, when it does not transfer."""
    from radfusion.ehr.persistence import load_model

    if not run.ehr_meta.exists():
        return "run A has no EHR model"
    meta = json.loads(read_text(run.ehr_meta, "EHR model description"))
    x, why = _ehr_matrix(meta, cohort)
    if why:
        return why
    model = load_model(run.ehr_model)
    prob = model.predict_proba(x)[:, 1]
    frame = pd.DataFrame({"idx": cohort.studies.index, "prob": prob, "split": "test"})
    write_csv(frame, out.prediction("ehr"), float_format="%.8f")
    return None


def _fusions(run: RunDir, out: RunDir, scored: list[str], skipped: dict[str, str]) -> list[str]:
    from radfusion.fusion import STRATEGIES, fuse

    designs = sorted([*STRATEGIES, "early", "joint_all", "joint_heads"], key=len, reverse=True)
    made = []
    for path in sorted(run.predictions.glob("fusion_*.csv")):
        name = path.stem
        rest = name.removeprefix("fusion_")
        strategy = next((d for d in designs if rest == d or rest.endswith(f"_{d}")), rest)
        image = "image" if rest == strategy else rest[: -len(strategy) - 1]
        if strategy not in ("mean", "max"):
            skipped[name] = (
                f"the {strategy} fusion learnt on run A; learned fusions are not carried over"
            )
            continue
        if image not in scored or "ehr" not in scored:
            skipped[name] = (
                f"needs {image} and ehr, and {skipped.get('ehr', 'one')} did not transfer"
            )
            continue
        probs = pd.DataFrame({m: _probs(out.prediction(m)) for m in (image, "ehr")})
        studies = pd.DataFrame({"split": "test", "label": -1}, index=probs.index)
        fused = fuse(probs, strategy, studies, partial=True)  # no volume: the EHR model alone
        frame = pd.DataFrame({"idx": fused.index, "prob": fused.to_numpy(), "split": "test"})
        write_csv(frame, out.prediction(name), float_format="%.8f")
        made.append(name)
    return made


def _side_by_side(run: RunDir, out: RunDir) -> pd.DataFrame:
    def overall(path: Path, where: str) -> pd.DataFrame:
        metrics = pd.read_csv(path)
        part = metrics[
            (metrics["attribute"] == "overall")
            & (metrics["subset"] == "all")
            & metrics["metric"].isin(COMPARED)
        ]
        return part.set_index(["model", "metric"])[["value", "ci_low", "ci_high", "n"]].add_prefix(
            f"{where}_"
        )

    internal = overall(run.eval.metrics, "internal") if run.eval.metrics.exists() else None
    external = overall(out.eval.metrics, "external")
    table = external if internal is None else internal.join(external, how="right")
    return table.reset_index()


def _calibration_shift(run: RunDir, out: RunDir, models: list[str]) -> pd.DataFrame:
    """Per model and cohort: observed rate, mean probability, their difference (calibration
    in the large) and the calibration slope (logistic regression of the outcome on the
    logit), on each cohort's test studies."""
    from sklearn.linear_model import LogisticRegression

    rows = []
    for where, folder in (("internal", run), ("external", out)):
        if not folder.eval.outcomes.exists():
            continue
        outcomes = pd.read_csv(folder.eval.outcomes).set_index("idx")
        test = outcomes[outcomes["split"] == "test"]
        for model in models:
            path = folder.prediction(model)
            if not path.exists():
                continue
            prob = _probs(path).reindex(test.index).dropna()
            y = test.loc[prob.index, "label"].to_numpy()
            p = np.clip(prob.to_numpy(), 1e-6, 1 - 1e-6)
            slope = np.nan
            if len(np.unique(y)) == 2:
                logit = np.log(p / (1 - p))[:, None]
                slope = float(LogisticRegression(C=1e6).fit(logit, y).coef_[0, 0])
            rows.append(
                {
                    "model": model,
                    "cohort": where,
                    "n": len(y),
                    "observed_rate": float(y.mean()) if len(y) else np.nan,
                    "mean_probability": float(p.mean()) if len(p) else np.nan,
                    "calibration_in_the_large": float(p.mean() - y.mean()) if len(y) else np.nan,
                    "calibration_slope": slope,
                }
            )
    return pd.DataFrame(rows)


def external_validation(
    models_from: str | os.PathLike,
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    data_section=None,
    n_boot: int = 2000,
    seed: int = 0,
    workers: int = 1,
    batch_size: int | None = None,
) -> ExternalResult:
    """Score and evaluate cohort ``data`` with run ``models_from``'s models into ``out``."""
    from radfusion.config import DataSection
    from radfusion.data.cohort import Cohort
    from radfusion.evaluation.evaluate import evaluate, outcome_columns
    from radfusion.pipeline.predict import run_thresholds
    from radfusion.predictions import read_predictions
    from radfusion.rundir import EvalDir

    run, target = RunDir(Path(models_from)), RunDir(Path(out))
    config = _run_config(run)
    from radfusion.data.cohort import requested_tasks

    asked = requested_tasks(config.data.task, ["PE"])
    if len(asked) != 1 or config.data.task == "all":
        raise RadfusionError(
            f"{run.root}: a benchmark of several tasks; give one task's run folder "
            f"({run.tasks}/<task>) to --models-from"
        )
    task = asked[0]
    section = data_section or DataSection()
    section = section.model_copy(update={"task": task})
    cohort = Cohort.load(data, data=section).for_task(task)
    cohort.studies["split"] = "test"  # every study of B is unseen by A's models
    target.root.mkdir(parents=True, exist_ok=True)
    scored = _score_images(run, cohort, target, workers, batch_size)
    skipped: dict[str, str] = {}
    why = _score_ehr(run, cohort, target)
    if why:
        skipped["ehr"] = why
    else:
        scored.append("ehr")
    scored += _fusions(run, target, scored, skipped)
    thresholds = run_thresholds(run.root)
    unimaged = cohort.studies.index[~cohort.has_volume.to_numpy()]
    predictions = {
        m: read_predictions(target.prediction(m), cohort.studies, may_lack=unimaged)[0]
        for m in scored
    }
    result = evaluate(
        cohort.studies,
        predictions,
        n_boot=n_boot,
        seed=seed,
        thresholds={m: thresholds[m] for m in scored},
    )
    folder = EvalDir(target.eval.root)
    for table in EvalDir.TABLES:
        write_csv(getattr(result, table), getattr(folder, table), float_format="%.6g")
    outcomes = cohort.studies.loc[:, outcome_columns(cohort.studies)]
    write_csv(outcomes.reset_index(), folder.outcomes)
    notes = [f"{m}: not transferred: {w}" for m, w in skipped.items()] + result.notes
    write_json(
        {
            "models_from": str(run.root),
            "data": str(data),
            "task": task,
            "bootstrap": n_boot,
            "seed": seed,
            "models": scored,
            "not_transferred": skipped,
            "thresholds": "run A's (eval/thresholds.csv)",
            "notes": notes,
        },
        folder.meta,
    )
    table = _side_by_side(run, target)
    write_csv(table, target.root / "external.csv", float_format="%.6g")
    shift = _calibration_shift(run, target, scored)
    write_csv(shift, target.root / "calibration_shift.csv", float_format="%.6g")
    from radfusion.report.external import write_external_report

    write_external_report(target, table, shift, notes, run.root, Path(data))
    return ExternalResult(target.root, scored, skipped, table)
