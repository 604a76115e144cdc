from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from pydicom.data import get_testdata_file

from radfusion.data import Cohort
from radfusion.errors import RadfusionError
from radfusion.pipeline.predict import predict_study, run_checkpoint

CT5N = Path(get_testdata_file("DICOMDIR")).parent / "98892001" / "CT5N"  # 5 slices


def _study(data, split="test"):
    cohort = Cohort.load(data)
    idx = int(cohort.split(split).index[0])
    return cohort, idx


def test_a_study_scores_as_in_the_benchmark(benchmark_run, tmp_path):
    data, run, _ = benchmark_run
    cohort, idx = _study(data)
    # The EHR row, as a user would hand it over: the release tables' columns for one study.
    row = tmp_path / "row.csv"
    cohort.features().loc[[idx]].to_csv(row, index=False)
    score = predict_study(run, volume=cohort.studies.loc[idx, "volume_path"], ehr_row=row)
    image = pd.read_csv(run / "predictions" / "image.csv").set_index("idx")
    ehr = pd.read_csv(run / "predictions" / "ehr.csv").set_index("idx")
    thresholds = pd.read_csv(run / "eval" / "thresholds.csv").set_index("model")["threshold"]
    assert score.image_prob == pytest.approx(image.loc[idx, "prob"], abs=1e-6)
    assert score.best_window == (image.loc[idx, "best_start"], image.loc[idx, "best_end"])
    assert score.ehr_prob == pytest.approx(ehr.loc[idx, "prob"], abs=1e-6)
    assert score.fused_prob == pytest.approx((score.image_prob + score.ehr_prob) / 2)
    assert score.model == "fusion_mean"
    assert score.threshold == pytest.approx(thresholds["fusion_mean"], abs=1e-6)
    assert score.decision == (score.fused_prob >= score.threshold)
    slices = pd.read_csv(run / "predictions" / "slicenet.csv").set_index("idx")
    s = score.slicenet
    assert s["prob"] == pytest.approx(slices.loc[idx, "prob"], abs=1e-6)
    assert s["best_window"] == (slices.loc[idx, "best_start"], slices.loc[idx, "best_end"])
    assert s["fused_prob"] == pytest.approx((s["prob"] + score.ehr_prob) / 2)
    assert s["model"] == "fusion_slicenet_mean"
    assert s["threshold"] == pytest.approx(thresholds["fusion_slicenet_mean"], abs=1e-6)
    assert s["decision"] == (s["fused_prob"] >= s["threshold"])


def test_a_copied_run_scores_with_its_own_recorded_checkpoints(benchmark_run, tmp_path):
    # The stage records hold absolute paths; a copy (or a moved run) must use its own files,
    # and the recorded one, not a guess: SliceNet's is the final epoch's (select: last).
    _, run, _ = benchmark_run
    copy = shutil.copytree(run, tmp_path / "copy")
    for model, prefix in (("image", "best-"), ("slicenet", "epoch-")):
        recorded = Path(json.loads((run / "stages" / f"{model}.json").read_text())["checkpoint"])
        found = run_checkpoint(copy, model)
        assert found == copy / model / "checkpoints" / recorded.name
        assert found.name.startswith(prefix)


def test_without_ehr_the_image_model_decides_and_says_so(benchmark_run):
    data, run, _ = benchmark_run
    cohort, idx = _study(data)
    score = predict_study(run, volume=cohort.studies.loc[idx, "volume_path"])
    assert score.ehr_prob is None and score.fused_prob is None and score.model == "image"
    assert score.decision == (score.image_prob >= score.threshold)
    assert "no EHR given" in score.notes[0]
    assert any("group thresholds" in note and "not applied" in note for note in score.notes)
    start, end = score.best_window
    assert end - start == 23 and start >= 0
    assert score.slicenet["model"] == "slicenet" and score.slicenet["fused_prob"] is None
    start, end = score.slicenet["best_window"]
    assert end - start == 4 and start >= 0


def test_a_dicom_series_scores_like_its_imported_volume(benchmark_run, tmp_path):
    from radfusion.imaging.dicom import import_dicom

    _, run, _ = benchmark_run
    series = tmp_path / "series"
    series.mkdir()
    for path in sorted(CT5N.iterdir()):
        shutil.copy(path, series / path.name)
    imported = import_dicom(series, tmp_path / "imported")
    volume = tmp_path / "imported" / f"{imported.imported[0].idx}.npy"
    a = predict_study(run, dicom=series)
    b = predict_study(run, volume=volume, hu_intercept=0)
    assert a.image_prob == pytest.approx(b.image_prob, abs=1e-7)


def test_bad_requests_are_named(benchmark_run, tmp_path):
    data, run, _ = benchmark_run
    cohort, idx = _study(data)
    vol = cohort.studies.loc[idx, "volume_path"]
    with pytest.raises(RadfusionError, match="give one CT"):
        predict_study(run)
    row = tmp_path / "row.csv"
    cohort.features().loc[[idx]].drop(columns=cohort.features().columns[:2]).to_csv(row)
    with pytest.raises(RadfusionError, match=r"2 EHR feature column\(s\) missing"):
        predict_study(run, volume=vol, ehr_row=row)
    text = cohort.features().loc[[idx]].astype(object)
    text.iloc[0, 3] = "high"
    text.to_csv(row, index=False)
    with pytest.raises(RadfusionError, match="non-numeric feature column"):
        predict_study(run, volume=vol, ehr_row=row)
    broken = tmp_path / "bad.npy"
    broken.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(RadfusionError, match=r"bad\.npy"):
        predict_study(run, volume=broken)
    with pytest.raises(RadfusionError, match=r"no trained PENet|missing"):
        predict_study(tmp_path, volume=vol)
