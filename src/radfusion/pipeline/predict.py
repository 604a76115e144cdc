"""``radfusion predict``: score one new study with a benchmark run's models.

The CT goes through the run's own preprocessing (the same code as the cache) and every window
of it through the run's PENet checkpoint (the one its benchmark scored with); the EHR row
through the run's EHR model; the two are fused by the paper's mean. A run that trained SliceNet
scores the study with it too, and fuses it with the EHR the same way. Each decision uses the
operating point chosen on the run's validation split (``eval/thresholds.csv``); the headline
decision is the paper's model's.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from radfusion.errors import RadfusionError
from radfusion.fusion import fuse, fusion_name
from radfusion.io import read_text, read_user_csv
from radfusion.rundir import RunDir

__all__ = [
    "StudyScore",
    "image_models",
    "predict_study",
    "run_checkpoint",
    "run_thresholds",
    "score_cohort",
    "score_volumes",
]


@dataclass
class StudyScore:
    image_prob: float
    best_window: tuple[int, int]  # first and last slice (0-based) of the most suspicious window
    ehr_prob: float | None
    fused_prob: float | None
    model: str  # the model whose decision is reported: fusion_mean, or image without EHR
    threshold: float
    decision: bool
    notes: list[str] = field(default_factory=list)
    # When the run trained SliceNet: the same scores from it (prob, best_window, fused_prob,
    # model, threshold, decision), else None.
    slicenet: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


NAMES = {"image": "PENet", "slicenet": "SliceNet"}


def run_checkpoint(run: Path, model: str = "image") -> Path:
    """The checkpoint of an imaging model (``image``: PENet, or ``slicenet``) that scored the
    run's studies, as its stage recorded it (``select``: the best on validation, or the last);
    without a record, the best on validation. The record's file is looked up by name in this
    run folder: its absolute path would lead a moved or copied run to another folder's file."""
    from radfusion.imaging.checkpoints import best_checkpoint, usable

    folder = RunDir(run).checkpoints(model)
    rec = _record(RunDir(run).stage(model))
    if rec.get("status") == "done" and rec.get("checkpoint"):
        recorded = folder / Path(str(rec["checkpoint"])).name
        if recorded.exists() and usable(recorded):
            return recorded
    found = best_checkpoint(folder) if folder.is_dir() else None
    if found is None:
        raise RadfusionError(
            f"{run}: no readable trained {NAMES.get(model, model)} "
            f"({model}/checkpoints/best-*.ckpt); run radfusion benchmark first"
        )
    return found


def _record(path: Path) -> dict:
    """A stage record, or {} when it is absent or not a record (a stranger's run folder)."""
    if not path.exists():
        return {}
    try:
        rec = json.loads(read_text(path, "stage record"))
    except ValueError:
        raise RadfusionError(f"{path}: not a readable stage record; rerun the benchmark") from None
    return rec if isinstance(rec, dict) else {}


def image_models(run: Path) -> tuple[str, ...]:
    """The imaging models a run trained: PENet (``image``), and ``slicenet`` when its stage
    finished."""
    done = _record(RunDir(run).stage("slicenet")).get("status") == "done"
    return ("image", "slicenet") if done else ("image",)


def run_thresholds(run: Path) -> dict[str, float]:
    """Each model's operating point, as the run's evaluation chose it on validation."""
    path = RunDir(run).eval.thresholds
    if not path.exists():
        raise RadfusionError(f"{path}: missing; the run's evaluation stage has not finished")
    frame = read_user_csv(path, "thresholds file", "record")
    if not {"model", "threshold"} <= set(frame.columns):
        raise RadfusionError(f"{path}: needs columns model and threshold; rerun the evaluation")
    threshold = pd.to_numeric(frame["threshold"], errors="coerce")
    if not np.isfinite(threshold).all():
        raise RadfusionError(f"{path}: a threshold that is not a finite number; rerun it")
    return dict(zip(frame["model"].astype(str), threshold, strict=True))


