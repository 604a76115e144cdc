"""DICOM series to volumes in the release layout: ``{idx}.npy`` (int16 HU, head to foot).

Files are found anywhere below the root, whatever their names, grouped by
SeriesInstanceUID, checked, ordered by ImagePositionPatient projected on the slice normal
(never by file name or InstanceNumber), decoded with pydicom (the pylibjpeg plugins decode
JPEG, JPEG-LS, JPEG 2000 and RLE) and rescaled to HU with RescaleSlope/Intercept.

Each file is read once. The scan parses its header, leaving the pixels in the file (pydicom's
deferred read), and notes where they lie; once the series is known to be whole and ordered,
uncompressed pixels are read from there straight into the volume, in slice order, and turned
into HU. Compressed pixels are decoded during the scan instead, to HU as int16 into a spool file
beside the output (a slice is never decoded twice, nor held in memory with its series' others
before the series is known to be whole). Chunks of files are scanned in parallel, then each
series is ordered and gathered, in parallel too; a spool file is deleted as soon as the series
with slices in it are written.

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
import shutil
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from radfusion.errors import RadfusionError
from radfusion.imaging.dicom_header import Header, plain_header
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
    # what turns the stored values into HU
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "SamplesPerPixel",
    "RescaleSlope",
    "RescaleIntercept",
    "ModalityLUTSequence",
]
#: What the scan keeps of a file (no other element is ever converted or copied): the scan
#: tags, and what pydicom's decoders need of the image pixel module.
READ_TAGS = [
    *SCAN_TAGS,
    "PhotometricInterpretation",
    "HighBit",
    "PlanarConfiguration",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    "PixelData",
]
#: Elements longer than this are left in the file by the scan (the pixels, read later once).
DEFER_BYTES = 4096
UNDEFINED_LENGTH = 0xFFFFFFFF  # an encapsulated (compressed) pixel data element's length
#: Transfer syntaxes whose pixels are the values themselves, little-endian (read in place).
NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
#: Files read per task of the scan; their slices share one spool file.
SCAN_CHUNK = 32


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


@dataclass
class _File:
    """One DICOM file after its scan: the scan tags, and where its pixels are: in the file
    itself (uncompressed: ``pixels`` bytes in, stored as ``dtype``), or decoded to HU in a
    spool file (``spool``, ``offset`` bytes in); or why they could not be decoded."""

    path: str
    header: Header
    spool: str | None = None
    offset: int = 0  # bytes into the spool
    pixels: int | None = None  # uncompressed: the pixel data's offset in the file
    dtype: str = "<i2"
    error: str | None = None

    @property
    def readable(self) -> bool:
        return self.spool is not None or self.pixels is not None


def _native_pixels(ds, header: Header, path: Path) -> tuple[int, str] | str | None:
    """Where an uncompressed single-sample 16-bit slice's pixels lie in the file: ``(offset,
    dtype)``; a reason when they are cut short; None for any other encoding, or a modality
    LUT (decoded by pydicom)."""
    if header.get("TransferSyntaxUID") not in NATIVE or "ModalityLUTSequence" in header:
        return None
    if header.get("BitsAllocated") != 16 or header.get("SamplesPerPixel", 1) != 1:
        return None
    if "Rows" not in header or "Columns" not in header:
        return None
    element = ds.get_item("PixelData", keep_deferred=True)
    tell = getattr(element, "value_tell", None)
    if tell is None or element.length == UNDEFINED_LENGTH:
        return None  # read already (a small slice), or encapsulated: pydicom decodes it
    needed = header.Rows * header.Columns * 2
    have = min(int(element.length), path.stat().st_size - int(tell))
    if have < needed:
        return f"truncated: its pixel data holds {max(have, 0)} of {needed} bytes"
    return int(tell), "<i2" if header.get("PixelRepresentation", 0) else "<u2"


def _read(path: Path):
    """Read ``path``'s header once, the pixels left in the file; for a file that can belong
    to an axial CT image series, say where its uncompressed pixels are, or decode compressed
    ones to HU. Returns ``(header, (offset, dtype) | hu | None, decode_error)``, or
    ``(None, None, reason)`` for a file that is not readable DICOM."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not path.is_file():  # a FIFO or device would hang the reader
        return None, None, "not a regular file"
    error = None
    try:
        ds = pydicom.dcmread(path, defer_size=DEFER_BYTES, specific_tags=READ_TAGS)
    except InvalidDicomError:
        return None, None, "not a DICOM file"
    except Exception as exc:  # a truncated pixel element: the header may still read
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=SCAN_TAGS)
        except Exception:
            return None, None, f"unreadable DICOM header ({type(exc).__name__}: {exc})"
        error = f"{type(exc).__name__}: {exc}"
    header = plain_header(ds)
    if "SeriesInstanceUID" not in header:
        return None, None, "no SeriesInstanceUID"
    if error or not _may_be_axial_ct(header):
        return header, None, error
    try:
        native = _native_pixels(ds, header, path)
        if isinstance(native, str):
            return header, None, native
        if native is not None:
            return header, native, None
        stored = ds.pixel_array  # the deferred pixels, read and decoded now
        if stored.ndim != 2:
            return header, None, f"pixel array of shape {stored.shape}, not one grey-level slice"
        return header, _to_hu(stored, ds), None
    except Exception as exc:
        return header, None, f"{type(exc).__name__}: {exc}"


