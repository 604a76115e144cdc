"""The paper's preprocessing into a volume cache: HU, each slice resized, stored as int16.

Entries live in ``CACHE_DIR/<key>/`` where ``key`` hashes every parameter that shapes them,
so a changed parameter makes a new cache and never a stale read. Each entry is ``{idx}.npy``
plus a sidecar ``{idx}.json`` recording its source (path, size, mtime), the HU intercept used,
its shape, byte size and CRC32. Both are written atomically, the sidecar last, so an entry is
complete exactly when its sidecar exists and matches: an interrupted run resumes where it
stopped, a changed source file is rebuilt, and a corrupt entry (wrong size, or with
``verify`` a wrong checksum) is reported and rebuilt.

The window (centre 400, width 1000, minus the mean) is *not* applied here: it is applied when
a window is read (``radfusion.imaging.windows``), so one cache serves any window setting.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from radfusion.data.nifti import is_nifti, read_nifti
from radfusion.data.volumes import detect_intercept, open_volume, read_header
from radfusion.errors import RadfusionError
from radfusion.imaging.resample import resample_slices
from radfusion.io import atomic_path, write_json
from radfusion.workers import die_with_parent

__all__ = ["CacheSummary", "PreprocessParams", "build_cache", "cache_folder", "resize_volume"]

#: Bumped whenever the algorithm changes what an entry holds (2: non-square slices padded
#: with air to a square, no longer stretched).
ALGORITHM_VERSION = 2
AIR_HU = -1000  # what pads a slice to a square, and a window beyond a study's ends


@dataclass(frozen=True)
class PreprocessParams:
    size: int = 224  # rows and columns per slice (PENet's own recipe: 208, then crop 192)
    hu_intercept: int | None = None  # None: detect per volume from the air peak
    slice_thickness: float | None = None  # NIfTI sources resampled to it (mm); None: as is
    chunk: int = 32  # slices resized at a time

    def key(self) -> str:
        shaping = {
            "size": self.size,
            "hu_intercept": self.hu_intercept,
            "version": ALGORITHM_VERSION,
        }
        if self.slice_thickness is not None:  # absent otherwise: existing caches keep their key
            shaping["slice_thickness"] = self.slice_thickness
        digest = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()
        return f"{self.size}px-{digest[:12]}"


def cache_folder(cache_root: str | os.PathLike, params: PreprocessParams) -> Path:
    return Path(cache_root) / params.key()


def resize_volume(hu_source: np.ndarray, intercept: int, size: int, chunk: int = 32):
    """Stored values + intercept -> HU, every slice resized to ``size`` x ``size``
    (bilinear with antialiasing), rounded to int16. Reads ``chunk`` slices at a time.

    A non-square matrix (a 512 x 640 reconstruction, say) is first padded with air on both
    sides of its shorter axis to a square, so that the anatomy keeps its aspect ratio rather
    than being stretched."""
    import torch
    import torch.nn.functional as F

    s, h, w = hu_source.shape
    side = max(h, w)
    pad = ((0, 0), ((side - h) // 2, side - h - (side - h) // 2))
    pad += (((side - w) // 2, side - w - (side - w) // 2),)
    out = np.empty((s, size, size), dtype=np.int16)
    for z0 in range(0, s, chunk):
        block = np.asarray(hu_source[z0 : z0 + chunk], dtype=np.float32)
        if not np.isfinite(block).all():
            bad = z0 + int(np.flatnonzero(~np.isfinite(block).all(axis=(1, 2)))[0])
            raise ValueError(f"non-finite values (NaN or inf) in slice {bad}")
        if intercept:
            block += intercept
        if h != w:
            block = np.pad(block, pad, constant_values=AIR_HU)
        if (side, side) == (size, size):
            resized = block
        else:
            t = torch.from_numpy(block)[:, None]
            resized = F.interpolate(
                t, size=(size, size), mode="bilinear", align_corners=False, antialias=True
            )[:, 0].numpy()
        np.clip(np.rint(resized), -32768, 32767, out=resized)
        out[z0 : z0 + len(block)] = resized
    return out


def _source_signature(path: Path) -> dict:
    stat = path.stat()
    return {"source": str(path), "source_size": stat.st_size, "source_mtime_ns": stat.st_mtime_ns}


def _entry_state(folder: Path, idx: int, source: Path, verify: bool) -> str:
    """``complete``, ``missing``, ``stale`` (source changed) or ``corrupt``."""
    sidecar, entry = folder / f"{idx}.json", folder / f"{idx}.npy"
    if not sidecar.exists():
        return "missing"
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return "corrupt"
    signature = _source_signature(source)
    if any(meta.get(k) != v for k, v in signature.items()):
        return "stale"
    if not entry.exists() or entry.stat().st_size != meta.get("bytes"):
        return "corrupt"
    if verify:
        with open(entry, "rb") as fh:
            if zlib.crc32(fh.read()) != meta.get("crc32"):
                return "corrupt"
    return "complete"


def _source_volume(source: str, params: PreprocessParams):
    """The stored volume, the intercept to HU (None: detect it) and its slice spacing (None:
    unknown). A NIfTI file is read whole, in HU and in the cohort's orientation; a ``.npy``
    is memory-mapped as stored."""
    if is_nifti(source):
        nifti = read_nifti(source)
        hu = nifti.hu
        if params.slice_thickness is not None:
            hu = resample_slices(hu, nifti.spacing[0], params.slice_thickness)
            return hu, 0, params.slice_thickness
        return hu, 0, nifti.spacing[0]
    read_header(source)  # a FIFO, a 0-slice or 2-D array, a bool volume: refused here
    return open_volume(source), params.hu_intercept, None


def _build_entry(task) -> tuple[int, str | None]:
    idx, source, folder, params = task
    import torch

    torch.set_num_threads(1)  # one process per core; no oversubscription
    try:
        stored, intercept, spacing = _source_volume(source, params)
        if intercept is None:
            intercept = detect_intercept(stored)
            if intercept is None:
                return idx, (
                    f"{source}: no clear air peak to tell HU from raw values; pass "
                    "--hu-intercept 0 or -1024"
                )
        volume = resize_volume(stored, intercept, params.size, params.chunk)
    except (OSError, ValueError) as exc:
        return idx, f"{source}: cannot read ({exc})"
    folder = Path(folder)
    # Header and data go out in two writes; the checksum is taken on the way, not by
    # reading the file back.
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(volume))
    head = header.getvalue()
    try:
        with atomic_path(folder / f"{idx}.npy") as tmp, open(tmp, "wb") as fh:
            fh.write(head)
            fh.write(volume.data)
    except OSError as exc:  # disk full, quota, permissions: nothing half-written stays
        return idx, f"{folder / f'{idx}.npy'}: cannot write ({exc}); free space and rerun"
    meta = {
        **_source_signature(Path(source)),
        "intercept": int(intercept),
        "slice_spacing_mm": spacing,
        "shape": list(volume.shape),
        "bytes": len(head) + volume.nbytes,
        "crc32": zlib.crc32(volume.data, zlib.crc32(head)),
    }
    write_json(meta, folder / f"{idx}.json")  # last: the entry is complete from here on
    return idx, None


@dataclass
class CacheSummary:
    folder: Path
    built: list[int] = field(default_factory=list)
    complete: list[int] = field(default_factory=list)
    rebuilt: dict[int, str] = field(default_factory=dict)  # idx -> why (stale, corrupt)
    failed: dict[int, str] = field(default_factory=dict)  # idx -> message

    @property
    def nothing_to_do(self) -> bool:
        return not (self.built or self.rebuilt or self.failed)

    def describe(self) -> str:
        """One line: what this build did."""
        if self.nothing_to_do:
            return f"cache complete, nothing to do: {len(self.complete)} entries"
        return (
            f"built {len(self.built)}, rebuilt {len(self.rebuilt)}, already complete "
            f"{len(self.complete)}, failed {len(self.failed)}"
        )


def build_cache(
    volumes: dict[int, str | os.PathLike],
    cache_root: str | os.PathLike,
    params: PreprocessParams = PreprocessParams(),
    *,
    workers: int = 1,
    verify: bool = False,
    on_entry: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> CacheSummary:
    """Build (or complete) the cache for ``volumes`` (idx -> source ``.npy``)."""
    folder = cache_folder(cache_root, params)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(
        {"params": asdict(params), "algorithm_version": ALGORITHM_VERSION}, folder / "params.json"
    )
    summary = CacheSummary(folder)
    todo = []
    for idx, source in sorted(volumes.items()):
        state = _entry_state(folder, idx, Path(source), verify)
        if state == "complete":
            summary.complete.append(idx)
            continue
        if state in ("stale", "corrupt"):
            summary.rebuilt[idx] = state
        todo.append((idx, str(source), str(folder), params))
    if on_total:
        on_total(len(todo))
    results = []
    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent) as pool:
            for result in pool.map(_build_entry, todo, chunksize=1):
                results.append(result)
                if on_entry:
                    on_entry(result[0])
    else:
        for task in todo:
            results.append(_build_entry(task))
            if on_entry:
                on_entry(task[0])
    for idx, error in results:
        if error:
            summary.failed[idx] = error
        elif idx not in summary.rebuilt:
            summary.built.append(idx)
    return summary


def cohort_volumes(cohort) -> dict[int, str]:
    """idx -> volume path for every study of a cohort that has a volume."""
    paths = cohort.studies["volume_path"].dropna()
    if paths.empty:
        raise RadfusionError(f"{cohort.root}: no CT volumes to preprocess")
    return {int(i): str(p) for i, p in paths.items()}