def score_volumes(
    run: Path,
    volumes: dict[int, Path],
    *,
    hu_intercept: int | None = None,
    workers: int = 1,
    batch_size: int | None = None,
    models: tuple[str, ...] = ("image",),
) -> dict[str, pd.DataFrame]:
    """Volumes (idx -> ``.npy``) through the run's preprocessing and the chosen checkpoint of each
    of ``models`` (``image``: PENet, ``slicenet``): per model, ``idx``, ``prob``,
    ``best_start``, ``best_end`` per study (``predict_studies``). Models trained on the same
    preprocessing (the benchmark's always are) share one pass over the volumes."""
    from radfusion.imaging.inference import open_checkpoint, predict_studies
    from radfusion.imaging.preprocess import build_cache, cache_folder

    paths = {m: run_checkpoint(run, m) for m in models}
    checkpoints = {m: open_checkpoint(path) for m, path in paths.items()}
    studies = pd.DataFrame(index=pd.Index(list(volumes), name="idx"))
    scores: dict[str, pd.DataFrame] = {}
    with tempfile.TemporaryDirectory(prefix="radfusion-predict-") as tmp:
        for model, ckpt in checkpoints.items():
            params = ckpt.preprocessing
            if hu_intercept is not None:
                params = replace(params, hu_intercept=hu_intercept)
            folder = cache_folder(tmp, params)
            if not folder.exists():  # a complete cache of these parameters is reused
                summary = build_cache(volumes, tmp, params, workers=workers)
                if summary.failed:
                    raise RadfusionError(summary.failed[0])
            scores[model] = predict_studies(
                ckpt.model, folder, studies, ckpt.config, batch_size, source=paths[model]
            )
    return scores


def _images(run: Path, volume: Path, hu_intercept: int | None, models: tuple[str, ...]):
    """Each model's (probability, best window) for one volume."""
    from radfusion.data.volumes import read_header

    try:  # the checks validate makes: a FIFO, a bool, a 2-D or 0-slice array is refused
        read_header(volume)
    except FileNotFoundError:
        raise RadfusionError(f"{volume}: volume not found") from None
    except (ValueError, OSError) as exc:
        raise RadfusionError(f"{volume}: {exc}; give a (slices, rows, cols) .npy volume") from None
    scores = score_volumes(run, {0: volume}, hu_intercept=hu_intercept, models=models)
    rows = {m: frame.iloc[0] for m, frame in scores.items()}
    return {
        m: (float(r["prob"]), (int(r["best_start"]), int(r["best_end"]))) for m, r in rows.items()
    }


def _ehr(run: Path, row_csv: Path) -> float:
    from radfusion.ehr.model import check_features
    from radfusion.ehr.persistence import load_model

    meta_path = RunDir(run).ehr_meta
    if not meta_path.exists():
        raise RadfusionError(f"{run}: no EHR model (ehr/model.json); run radfusion benchmark first")
    try:
        features = json.loads(read_text(meta_path, "EHR model description"))["features"]
        names = [str(n) for n in features["names"]]
    except (ValueError, KeyError, TypeError):
        raise RadfusionError(
            f"{meta_path}: not the EHR model's description; train it again"
        ) from None
    if features.get("source") == "codes":
        raise RadfusionError(
            f"{run}: its EHR model reads MEDS code features, not a row of the release tables; "
            "score studies with their MEDS events: radfusion evaluate --models-from RUN --data "
            "COHORT"
        )
    row = read_user_csv(row_csv, "EHR row", "row")
    if len(row) != 1:
        raise RadfusionError(f"{row_csv}: expected one study's row, found {len(row)}")
    missing = [n for n in names if n not in row.columns]
    if missing:
        raise RadfusionError(
            f"{row_csv}: {len(missing)} EHR feature column(s) missing, e.g. {missing[:3]}; "
            "the row needs the release tables' columns (empty cells are imputed)"
        )
    x = check_features(row[names], what=str(row_csv))  # text in a cell is refused
    model_path = RunDir(run).ehr_model
    prob = float(load_model(model_path).predict_proba(x)[0, 1])
    if not np.isfinite(prob):
        raise RadfusionError(f"EHR model ({model_path}): a non-finite probability ({prob})")
    return prob