def _may_be_axial_ct(ds) -> bool:
    """Whether a file could belong to a series :func:`_check_series` accepts (else its pixels
    are never decoded)."""
    image_type = " ".join(str(v).upper() for v in (ds.get("ImageType") or []))
    return (
        str(ds.get("Modality", "")) == "CT"
        and str(ds.get("SOPClassUID", "")) not in (SECONDARY_CAPTURE, ENHANCED_CT)
        and int(ds.get("NumberOfFrames", 1) or 1) == 1
        and "LOCALIZER" not in image_type
        and "SCOUT" not in image_type
        and "PixelData" in ds
    )


def _scan_chunk(task) -> tuple[list[_File], list[tuple[str, str]]]:
    """Read a chunk of files once each, appending their HU slices to one spool file."""
    paths, spool = task
    files, unreadable = [], []
    sink = None
    try:
        for path in paths:
            header, pixels, problem = _read(Path(path))
            if header is None:
                unreadable.append((path, problem))
                continue
            record = _File(path, header, error=problem)
            if isinstance(pixels, tuple):
                record.pixels, record.dtype = pixels
            elif pixels is not None:
                sink = sink or open(spool, "wb")  # noqa: SIM115 (closed below)
                record.spool, record.offset = spool, sink.tell()
                sink.write(np.ascontiguousarray(pixels).tobytes())
            files.append(record)
    finally:
        if sink is not None:
            sink.close()
    return files, unreadable


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


def read_series(report: SeriesReport, files: list[_File]) -> np.ndarray | None:
    """Order a checked series' slices and gather them from the spool; record warnings, or
    the reason to skip it."""
    headers = [f.header for f in files]
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
    ordered = [files[i] for i in order]
    pos = position[order]
    keep = np.r_[True, np.abs(np.diff(pos)) > 1e-3]
    if not keep.all():
        dup = [ordered[i].path for i in np.flatnonzero(~keep)]
        report.reasons.append(
            f"{len(dup)} slice(s) at an already-filled position dropped (e.g. {shown[dup[0]]}); "
            "the first file at each position kept"
        )
        ordered, pos = [f for f, k in zip(ordered, keep, strict=True) if k], pos[keep]
    gaps = np.abs(np.diff(pos))
    if len(gaps):
        step = float(np.median(gaps))
        report.slice_spacing = step
        if (gaps > 1.5 * step).any():
            where = int(np.argmax(gaps > 1.5 * step))
            report.reasons.append(
                f"gap in slice positions ({gaps[where]:.2f} mm where {step:.2f} mm is usual) "
                f"after {shown[ordered[where].path]}: missing slice(s)"
            )
    report.pixel_spacing = tuple(float(v) for v in headers[0].PixelSpacing)
    broken = next((f for f in ordered if not f.readable), None)
    if broken is not None:
        report.status = "skipped"
        fix = (
            "re-copy or re-export the file"
            if str(broken.error).startswith("truncated")
            else "install the pylibjpeg plugins or re-export uncompressed"
        )
        report.reasons.append(f"cannot decode {shown[broken.path]} ({broken.error}); {fix}")
        return None
    shape = (int(headers[0].Rows), int(headers[0].Columns))
    volume = np.empty((len(ordered), *shape), np.int16)
    for k, f in enumerate(ordered):
        if f.pixels is not None:  # uncompressed: read in place, then to HU
            stored = np.fromfile(f.path, f.dtype, shape[0] * shape[1], offset=f.pixels)
            stored = _unused_bits_cleared(stored.reshape(shape), f.header)
            _to_hu(stored, f.header, volume[k], bits_cleared=True)
        else:
            volume[k] = np.fromfile(f.spool, np.int16, volume[k].size, offset=f.offset).reshape(
                shape
            )
    report.slices = len(ordered)
    return volume


