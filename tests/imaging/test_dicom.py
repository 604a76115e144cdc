"""DICOM import on pydicom's real CT files, and on series we alter to break the rules."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_modality_lut

from radfusion.imaging.dicom import import_dicom

CT5N = Path(get_testdata_file("DICOMDIR")).parent / "98892001" / "CT5N"


def _hu(path) -> np.ndarray:
    ds = pydicom.dcmread(path)
    return apply_modality_lut(ds.pixel_array, ds).astype(np.int16)


def _report(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "import_report.csv").fillna("")


def _series(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "series.csv")


def test_multislice_series_ordered_by_position_not_names(tmp_path):
    src = tmp_path / "in" / "deep" / "er"
    src.mkdir(parents=True)
    files = sorted(CT5N.iterdir())
    # Names that sort in the wrong order, and a shuffled copy order.
    for k, f in enumerate(files[::-1]):
        shutil.copy(f, src / f"img{k:02d}")
    import_dicom(tmp_path / "in", tmp_path / "out")
    vol = np.load(tmp_path / "out" / "1.npy")
    z = [float(pydicom.dcmread(f).ImagePositionPatient[2]) for f in files]
    expected = [files[i] for i in np.argsort(z)[::-1]]  # head (largest z) first
    assert vol.dtype == np.int16 and vol.shape == (5, 16, 16)
    for k, f in enumerate(expected):
        np.testing.assert_array_equal(vol[k], _hu(f))
    row = _series(tmp_path / "out").iloc[0]
    assert row["slices"] == 5 and row["slice_spacing"] == pytest.approx(2.5)


@pytest.mark.parametrize("name", ["693_J2KR.dcm", "693_UNCR.dcm", "693_J2KI.dcm", "CT_small.dcm"])
def test_encodings_decode_to_pydicoms_hu(tmp_path, name):
    (tmp_path / "in").mkdir()
    shutil.copy(get_testdata_file(name), tmp_path / "in" / "x")
    import_dicom(tmp_path / "in", tmp_path / "out")
    vol = np.load(tmp_path / "out" / "1.npy")
    np.testing.assert_array_equal(vol[0], _hu(get_testdata_file(name)))
    ds = pydicom.dcmread(get_testdata_file(name))
    slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.RescaleIntercept)
    assert intercept != 0  # so HU and stored values differ, and the rescale is tested
    np.testing.assert_array_equal(vol[0], ds.pixel_array * slope + intercept)


def test_lossless_jpeg2000_equals_uncompressed(tmp_path):
    for name in ("693_J2KR.dcm", "693_UNCR.dcm"):
        (tmp_path / name).mkdir()
        shutil.copy(get_testdata_file(name), tmp_path / name / "x")
        import_dicom(tmp_path / name, tmp_path / f"out-{name}")
    np.testing.assert_array_equal(
        np.load(tmp_path / "out-693_J2KR.dcm" / "1.npy"),
        np.load(tmp_path / "out-693_UNCR.dcm" / "1.npy"),
    )


def _copy_ct5n(folder: Path, **changes) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k, f in enumerate(sorted(CT5N.iterdir())):
        ds = pydicom.dcmread(f)
        for key, value in changes.items():
            if callable(value):
                value(ds, k)
            else:
                setattr(ds, key, value)
        path = folder / f"s{k}.dcm"
        ds.save_as(path)
        out.append(path)
    return out


def test_what_is_not_an_axial_ct_series_is_skipped_with_a_reason(tmp_path):
    src = tmp_path / "in"
    _copy_ct5n(src / "mr", Modality="MR", SeriesInstanceUID="1.2.3.1")
    _copy_ct5n(
        src / "scout", ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"], SeriesInstanceUID="1.2.3.2"
    )
    _copy_ct5n(src / "sc", SOPClassUID="1.2.840.10008.5.1.4.1.1.7", SeriesInstanceUID="1.2.3.3")
    _copy_ct5n(
        src / "sag", ImageOrientationPatient=[0, 1, 0, 0, 0, -1], SeriesInstanceUID="1.2.3.4"
    )

    def tilt(ds, k):
        if k == 2:
            ds.ImageOrientationPatient = [1, 0, 0, 0, 0.9, 0.43589]

    _copy_ct5n(src / "mixed", ImageOrientationPatient=tilt, SeriesInstanceUID="1.2.3.5")

    def spacing(ds, k):
        if k == 1:
            ds.PixelSpacing = [0.7, 0.7]

    _copy_ct5n(src / "spacing", PixelSpacing=spacing, SeriesInstanceUID="1.2.3.6")
    shutil.copy(get_testdata_file("eCT_Supplemental.dcm"), src / "enhanced.dcm")
    result = import_dicom(src, tmp_path / "out")
    assert result.imported == []
    reasons = " ".join(_report(tmp_path / "out")["reason"])
    for expected in (
        "is not CT",
        "localizer",
        "secondary capture",
        "not axial",
        "inconsistent ImageOrientationPatient",
        "inconsistent PixelSpacing",
        "multi-frame",
    ):
        assert expected in reasons, expected
    assert not list((tmp_path / "out").glob("*.npy"))


def test_gaps_and_duplicates_import_with_warnings(tmp_path):
    src = tmp_path / "in"
    files = _copy_ct5n(src / "gap", SeriesInstanceUID="1.2.3.7")
    files[2].unlink()  # a missing slice in the middle
    for name in ("693_J2KR.dcm", "693_UNCR.dcm"):  # the same slice twice
        shutil.copy(get_testdata_file(name), src / name)
    result = import_dicom(src, tmp_path / "out", keep_paths=True)
    assert len(result.imported) == 2
    report = _report(tmp_path / "out")
    gap = report[report["reason"].str.contains("gap in slice positions")]
    dup = report[report["reason"].str.contains("already-filled position")]
    assert len(gap) == 1 and len(dup) == 1
    assert (gap["action"] == "imported with warning").all()
    assert "/gap/" in gap["reason"].iloc[0] or "/gap/" in gap["path"].iloc[0]


def test_corrupt_truncated_and_undecodable_files_are_reported(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "junk.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 40)
    data = Path(get_testdata_file("693_UNCR.dcm")).read_bytes()
    (src / "truncated.dcm").write_bytes(data[: len(data) // 2])
    files = _copy_ct5n(src / "odd", SeriesInstanceUID="1.2.3.8")
    ds = pydicom.dcmread(files[0])
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG-2: no decoder
    ds.PixelData = encapsulate([b"\x00" * 16])
    ds.save_as(files[0], enforce_file_format=True)
    result = import_dicom(src, tmp_path / "out", keep_paths=True)
    report = _report(tmp_path / "out")
    text = " ".join(report["path"]) + " " + " ".join(report["reason"])
    assert "junk.dcm" in text
    assert "truncated.dcm" in text and "cannot decode" in text
    odd = report[report["series_uid"] == "1.2.3.8"]
    assert (odd["action"] == "skipped").all() and str(files[0]) in odd["reason"].iloc[0]
    assert not list((tmp_path / "out").glob("*.npy"))
    assert not list((tmp_path / "out").glob(".tmp-*"))
    assert result.imported == []


def test_no_patient_identifiers_in_outputs(tmp_path):
    _copy_ct5n(
        tmp_path / "in", PatientName="Doe^Jane", PatientID="PID-98765", PatientBirthDate="19451231"
    )
    import_dicom(tmp_path / "in", tmp_path / "out")
    for path in (tmp_path / "out").iterdir():
        blob = path.read_bytes()
        for secret in (b"Doe", b"Jane", b"PID-98765", b"19451231"):
            assert secret not in blob, (path.name, secret)


def test_parallel_import_equals_serial(tmp_path):
    for k in range(3):
        _copy_ct5n(tmp_path / "in" / f"s{k}", SeriesInstanceUID=f"1.2.3.9.{k}")
    one = import_dicom(tmp_path / "in", tmp_path / "one", workers=1)
    two = import_dicom(tmp_path / "in", tmp_path / "two", workers=2)
    assert [s.series_uid for s in one.imported] == [s.series_uid for s in two.imported]
    for k in (1, 2, 3):
        np.testing.assert_array_equal(
            np.load(tmp_path / "one" / f"{k}.npy"), np.load(tmp_path / "two" / f"{k}.npy")
        )


def test_each_file_is_read_once_and_the_spool_is_removed(tmp_path, monkeypatch):
    for k in range(2):
        _copy_ct5n(tmp_path / "in" / f"s{k}", SeriesInstanceUID=f"1.2.3.10.{k}")
    (tmp_path / "in" / "notes.txt").write_text("not DICOM")
    reads = []
    real = pydicom.dcmread
    monkeypatch.setattr(
        pydicom, "dcmread", lambda path, **kw: reads.append(path) or real(path, **kw)
    )
    result = import_dicom(tmp_path / "in", tmp_path / "out", workers=1)
    assert len(result.imported) == 2
    files = [str(p) for p in (tmp_path / "in").rglob("*") if p.is_file()]
    assert sorted(map(str, reads)) == sorted(files)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "1.npy",
        "2.npy",
        "import_report.csv",
        "series.csv",
    ]


@pytest.mark.parametrize(
    ("signed", "bits", "slope", "intercept", "garbage"),
    [
        (0, 12, 1, -1024, True),  # unused high bits set: cleared, as pydicom does
        (1, 12, 1, -1024, True),  # ... or sign-extended
        (0, 16, 1, -1024, False),  # values past int16 once rescaled: clipped
        (1, 16, 0.5, -1024.5, False),  # a fractional rescale: rounded
    ],
)
def test_uncompressed_pixels_read_in_place_equal_pydicoms_hu(
    tmp_path, signed, bits, slope, intercept, garbage
):
    """512x512 uncompressed slices are read from the file straight into the volume; the
    values equal pydicom's own decoding and rescale (clipped to int16, rounded)."""
    rng = np.random.default_rng(bits + signed)
    ds = pydicom.dcmread(get_testdata_file("693_UNCR.dcm"))
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1)) if signed else (0, 2**bits)
    values = rng.integers(low, high, size=(512, 512), dtype=np.int64)
    raw = values.astype(np.int16 if signed else np.uint16)
    if garbage:  # junk above BitsStored, which a reader must ignore
        raw = (raw.view(np.uint16) | np.uint16(0xA000)).view(raw.dtype)
    ds.PixelRepresentation, ds.BitsStored, ds.HighBit = signed, bits, bits - 1
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = raw.tobytes()
    (tmp_path / "in").mkdir()
    ds.save_as(tmp_path / "in" / "slice.dcm")
    import_dicom(tmp_path / "in", tmp_path / "out")
    vol = np.load(tmp_path / "out" / "1.npy")
    theirs = pydicom.dcmread(tmp_path / "in" / "slice.dcm")
    expected = np.clip(np.rint(apply_modality_lut(theirs.pixel_array, theirs)), -32768, 32767)
    np.testing.assert_array_equal(vol[0], expected.astype(np.int16))
    np.testing.assert_array_equal(theirs.pixel_array, values)  # the junk really is ignored


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",
        "693_UNCR.dcm",
        "693_J2KR.dcm",
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
    ],
)
def test_header_values_read_from_the_bytes_equal_pydicoms(name):
    """The import's header values, read from the raw elements (explicit and implicit VR,
    little and big endian), equal pydicom's own conversion of the same file."""
    from radfusion.imaging.dicom_header import HEADER_VR, MULTI_VALUED, plain_header

    path = get_testdata_file(name)
    ours = plain_header(pydicom.dcmread(path, defer_size=4096))
    theirs = pydicom.dcmread(path)
    checked = 0
    for keyword, vr in HEADER_VR.items():
        if keyword not in theirs:
            assert keyword not in ours, keyword
            continue
        value = theirs.data_element(keyword).value
        items = list(value) if keyword in MULTI_VALUED else [value]
        plain = [str(v) if vr in ("UI", "CS") else float(v) for v in items]
        assert ours.get(keyword) == (plain if keyword in MULTI_VALUED else plain[0]), keyword
        checked += 1
    assert checked >= 8
    assert ours.get("TransferSyntaxUID") == theirs.file_meta.TransferSyntaxUID