def predict_study(
    run_dir: str | Path,
    *,
    volume: str | Path | None = None,
    dicom: str | Path | None = None,
    ehr_row: str | Path | None = None,
    hu_intercept: int | None = None,
) -> StudyScore:
    """Score one study (a ``.npy`` volume, or a DICOM series folder) and optionally its EHR."""
    run = Path(run_dir)
    if (volume is None) == (dicom is None):
        raise RadfusionError("give one CT: --volume STUDY.npy or --dicom SERIES_DIR")
    thresholds = run_thresholds(run)
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="radfusion-dicom-") as tmp:
        if dicom is not None:
            from radfusion.imaging.dicom import import_dicom

            result = import_dicom(dicom, tmp)
            if len(result.imported) != 1:
                reasons = [r for s in result.series for r in s.reasons][:3]
                raise RadfusionError(
                    f"{dicom}: {len(result.imported)} importable CT series (need exactly one)"
                    + (f"; {reasons}" if reasons else "")
                )
            volume = Path(tmp) / f"{result.imported[0].idx}.npy"
            hu_intercept = 0 if hu_intercept is None else hu_intercept  # the import writes HU
        scored = _images(run, Path(volume), hu_intercept, image_models(run))
    (image_prob, window), slices = scored["image"], scored.get("slicenet")
    ehr_prob = None if ehr_row is None else _ehr(run, Path(ehr_row))
    if ehr_prob is None:
        notes.append("no EHR given: the decision is the image-only model's")
    if RunDir(run).eval.mitigation.exists():
        notes.append(
            "the decision uses the single validation threshold; group thresholds "
            "(eval/mitigation.csv) need the study's group and are evaluated, not applied here"
        )

    def decide(name: str, prob: float) -> tuple[float | None, str, float, bool]:
        fused, model = None, name
        if ehr_prob is not None:
            fused = float(fuse(pd.DataFrame({name: [prob], "ehr": [ehr_prob]})).iloc[0])
            model, prob = fusion_name(name, "mean"), fused
        if model not in thresholds:
            raise RadfusionError(
                f"{run}: no validation threshold for {model} in eval/thresholds.csv"
            )
        threshold = float(thresholds[model])
        return fused, model, threshold, bool(prob >= threshold)

    fused, model, threshold, decision = decide("image", image_prob)
    score = StudyScore(image_prob, window, ehr_prob, fused, model, threshold, decision, notes)
    if slices is not None:
        s_fused, s_model, s_threshold, s_decision = decide("slicenet", slices[0])
        score.slicenet = {
            "prob": slices[0],
            "best_window": slices[1],
            "fused_prob": s_fused,
            "model": s_model,
            "threshold": s_threshold,
            "decision": s_decision,
        }
    return score


def score_cohort(
    checkpoint: str | Path,
    data_dir: str | Path,
    cache_root: str | Path,
    out: str | Path,
    *,
    split: str | None = None,
    batch_size: int | None = None,
) -> int:
    """``radfusion predict-image``: every study of a cohort (or of one split) scored with a
    checkpoint alone, its model and preprocessing rebuilt from what it records; the
    predictions (idx, prob, split, best window) written to ``out``. Returns the count."""
    from radfusion.data.cohort import Cohort
    from radfusion.imaging.inference import open_checkpoint, predict_studies
    from radfusion.imaging.preprocess import cache_folder
    from radfusion.io import write_csv

    ckpt = open_checkpoint(checkpoint)
    cohort = Cohort.load(data_dir)
    studies = cohort.studies if split is None else cohort.split(split)
    predictions = predict_studies(
        ckpt.model,
        cache_folder(cache_root, ckpt.preprocessing),
        studies,
        ckpt.config,
        batch_size=batch_size,
        source=checkpoint,
    )
    predictions.insert(2, "split", studies.loc[predictions["idx"], "split"].to_numpy())
    write_csv(predictions, Path(out), float_format="%.8f")
    return len(predictions)
