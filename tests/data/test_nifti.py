"""NIfTI volumes read into the cohort convention, checked on files other tools wrote (nibabel's
own test images, whose affines are LAS, RAS and oblique) against nibabel's canonical (RAS+)
reorientation, flipped and transposed by hand."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.testing import data_path

from radfusion.data.nifti import nifti_header, read_nifti
from radfusion.imaging.resample import resample_slices

SHIPPED_3D = ["anatomical.nii", "reoriented_anat_moved.nii", "standard.nii.gz"]
SHIPPED_4D = ["example4d.nii.gz", "functional.nii"]


def expected_from_canonical(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """RAS+ canonical data[i, j, k] (i to the Right, j Anterior, k Superior) -> ours:
    slices from Superior down, rows from Anterior back, columns from the Right to the Left."""
    canonical = nib.as_closest_canonical(nib.load(path))
    data = np.asarray(canonical.get_fdata(), dtype=np.float64)
    ours = data[::-1, ::-1, ::-1].transpose(2, 1, 0)
    zooms = canonical.header.get_zooms()[:3]
    return np.rint(ours), (float(zooms[2]), float(zooms[1]), float(zooms[0]))


@pytest.mark.parametrize("name", SHIPPED_3D)
def test_shipped_images_match_nibabels_canonical_orientation(name):
    path = Path(data_path) / name
    expected, spacing = expected_from_canonical(path)
    volume = read_nifti(path)
    assert volume.hu.dtype == np.int16
    assert volume.hu.shape == expected.shape
    np.testing.assert_array_equal(volume.hu, expected)
    assert volume.spacing == pytest.approx(spacing)
    assert nifti_header(path) == (expected.shape, pytest.approx(spacing))
    assert volume.source_axcodes == nib.aff2axcodes(nib.load(path).affine)


@pytest.mark.parametrize("name", SHIPPED_4D)
def test_a_4d_series_is_refused_in_one_line(name):
    with pytest.raises(ValueError, match="4-D series holds several volumes"):
        read_nifti(Path(data_path) / name)


def _write(tmp_path: Path, data: np.ndarray, affine: np.ndarray, name="ct.nii.gz", **scale):
    image = nib.Nifti1Image(data, affine)
    if scale:
        image.header.set_slope_inter(scale["slope"], scale["inter"])
    path = tmp_path / name
    nib.save(image, path)
    return path


def test_lps_and_foot_first_files_give_the_same_volume(tmp_path):
    """One anatomy written two ways: RAS with slices from the feet up, and DICOM's LPS with
    rows and columns swapped. Both read back as the same head-first axial volume."""
    rng = np.random.default_rng(0)
    ours = rng.integers(-1000, 2000, size=(6, 5, 4)).astype(np.int16)  # (S->I, A->P, R->L)
    # RAS+ voxel order: i to the Right (our columns reversed), j Anterior, k Superior.
    ras = ours.transpose(2, 1, 0)[::-1, ::-1, ::-1]
    ras_path = _write(tmp_path, np.ascontiguousarray(ras), np.diag([0.7, 0.8, 2.5, 1]), "ras.nii")
    # LPS+ with axes (j, i, k): voxel axis 0 -> Posterior, 1 -> Left, 2 -> Superior.
    lps = ours.transpose(1, 2, 0)[:, :, ::-1]
    affine = np.array([[0, -0.7, 0, 0], [-0.8, 0, 0, 0], [0, 0, 2.5, 0], [0, 0, 0, 1]])
    lps_path = _write(tmp_path, np.ascontiguousarray(lps), affine, "lps.nii.gz")
    for path in (ras_path, lps_path):
        volume = read_nifti(path)
        np.testing.assert_array_equal(volume.hu, ours)
        assert volume.spacing == pytest.approx((2.5, 0.8, 0.7))


def test_scaling_slope_and_intercept_give_hounsfield_units(tmp_path):
    stored = np.arange(24, dtype=np.uint16).reshape(2, 3, 4) * 100  # raw scanner values
    path = _write(tmp_path, stored, np.eye(4), slope=1.0, inter=-1024.0)
    hu = read_nifti(path).hu
    assert hu.min() == -1024 and hu.max() == 2300 - 1024
    path = _write(tmp_path, stored, np.eye(4), "half.nii", slope=0.5, inter=-1000.0)
    canonical = np.rint(nib.load(path).get_fdata())
    assert np.sort(read_nifti(path).hu.ravel()).tolist() == np.sort(canonical.ravel()).tolist()


def test_bad_files_are_refused_with_what_is_wrong(tmp_path):
    truncated = tmp_path / "cut.nii.gz"
    good = _write(tmp_path, np.zeros((8, 8, 8), np.int16), np.eye(4), "good.nii")
    truncated.write_bytes(gzip.compress(good.read_bytes()[:400]))
    with pytest.raises(ValueError, match="not a readable NIfTI"):
        read_nifti(truncated)
    junk = tmp_path / "junk.nii"
    junk.write_bytes(b"not a nifti file at all" * 20)
    with pytest.raises(ValueError, match="not a readable NIfTI"):
        read_nifti(junk)
    flat = tmp_path / "flat.nii"  # the sform's third row zeroed: the slices point nowhere
    header = bytearray(_write(tmp_path, np.zeros((4, 4, 4), np.int16), np.eye(4)).read_bytes())
    header = bytearray(gzip.decompress(header))
    header[312:328] = bytes(16)  # srow_z in the NIfTI-1 header
    flat.write_bytes(bytes(header))
    with pytest.raises(ValueError, match="singular"):
        read_nifti(flat)
    nan = _write(tmp_path, np.full((2, 2, 2), np.nan, np.float32), np.eye(4), "nan.nii")
    with pytest.raises(ValueError, match="non-finite"):
        read_nifti(nan)
    big = _write(tmp_path, np.full((2, 2, 2), 1e6, np.float32), np.eye(4), "big.nii")
    with pytest.raises(ValueError, match="do not fit int16"):
        read_nifti(big)


def test_resampling_slices_matches_numpys_linear_interpolation():
    rng = np.random.default_rng(1)
    volume = rng.integers(-1000, 1000, size=(11, 3, 2)).astype(np.int16)
    out = resample_slices(volume, spacing=2.0, thickness=1.25)
    z_old = np.arange(11) * 2.0
    z_new = np.arange(0, 20 + 1e-9, 1.25)
    expected = np.empty((len(z_new), 3, 2))
    for r in range(3):
        for c in range(2):
            expected[:, r, c] = np.interp(z_new, z_old, volume[:, r, c].astype(float))
    np.testing.assert_array_equal(out, np.rint(expected).astype(np.int16))
    assert resample_slices(volume, 2.0, 2.0) is not None
    np.testing.assert_array_equal(resample_slices(volume, 2.0, 2.0), volume)
    with pytest.raises(ValueError, match="must be positive"):
        resample_slices(volume, 0.0, 1.0)


def test_a_nifti_volume_enters_the_cache_in_hu_and_head_first(tmp_path):
    from radfusion.imaging.preprocess import PreprocessParams, build_cache

    ours = np.full((30, 16, 16), -1000, np.int16)
    ours[:10] = 300  # a bright block at the head end
    ras = np.ascontiguousarray(ours.transpose(2, 1, 0)[::-1, ::-1, ::-1]) + 1024
    path = _write(
        tmp_path, ras.astype(np.uint16), np.diag([0.7, 0.7, 2.0, 1]), slope=1, inter=-1024
    )
    params = PreprocessParams(size=8, slice_thickness=1.0)
    summary = build_cache({3: path}, tmp_path / "cache", params)
    assert not summary.failed, summary.failed
    entry = np.load(summary.folder / "3.npy")
    assert entry.shape == (59, 8, 8)  # 29 gaps of 2 mm at 1 mm
    assert (entry[:19] == 300).all() and (entry[20:] == -1000).all()  # slice 18 -> z = 18 mm
    import json

    meta = json.loads((summary.folder / "3.json").read_text())
    assert meta["slice_spacing_mm"] == 1.0 and meta["intercept"] == 0
    assert meta["source"] == str(path)
    assert PreprocessParams(size=8).key() != params.key()
