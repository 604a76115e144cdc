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

import pandas as pd

from radfusion.errors import RadfusionError
from radfusion.fusion import fuse, fusion_name

__all__ = ["StudyScore", "image_models", "predict_study", "run_checkpoint", "score_volumes"]


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
    folder = Path(run) / model / "checkpoints"
    record = Path(run) / "stages" / f"{model}.json"
    if record.exists():
        rec = json.loads(record.read_text())
        if rec.get("status") == "done" and rec.get("checkpoint"):
            recorded = folder / Path(rec["checkpoint"]).name
            if recorded.exists():
                return recorded
    found = sorted(folder.glob("best-*.ckpt"))
    if not found:
        raise RadfusionError(
            f"{run}: no trained {NAMES.get(model, model)} ({model}/checkpoints/best-*.ckpt); "
            "run radfusion benchmark first"
        )
    return found[-1]


def image_models(run: Path) -> tuple[str, ...]:
    """The imaging models a run trained: PENet (``image``), and ``slicenet`` when its stage
    finished."""
    record = run / "stages" / "slicenet.json"
    done = record.exists() and json.loads(record.read_text()).get("status") == "done"
    return ("image", "slicenet") if done else ("image",)


def _thresholds(run: Path) -> dict[str, float]:
    path = run / "eval" / "thresholds.csv"
    if not path.exists():
        raise RadfusionError(f"{path}: missing; the run's evaluation stage has not finished")
    frame = pd.read_csv(path)
    return dict(zip(frame["model"], frame["threshold"], strict=True))


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
    from radfusion.imaging.preprocess import build_cache, cache_folder
    from radfusion.imaging.train import open_checkpoint, predict_studies

    checkpoints = {m: open_checkpoint(run_checkpoint(run, m)) for m in models}
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
            scores[model] = predict_studies(ckpt.model, folder, studies, ckpt.config, batch_size)
    return scores


def _images(run: Path, volume: Path, hu_intercept: int | None, models: tuple[str, ...]):
    """Each model's (probability, best window) for one volume."""
    scores = score_volumes(run, {0: volume}, hu_intercept=hu_intercept, models=models)
    rows = {m: frame.iloc[0] for m, frame in scores.items()}
    return {
        m: (float(r["prob"]), (int(r["best_start"]), int(r["best_end"]))) for m, r in rows.items()
    }


def _ehr(run: Path, row_csv: Path) -> float:
    from radfusion.ehr.model import check_features
    from radfusion.ehr.persistence import load_model

    meta_path = run / "ehr" / "model.json"
    if not meta_path.exists():
        raise RadfusionError(f"{run}: no EHR model (ehr/model.json); run radfusion benchmark first")
    names = json.loads(meta_path.read_text())["features"]["names"]
    try:
        row = pd.read_csv(row_csv)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise RadfusionError(f"{row_csv}: cannot read ({exc})") from None
    if len(row) != 1:
        raise RadfusionError(f"{row_csv}: expected one study's row, found {len(row)}")
    missing = [n for n in names if n not in row.columns]
    if missing:
        raise RadfusionError(
            f"{row_csv}: {len(missing)} EHR feature column(s) missing, e.g. {missing[:3]}; "
            "the row needs the release tables' columns (empty cells are imputed)"
        )
    x = check_features(row[names], what=str(row_csv))  # text in a cell is refused
    return float(load_model(run / "ehr" / "model.skops").predict_proba(x)[0, 1])


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
    thresholds = _thresholds(run)
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
