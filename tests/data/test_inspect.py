"""The INSPECT layout: a synthetic cohort loads behind the same Cohort as a RadFusion one, every
problem of a broken copy is reported in one validation, tasks drop their censored studies, and
the older master file reads the same."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from radfusion.config import DataSection
from radfusion.data.cohort import Cohort, load_outcomes, validate_cohort
from radfusion.data.inspect import INSPECT_TASKS, PREDICTION_OFFSET
from radfusion.data.nifti import read_nifti
from radfusion.synthetic.inspect_writer import CT_FOLDER, _affine


def test_a_synthetic_inspect_cohort_loads_as_a_cohort(inspect_cohort):
    report = validate_cohort(inspect_cohort)
    assert report.ok, report.errors
    cohort = report.cohort
    assert cohort.layout == "inspect" and cohort.task == "PE"
    assert cohort.task_names == list(INSPECT_TASKS)
    labels = pd.read_csv(inspect_cohort / "Final_labels.csv").set_index("impression_id")
    assert sorted(cohort.studies.index) == sorted(labels.index)  # PE is never censored
    expect = (labels["PE"] == True).astype(int)  # noqa: E712  (the CSV's strings read as bools)
    assert cohort.studies["label"].equals(expect.loc[cohort.studies.index].rename("label"))
    splits = pd.read_csv(inspect_cohort / "Final_splits.csv").set_index("impression_id")
    mapped = splits["split"].map({"train": "train", "valid": "val", "test": "test"})
    assert (cohort.studies["split"] == mapped.loc[cohort.studies.index]).all()
    # image_id = patient_time: the MEDS subject, and the prediction one day before the study
    row = cohort.studies.iloc[0]
    patient, when = row["image_id"].split("_", 1)
    assert row["subject_id"] == int(patient)
    assert row["prediction_time"] == pd.Timestamp(when) - PREDICTION_OFFSET
    assert set(cohort.studies["gender"]) <= {"Female", "Male"}
    assert set(cohort.studies["ethnicity"]) <= {"Hispanic", "Not Hispanic"}
    assert cohort.studies["age"].notna().all()


@pytest.mark.parametrize("kind", [0, 1, 2])
def test_each_written_orientation_reads_back_head_first(tmp_path, kind):
    ours = np.random.default_rng(kind).integers(-1000, 1000, (7, 5, 3)).astype(np.int16)
    order, affine = _affine(kind, (2.0, 0.8, 0.7))
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(order(ours)), affine), path)
    volume = read_nifti(path)
    np.testing.assert_array_equal(volume.hu, ours)
    assert volume.spacing == pytest.approx((2.0, 0.8, 0.7))


def test_a_task_drops_its_censored_studies_and_counts_them(inspect_cohort):
    cohort = Cohort.load(inspect_cohort)
    labels = pd.read_csv(inspect_cohort / "Final_labels.csv", dtype=str)
    labels = labels.set_index(labels["impression_id"].astype(int))
    task = "12_month_PH"
    censored = labels.index[labels[task] == "Censored"]
    assert len(censored)  # the generator censors the long horizons
    ph = cohort.for_task(task)
    assert set(ph.studies.index) == set(labels.index) - set(censored)
    assert ph.studies["label"].equals(
        (labels.loc[ph.studies.index, task] == "True").astype(np.int64).rename("label")
    )
    assert any(w.startswith(f"task {task}: {len(censored)} censored") for w in ph.warnings)
    # another task from this one starts again from every study
    again = ph.for_task("PE")
    assert len(again.studies) == len(labels)
    with pytest.raises(Exception, match="did you mean '12_month_PH'"):
        cohort.for_task("12_month_ph")


def test_load_outcomes_reads_an_inspect_task_without_the_volumes(inspect_cohort):
    studies = load_outcomes(inspect_cohort, DataSection(task="6_month_mortality"))
    full = Cohort.load(inspect_cohort).for_task("6_month_mortality").studies
    assert studies.index.equals(full.index)
    assert studies["label"].equals(full["label"])
    assert "volume_path" not in studies or studies["volume_path"].isna().all()


def broken_copy(inspect_cohort, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(inspect_cohort, root)
    meta = pd.read_csv(root / "Final_metadata.csv")
    labels = pd.read_csv(root / "Final_labels.csv", dtype=str)
    splits = pd.read_csv(root / "Final_splits.csv")
    labels.loc[3, "6_month_mortality"] = "Maybe"
    # one patient's two studies in two splits
    meta["patient"] = meta["image_id"].str.split("_").str[0]
    twice = meta[meta["patient"].duplicated(keep=False)]
    first, second = twice.groupby("patient")["impression_id"].apply(list).iloc[0][:2]
    splits.loc[splits["impression_id"] == first, "split"] = "train"
    splits.loc[splits["impression_id"] == second, "split"] = "test"
    # a volume that does not open, one that is gone, one without a label
    files = sorted((root / CT_FOLDER).glob("*.nii.gz"))
    files[0].write_bytes(files[0].read_bytes()[:200])
    files[1].unlink()
    shutil.copy(files[2], root / CT_FOLDER / "99999_2019-01-01 00:00:00.nii.gz")
    meta.drop(columns="patient").to_csv(root / "Final_metadata.csv", index=False)
    labels.to_csv(root / "Final_labels.csv", index=False)
    splits.to_csv(root / "Final_splits.csv", index=False)
    return root, files, (first, second)


def test_every_problem_of_a_broken_copy_is_reported_at_once(inspect_cohort, tmp_path):
    root, files, _ = broken_copy(inspect_cohort, tmp_path)
    report = validate_cohort(root)
    assert not report.ok
    text = "\n".join(report.errors)
    assert "Final_labels.csv: column 6_month_mortality has value(s) Maybe on line(s) 5" in text
    assert "more than one split" in text
    assert f"{files[0]}: not a readable NIfTI file" in text
    warnings = "\n".join(report.warnings)
    assert "1 labelled stud(ies) without a volume (image_id" in warnings
    assert "1 NIfTI volume(s) without a labelled study (99999_2019-01-01 00:00:00)" in warnings


def test_duplicated_studies_and_unlinked_subjects(inspect_cohort, tmp_path):
    root = tmp_path / "dup"
    shutil.copytree(inspect_cohort, root)
    meta = pd.read_csv(root / "Final_metadata.csv")
    pd.concat([meta, meta.iloc[[0]]]).to_csv(root / "Final_metadata.csv", index=False)
    report = validate_cohort(root)
    assert any("on more than one row" in e and "Final_metadata.csv" in e for e in report.errors)

    root = tmp_path / "unlinked"
    shutil.copytree(inspect_cohort, root)
    meta = pd.read_csv(root / "Final_metadata.csv")
    old = meta.loc[0, "image_id"]
    new = "77777_" + old.split("_", 1)[1]  # a patient the EHR does not know
    meta.loc[0, "image_id"] = new
    meta.to_csv(root / "Final_metadata.csv", index=False)
    (root / CT_FOLDER / old).rename(root / CT_FOLDER / new)
    report = validate_cohort(root)
    assert report.ok, report.errors
    assert any("1 stud(ies) without a MEDS subject" in w for w in report.warnings)
    assert report.cohort.studies.loc[meta.loc[0, "impression_id"], "gender"] == "Unknown"


def test_the_older_master_file_reads_the_same_studies(inspect_cohort, tmp_path):
    root = tmp_path / "master"
    shutil.copytree(inspect_cohort, root)
    meta = pd.read_csv(root / "Final_metadata.csv").set_index("impression_id")
    labels = pd.read_csv(root / "Final_labels.csv", dtype=str).set_index("impression_id")
    labels.index = labels.index.astype(int)
    splits = pd.read_csv(root / "Final_splits.csv").set_index("impression_id")
    image = meta["image_id"].str.removesuffix(".nii.gz")
    master = pd.DataFrame(
        {
            "patient_id": image.str.split("_").str[0],
            "procedure_time": image.str.split("_").str[1],
            "split": splits.loc[meta.index, "split"],
            "pe_positive_nlp": labels.loc[meta.index, "PE"],
            **{
                t: labels.loc[meta.index, t].replace("Censored", "Censor")
                for t in INSPECT_TASKS[1:]
            },
        }
    )
    for name in ("Final_metadata.csv", "Final_labels.csv", "Final_splits.csv"):
        (root / name).unlink()
    master.to_csv(root / "cohort_0.2.0_master_file_anon.csv", index=False)
    report = validate_cohort(root)
    assert report.ok, report.errors
    original = Cohort.load(inspect_cohort)
    by_image = report.cohort.studies.set_index("image_id")["label"].sort_index()
    expect = original.studies.set_index("image_id")["label"].sort_index()
    assert by_image.equals(expect)
    counts = report.cohort.tasks.notna().sum()
    assert counts.equals(original.tasks.notna().sum())  # "Censor" reads as censored


def test_the_2025_release_tsv_files_read_the_same_studies(inspect_cohort, tmp_path):
    """INSPECT's later release ships TSVs: a study mapping (impression_id -> image_id) beside
    a metadata table of DICOM columns without image_id, labels and splits."""
    root = tmp_path / "v2"
    shutil.copytree(inspect_cohort, root)
    meta = pd.read_csv(root / "Final_metadata.csv")
    labels = pd.read_csv(root / "Final_labels.csv", dtype=str)
    meta[["impression_id", "image_id"]].to_csv(
        root / "study_mapping_20250611.tsv", sep="\t", index=False
    )
    dicom = meta.drop(columns="image_id").assign(StudyDescription="CTA CHEST, PE PROTOCOL")
    dicom.to_csv(root / "study_metadata_20250611.tsv", sep="\t", index=False)
    labels.replace({"True": "1", "False": "0"}).to_csv(
        root / "labels_20250611.tsv", sep="\t", index=False
    )
    pd.read_csv(root / "Final_splits.csv").to_csv(
        root / "splits_20250611.tsv", sep="\t", index=False
    )
    for name in ("Final_metadata.csv", "Final_labels.csv", "Final_splits.csv"):
        (root / name).unlink()
    report = validate_cohort(root)
    assert report.ok, report.errors
    original = Cohort.load(inspect_cohort)
    assert (
        report.cohort.studies["label"].sort_index().equals(original.studies["label"].sort_index())
    )
    assert report.cohort.tasks.sort_index().equals(original.tasks.sort_index())


def test_one_phantom_through_either_layout_is_the_same_hu_volume(tmp_path):
    """The INSPECT writer's NIfTI files (three voxel orders, raw-stored halves) read back as
    exactly the volumes the RadFusion layout of the same seed stores as .npy."""
    from radfusion.synthetic.inspect_writer import write_inspect_cohort
    from radfusion.synthetic.writer import write_synthetic_cohort

    write_synthetic_cohort(tmp_path / "rf", 60, seed=5, size=16, slice_range=(24, 28))
    design = write_inspect_cohort(tmp_path / "in", 60, seed=5, size=16, slice_range=(24, 28))
    release, inspect = Cohort.load(tmp_path / "rf"), Cohort.load(tmp_path / "in")
    assert set(design["orientation"]) == {0, 1, 2}
    for row in design.itertuples():
        np.testing.assert_array_equal(
            inspect.volume_hu(row.impression_id), release.volume_hu(row.idx)
        )
        assert (
            inspect.studies.at[row.impression_id, "label"] == release.studies.at[row.idx, "label"]
        )