def _unused_bits_cleared(stored: np.ndarray, ds) -> np.ndarray:
    """The high bits beyond BitsStored cleared (unsigned) or sign-extended (signed), as
    pydicom's decoders do for uncompressed data."""
    shift = 16 - int(ds.get("BitsStored", 16) or 16)
    if 0 < shift < 16:
        np.left_shift(stored, shift, out=stored)
        np.right_shift(stored, shift, out=stored)
    return stored


def _to_hu(
    stored: np.ndarray, ds, out: np.ndarray | None = None, *, bits_cleared: bool = False
) -> np.ndarray:
    """RescaleSlope * stored + RescaleIntercept, rounded into int16 range (into ``out``, when
    given). Integer arithmetic when the slope is 1 and the intercept whole (the usual CT case):
    in int16 itself when the values' range keeps the result in it (``bits_cleared``: the bits
    above BitsStored are known clear, which bounds them), floats otherwise."""
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if out is None:
        out = np.empty(stored.shape, np.int16)
    if "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        hu = apply_modality_lut(stored, ds)
    elif slope == 1 and intercept.is_integer():
        low, high = _stored_range(stored.dtype, ds if bits_cleared else None)
        if low + intercept >= -32768 and high + intercept <= 32767:
            np.add(stored, np.int16(intercept), out=out, dtype=np.int16, casting="unsafe")
            return out
        hu = np.add(stored, int(intercept), dtype=np.int32)
    else:
        hu = np.rint(stored.astype(np.float32) * slope + intercept)
    np.clip(hu, -32768, 32767, out=hu)
    out[...] = hu
    return out


def _stored_range(dtype: np.dtype, ds=None) -> tuple[int, int]:
    """The smallest and largest value the stored pixels can hold: their dtype's range, cut to
    the header ``ds``'s BitsStored when given (the bits above it cleared)."""
    if not np.issubdtype(dtype, np.integer):
        return -(2**31), 2**31  # outside int16 either way: the general path
    info = np.iinfo(dtype)
    if ds is None:
        return int(info.min), int(info.max)
    bits = int(ds.get("BitsStored", info.bits) or info.bits)
    if bits >= info.bits or info.bits > 16:
        return int(info.min), int(info.max)
    if info.min < 0:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _import_one(task) -> SeriesReport:
    report, files, out_dir = task
    reasons = _check_series([f.header for f in files])
    if reasons:
        report.status, report.reasons = "skipped", reasons
        return report
    volume = read_series(report, files)
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
    paths = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        paths += [str(Path(folder) / name) for name in sorted(names) if name != "DICOMDIR"]
    spool = out / f".spool-{secrets.token_hex(4)}"
    spool.mkdir()
    pool = None
    try:
        if workers > 1 and len(paths) > 1:
            pool = ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent)
        run = pool.map if pool else map
        size = max(1, min(SCAN_CHUNK, -(-len(paths) // max(1, workers))))
        chunks = [
            (paths[k : k + size], str(spool / f"{k // size}.i16"))
            for k in range(0, len(paths), size)
        ]
        members: dict[str, list[_File]] = defaultdict(list)
        unreadable = []
        for files, bad in run(_scan_chunk, chunks):
            unreadable += [(name_of(path), why) for path, why in bad]
            for f in files:
                members[str(f.header.SeriesInstanceUID)].append(f)
        reports = [
            SeriesReport(
                series_uid,
                min(str(f.header.get("StudyInstanceUID", "")) for f in files),
                [f.path for f in files],
                names=[name_of(f.path) for f in files],
            )
            for series_uid, files in members.items()
        ]
        reports.sort(key=lambda r: (r.study_uid, r.series_uid))
        for k, report in enumerate(reports):
            report.idx = first_idx + k
        if on_total:
            on_total(len(reports))
        # A spool file is deleted once every series with a slice in it is written.
        users: dict[str, int] = defaultdict(int)
        for files in members.values():
            for name in {f.spool for f in files if f.spool}:
                users[name] += 1
        tasks = [(r, members[r.series_uid], out) for r in reports]
        done = []
        for report in run(_import_one, tasks):
            done.append(report)
            for name in {f.spool for f in members[report.series_uid] if f.spool}:
                users[name] -= 1
                if not users[name]:
                    Path(name).unlink()
            if on_series:
                on_series(report)
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
        shutil.rmtree(spool, ignore_errors=True)
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
