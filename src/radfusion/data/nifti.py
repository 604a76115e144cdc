"""CT volumes from NIfTI files (``.nii``, ``.nii.gz``), as INSPECT ships them, read with nibabel.

A NIfTI file's voxel order is whatever its writer chose: the affine says where each voxel axis
points. :func:`read_nifti` reorients every volume to the cohort convention, the one a DICOM axial
series displays in and :mod:`radfusion.imaging.dicom` writes:

* axis 0, slices: head first (superior to inferior);
* axis 1, rows: anterior to posterior;
* axis 2, columns: from the patient's right to their left;

with values in Hounsfield units (the header's ``scl_slope`` and ``scl_inter`` applied) and the
spacing of each output axis in millimetres. The reorientation is nibabel's own
(``io_orientation`` to the closest axis-aligned frame), so an oblique acquisition is turned to
the nearest axial frame, never resampled (the preprocessing may then resample the slices to a
target thickness: :func:`radfusion.imaging.resample.resample_slices`).

It lives in ``data`` beside the ``.npy`` reader because a cohort reads every volume's header
when it loads, and ``data`` imports no model package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "COHORT_AXCODES",
    "NIFTI_SUFFIXES",
    "NiftiVolume",
    "is_nifti",
    "nifti_header",
    "read_nifti",
]

#: Where each axis of a cohort volume points, in nibabel's axis codes (each code names the
#: direction the index increases towards): slices towards Inferior, rows towards Posterior,
#: columns towards the patient's Left.
COHORT_AXCODES = ("I", "P", "L")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
HU_RANGE = (-32768, 32767)


def is_nifti(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


@dataclass(frozen=True)
class NiftiVolume:
    hu: np.ndarray  # int16, (slices, rows, cols) in the cohort convention
    spacing: tuple[float, float, float]  # mm along slices, rows, cols
    source_axcodes: tuple[str, str, str]  # where the file's own voxel axes pointed


def _load(path: Path):
    import nibabel as nib

    try:
        image = nib.load(path)
    except Exception as exc:  # nibabel raises ImageFileError, OSError, EOFError, zlib errors...
        raise ValueError(f"not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise ValueError(f"is a {type(image).__name__}, not a NIfTI-1 or NIfTI-2 image")
    shape = image.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise ValueError(
            f"has shape {image.shape}; a CT volume is 3-D (a 4-D series holds several volumes: "
            "split it into one file per volume)"
        )
    if 0 in shape:
        raise ValueError(f"has shape {image.shape}: no voxels")
    affine = image.affine
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ValueError("has a singular or non-finite affine; its orientation is unknown")
    return image, shape


def nifti_header(path: str | os.PathLike) -> tuple[tuple[int, int, int], tuple[float, ...]]:
    """The volume's shape and spacing in the cohort convention, from the header alone."""
    image, shape = _load(Path(path))
    transform = _transform(image.affine)
    order = transform[:, 0].astype(int)
    out_shape = [0, 0, 0]
    out_spacing = [0.0, 0.0, 0.0]
    zooms = image.header.get_zooms()[:3]
    for axis in range(3):
        out_shape[order[axis]] = int(shape[axis])
        out_spacing[order[axis]] = float(zooms[axis])
    return tuple(out_shape), tuple(out_spacing)


def _transform(affine: np.ndarray) -> np.ndarray:
    from nibabel import orientations

    return orientations.ornt_transform(
        orientations.io_orientation(affine), orientations.axcodes2ornt(COHORT_AXCODES)
    )


def read_nifti(path: str | os.PathLike) -> NiftiVolume:
    """Read one NIfTI CT volume in the cohort convention, in HU, as int16.

    Raises ``ValueError`` naming what is wrong (unreadable, not 3-D, no orientation,
    non-finite values, HU outside int16)."""
    from nibabel import orientations

    path = Path(path)
    image, shape = _load(path)
    proxy = image.dataobj
    slope, inter = proxy.slope, proxy.inter
    slope = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope)
    inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
    try:
        raw = np.asanyarray(proxy.get_unscaled()).reshape(shape)
    except (OSError, EOFError, ValueError) as exc:  # truncated, or a damaged gzip stream
        raise ValueError(f"not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc
    if raw.dtype.kind not in "iuf":
        raise ValueError(f"has data type {raw.dtype}; expected integers or floats")
    if raw.dtype.kind == "f" and not np.isfinite(raw).all():
        raise ValueError("holds non-finite values (NaN or inf)")
    raw_ends = np.array([raw.min(), raw.max()], dtype=np.float64)
    ends = raw_ends * slope + inter
    low, high = float(ends.min()), float(ends.max())
    if low < HU_RANGE[0] - 0.5 or high > HU_RANGE[1] + 0.5:
        raise ValueError(f"values {low:.0f}..{high:.0f} HU do not fit int16")
    stored_fit = HU_RANGE[0] <= raw_ends[0] and raw_ends[1] <= HU_RANGE[1]
    if slope == 1.0 and inter.is_integer() and raw.dtype.kind in "iu" and stored_fit:
        # Exact, and never a float32 copy of a 400-slice volume: both ranges fit int16.
        hu = raw.astype(np.int16)
        hu += np.int16(inter)
    else:
        hu = np.rint(raw.astype(np.float32) * np.float32(slope) + np.float32(inter))
    transform = _transform(image.affine)
    oriented = orientations.apply_orientation(hu, transform)
    zooms = image.header.get_zooms()[:3]
    spacing = [0.0, 0.0, 0.0]
    for axis, (target, _) in enumerate(transform):
        spacing[int(target)] = float(zooms[axis])
    source = tuple(str(c) for c in orientations.aff2axcodes(image.affine))
    return NiftiVolume(
        hu=np.ascontiguousarray(oriented, dtype=np.int16),
        spacing=(spacing[0], spacing[1], spacing[2]),
        source_axcodes=source,  # type: ignore[arg-type]
    )
