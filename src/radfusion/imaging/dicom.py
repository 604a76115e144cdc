"""DICOM series to volumes in the release layout: ``{idx}.npy`` (int16 HU, head to foot).

Files are found anywhere below the root, whatever their names, grouped by
SeriesInstanceUID, checked, ordered by ImagePositionPatient projected on the slice normal
(never by file name or InstanceNumber), decoded with pydicom (the pylibjpeg plugins decode
JPEG, JPEG-LS, JPEG 2000 and RLE) and rescaled to HU with RescaleSlope/Intercept.

What is not an axial CT image series is skipped with a reason; problems inside a series are
reported, not raised: every file or series with a problem appears in the import report.
Patient-identifying attributes are never read into any output; ``series.csv`` holds only UIDs,
counts and geometry.

Paths carry PHI too: exports are often laid out as ``Doe^Archibald_19710123/`` or by patient
id. So the outputs name a source file by its path relative to the import root with every
component (folders and the file's name; its extension is kept) replaced by a keyed hash,
``3f9c01aa/b27e4c10/5d1e99f0.dcm``. The key is drawn afresh for each import and never stored,
so the names cannot be reversed by hashing guesses; they are consistent within one import's
``series.csv``, ``import_report.csv`` and messages. ``keep_paths`` writes the paths as they
are, for a user who needs them and keeps the outputs private.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from radfusion.errors import RadfusionError
from radfusion.io import write_csv, write_npy
from radfusion.workers import die_with_parent

__all__ = [
    "KEEP_PATHS_WARNING",
    "ImportResult",
    "SeriesReport",
    "import_dicom",
    "read_series",
    "source_namer",
]

KEEP_PATHS_WARNING = (
    "--keep-paths: series.csv and import_report.csv name the source files as they are; folder "
    "names often carry a patient's name, id or birth date: keep these outputs private"
)

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
#: Header attributes read when scanning (never names, IDs or dates of the patient).
SCAN_TAGS = [
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "Modality",
    "ImageType",
    "SOPClassUID",
    "NumberOfFrames",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "Rows",
    "Columns",
    "InstanceNumber",
]


@dataclass
class SeriesReport:
    series_uid: str
    study_uid: str
    files: list[str]
    names: list[str] = field(default_factory=list)  # how the outputs name each file
    status: str = "imported"  # imported | skipped
    reasons: list[str] = field(default_factory=list)
    idx: int | None = None
    slices: int = 0
    slice_spacing: float = float("nan")
    pixel_spacing: tuple[float, float] = (float("nan"), float("nan"))


@dataclass
class ImportResult:
    series: list[SeriesReport]
    unreadable: list[tuple[str, str]]  # (path, reason): files that are not readable DICOM

    @property
    def imported(self) -> list[SeriesReport]:
        return [s for s in self.series if s.status == "imported"]

    def describe(self) -> str:
        """One line: what the import did."""
        skipped = [s for s in self.series if s.status != "imported"]
        warned = [s for s in self.imported if s.reasons]
        return (
            f"imported {len(self.imported)} series ({len(warned)} with warnings), "
            f"skipped {len(skipped)}, ignored {len(self.unreadable)} non-DICOM or "
            "unreadable file(s)"
        )


def _scan(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not path.is_file():  # a FIFO or device would hang the reader
        return None, "not a regular file"
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=SCAN_TAGS)
    except InvalidDicomError:
        return None, "not a DICOM file"
    except Exception as exc:  # truncated or corrupt headers raise many types
        return None, f"unreadable DICOM header ({type(exc).__name__}: {exc})"
    if "SeriesInstanceUID" not in ds:
        return None, "no SeriesInstanceUID"
    return ds, None


def _check_series(headers) -> list[str]:
    """Reasons to skip a series (empty: it is an axial CT image series)."""
    ds = headers[0]
    modality = {str(h.get("Modality", "")) for h in headers}
    if modality != {"CT"}:
        return [f"modality {sorted(modality)} is not CT"]
    sop = {str(h.get("SOPClassUID", "")) for h in headers}
    if SECONDARY_CAPTURE in sop:
        return ["secondary capture, not an acquired image"]
    if ENHANCED_CT in sop or any(int(h.get("NumberOfFrames", 1) or 1) > 1 for h in headers):
        return ["multi-frame (enhanced CT) file; export the series as single-frame slices"]
    image_type = " ".join(str(v).upper() for v in (ds.get("ImageType") or []))
    if "LOCALIZER" in image_type or "SCOUT" in image_type:
        return ["localizer/scout image"]
    missing = [
        t
        for t in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
        if any(t not in h for h in headers)
    ]
    if missing:
        return [f"missing {missing}; cannot place the slices in space"]
    orient = np.array([[float(v) for v in h.ImageOrientationPatient] for h in headers])
    if not np.allclose(orient, orient[0], atol=1e-3):
        return ["inconsistent ImageOrientationPatient within the series"]
    spacing = np.array([[float(v) for v in h.PixelSpacing] for h in headers])
    if not np.allclose(spacing, spacing[0], rtol=1e-3):
        return ["inconsistent PixelSpacing within the series"]
    if len({(int(h.Rows), int(h.Columns)) for h in headers}) > 1:
        return ["inconsistent image size within the series"]
    normal = np.cross(orient[0, :3], orient[0, 3:])
    if abs(normal[2]) < 0.9:
        return ["not axial (slice normal is not head-foot)"]
    return []


def read_series(report: SeriesReport, headers) -> np.ndarray | None:
    """Order, decode and rescale a checked series; record warnings or the reason to skip."""
    orient = np.array([float(v) for v in headers[0].ImageOrientationPatient])
    normal = np.cross(orient[:3], orient[3:])
    position = np.array(
        [float(np.dot([float(v) for v in h.ImagePositionPatient], normal)) for h in headers]
    )
    z = np.array([float(h.ImagePositionPatient[2]) for h in headers])
    order = np.argsort(position, kind="stable")
    if len(order) > 1 and z[order[-1]] > z[order[0]]:
        order = order[::-1]  # head (superior, larger z) first
    shown = dict(zip(report.files, report.names or report.files, strict=True))
    files = [report.files[i] for i in order]
    pos = position[order]
    keep = np.r_[True, np.abs(np.diff(pos)) > 1e-3]
    if not keep.all():
        dup = [files[i] for i in np.flatnonzero(~keep)]
        report.reasons.append(
            f"{len(dup)} slice(s) at an already-filled position dropped (e.g. {shown[dup[0]]}); "
            "the first file at each position kept"
        )
        files, pos = [f for f, k in zip(files, keep, strict=True) if k], pos[keep]
    gaps = np.abs(np.diff(pos))
    if len(gaps):
        step = float(np.median(gaps))
        report.slice_spacing = step
        if (gaps > 1.5 * step).any():
            where = int(np.argmax(gaps > 1.5 * step))
            report.reasons.append(
                f"gap in slice positions ({gaps[where]:.2f} mm where {step:.2f} mm is usual) "
                f"after {shown[files[where]]}: missing slice(s)"
            )
    report.pixel_spacing = tuple(float(v) for v in headers[0].PixelSpacing)
    import pydicom

    volume = np.empty((len(files), int(headers[0].Rows), int(headers[0].Columns)), np.int16)
    for k, path in enumerate(files):
        try:
            ds = pydicom.dcmread(path)
            volume[k] = _to_hu(ds.pixel_array, ds)
        except Exception as exc:
            report.status = "skipped"
            report.reasons.append(
                f"cannot decode {shown[path]} ({type(exc).__name__}: {exc}); "
                "install the pylibjpeg plugins or re-export uncompressed"
            )
            return None
    report.slices = len(files)
    return volume


def _to_hu(stored: np.ndarray, ds) -> np.ndarray:
    """RescaleSlope * stored + RescaleIntercept, rounded into int16 range. Integer arithmetic
    when the slope is 1 and the intercept whole (the usual CT case), floats otherwise."""
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        hu = apply_modality_lut(stored, ds)
    elif slope == 1 and intercept.is_integer():
        hu = np.add(stored, int(intercept), dtype=np.int32)
    else:
        hu = np.rint(stored.astype(np.float32) * slope + intercept)
    return np.clip(hu, -32768, 32767, out=hu)


def _import_one(task) -> SeriesReport:
    report, headers, out_dir = task
    reasons = _check_series(headers)
    if reasons:
        report.status, report.reasons = "skipped", reasons
        return report
    volume = read_series(report, headers)
    if volume is None:
        return report
    write_npy(volume, Path(out_dir) / f"{report.idx}.npy")
    return report


def import_dicom(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    workers: int = 1,
    first_idx: int = 1,
    on_series: Callable[[SeriesReport], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    keep_paths: bool = False,
) -> ImportResult:
    """Import every axial CT series below ``root`` into ``out_dir``; write ``series.csv`` and
    ``import_report.csv``. Series get idx ``first_idx, first_idx + 1, ...`` in order of
    (StudyInstanceUID, SeriesInstanceUID). Source paths reach the outputs hashed
    (:func:`source_namer`) unless ``keep_paths``."""
    root, out = Path(root), Path(out_dir)
    if not root.is_dir():
        raise RadfusionError(f"{root}: not a folder; give the top of a tree of DICOM files")
    name_of = source_namer(root, keep_paths)
    out.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[tuple[str, str, object]]] = defaultdict(list)
    unreadable = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            path = Path(folder) / name
            ds, problem = _scan(path)
            if ds is None:
                if name != "DICOMDIR":
                    unreadable.append((name_of(path), problem))
                continue
            groups[str(ds.SeriesInstanceUID)].append(
                (str(ds.get("StudyInstanceUID", "")), str(path), ds)
            )
    reports, headers = [], {}
    for series_uid, members in groups.items():
        study_uid = min((s for s, _, _ in members), default="")
        files = [p for _, p, _ in members]
        reports.append(
            SeriesReport(series_uid, study_uid, files, names=[name_of(p) for p in files])
        )
        headers[series_uid] = [h for _, _, h in members]
    reports.sort(key=lambda r: (r.study_uid, r.series_uid))
    for k, report in enumerate(reports):
        report.idx = first_idx + k
    if on_total:
        on_total(len(reports))
    tasks = [(r, headers[r.series_uid], out) for r in reports]
    done = []
    if workers > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent) as pool:
            for report in pool.map(_import_one, tasks):
                done.append(report)
                if on_series:
                    on_series(report)
    else:
        for task in tasks:
            done.append(_import_one(task))
            if on_series:
                on_series(done[-1])
    for report in done:
        if report.status != "imported":
            report.idx = None
    result = ImportResult(done, unreadable)
    _write_reports(out, result)
    return result


def source_namer(root: Path, keep_paths: bool = False) -> Callable[[str | Path], str]:
    """How the outputs name a source file below ``root``: its relative path with every
    component hashed under a key drawn for this import (the extension kept), or the path as it
    is with ``keep_paths``."""
    if keep_paths:
        return str
    key = secrets.token_bytes(16)

    def component(part: str) -> str:
        return hashlib.blake2b(part.encode(), key=key, digest_size=4).hexdigest()

    def name(path: str | Path) -> str:
        relative = Path(os.path.relpath(path, root))
        parts = [component(p) for p in relative.parts[:-1]]
        suffix = relative.suffix if relative.suffix.lower() in (".dcm", ".ima", ".dicom") else ""
        parts.append(component(relative.name) + suffix)
        return "/".join(parts)

    return name


def _write_reports(out: Path, result: ImportResult) -> None:
    rows = [
        {
            "idx": r.idx,
            "study_uid": r.study_uid,
            "series_uid": r.series_uid,
            "slices": r.slices,
            "slice_spacing": r.slice_spacing,
            "pixel_spacing_row": r.pixel_spacing[0],
            "pixel_spacing_col": r.pixel_spacing[1],
            "warnings": " | ".join(r.reasons),
        }
        for r in result.imported
    ]
    write_csv(
        pd.DataFrame(
            rows,
            columns=[
                "idx",
                "study_uid",
                "series_uid",
                "slices",
                "slice_spacing",
                "pixel_spacing_row",
                "pixel_spacing_col",
                "warnings",
            ],
        ),
        out / "series.csv",
    )
    lines = [
        {"path": p, "series_uid": "", "action": "ignored", "reason": why}
        for p, why in result.unreadable
    ]
    for r in result.series:
        for reason in r.reasons or [""]:
            if r.status == "imported" and not reason:
                continue
            lines.append(
                {
                    "path": r.names[0] if r.names else "",
                    "series_uid": r.series_uid,
                    "action": "skipped" if r.status == "skipped" else "imported with warning",
                    "reason": reason,
                }
            )
    write_csv(
        pd.DataFrame(lines, columns=["path", "series_uid", "action", "reason"]),
        out / "import_report.csv",
    )
