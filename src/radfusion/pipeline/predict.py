"""``radfusion predict``: score one new study with a benchmark run's models.

The CT goes through the run's own preprocessing (the same code as the cache) and every
window of it through the run's best PENet checkpoint; the EHR row through the run's EHR model;
the two are fused by the paper's mean. Each decision uses the operating point chosen on the
run's validation split (``eval/thresholds.csv``).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd

from radfusion.errors import RadfusionError
from radfusion.fusion import fuse

__all__ = ["StudyScore", "predict_study", "run_checkpoint", "score_volumes"]


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

    def to_dict(self) -> dict:
        return asdict(self)


def run_checkpoint(run: Path) -> Path:
    """The run's best PENet checkpoint (the one its image stage recorded)."""
    record = run / "stages" / "image.json"
    if record.exists():
        rec = json.loads(record.read_text())
        if rec.get("status") == "done" and Path(rec.get("checkpoint", "")).exists():
            return Path(rec["checkpoint"])
    found = sorted((run / "image" / "checkpoints").glob("best-*.ckpt"))
    if not found:
        raise RadfusionError(
            f"{run}: no trained PENet (image/checkpoints/best-*.ckpt); "
            "run radfusion benchmark first"
        )
    return found[-1]


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
) -> pd.DataFrame:
    """Volumes (idx -> ``.npy``) through the run's preprocessing and best PENet checkpoint:
    ``idx``, ``prob``, ``best_start``, ``best_end`` per study (``predict_studies``)."""
    from radfusion.imaging.preprocess import build_cache, cache_folder
    from radfusion.imaging.train import open_checkpoint, predict_studies

    ckpt = open_checkpoint(run_checkpoint(run))
    params = ckpt.preprocessing
    if hu_intercept is not None:
        params = replace(params, hu_intercept=hu_intercept)
    with tempfile.TemporaryDirectory(prefix="radfusion-predict-") as tmp:
        summary = build_cache(volumes, tmp, params, workers=workers)
        if summary.failed:
            raise RadfusionError(summary.failed[0])
        studies = pd.DataFrame(index=pd.Index(list(volumes), name="idx"))
        return predict_studies(
            ckpt.model, cache_folder(tmp, params), studies, ckpt.config, batch_size
        )


def _image(run: Path, volume: Path, hu_intercept: int | None):
    row = score_volumes(run, {0: volume}, hu_intercept=hu_intercept).iloc[0]
    return float(row["prob"]), (int(row["best_start"]), int(row["best_end"]))


def _ehr(run: Path, row_csv: Path) -> float:
    from radfusion.ehr.model import check_features, load_model

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
        image_prob, window = _image(run, Path(volume), hu_intercept)
    if ehr_row is None:
        notes.append("no EHR given: the decision is the image-only model's")
        model, prob, ehr_prob, fused = "image", image_prob, None, None
    else:
        ehr_prob = _ehr(run, Path(ehr_row))
        fused = float(fuse(pd.DataFrame({"image": [image_prob], "ehr": [ehr_prob]})).iloc[0])
        model, prob = "fusion_mean", fused
    if model not in thresholds:
        raise RadfusionError(f"{run}: no validation threshold for {model} in eval/thresholds.csv")
    threshold = float(thresholds[model])
    return StudyScore(
        image_prob, window, ehr_prob, fused, model, threshold, bool(prob >= threshold), notes
    )
