"""``radfusion train-ehr`` end to end on both feature paths."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from radfusion.cli import app
from radfusion.data import Cohort
from radfusion.ehr.persistence import load_model
from radfusion.ehr.train import feature_matrix, train_ehr

GRID = {"C": [0.1], "l1_ratio": [0.5], "class_weight": [None]}


def test_release_and_meds_paths_give_the_same_matrix(small_cohort):
    cohort = Cohort.load(small_cohort)
    release, _ = feature_matrix(cohort, "release")
    meds, _ = feature_matrix(cohort, "meds")
    # The MEDS path infers its vocabulary from the events, so classes nobody was prescribed
    # are absent; every column it has equals the release table's.
    assert set(meds.columns) <= set(release.columns) and len(meds.columns) > 500
    pd.testing.assert_frame_equal(
        meds, release[meds.columns], check_dtype=False, check_exact=False, rtol=1e-12
    )


def test_train_ehr_writes_predictions_model_and_importance(small_cohort, tmp_path):
    cohort = Cohort.load(small_cohort)
    run = train_ehr(cohort, tmp_path, grid=GRID, seed=1)
    pred = pd.read_csv(tmp_path / "predictions" / "ehr.csv")
    assert list(pred.columns) == ["idx", "prob", "split"]
    assert sorted(pred["idx"]) == sorted(cohort.studies.index)
    assert pred["prob"].between(0, 1).all()
    meta = json.loads((tmp_path / "ehr" / "model.json").read_text())
    assert meta["params"] == {"C": 0.1, "l1_ratio": 0.5, "class_weight": None}
    assert meta["val_auroc"] == run.val_auroc
    model = load_model(tmp_path / "ehr" / "model.skops")
    x, _ = feature_matrix(cohort)
    np.testing.assert_allclose(model.predict_proba(x)[:, 1], pred["prob"], atol=1e-8)
    imp = pd.read_csv(tmp_path / "ehr" / "importance.csv")
    assert {"feature", "table", "coefficient"} <= set(imp.columns)
    assert set(imp["table"].dropna()) <= {
        "Demographics",
        "INP_MED",
        "OUT_MED",
        "ICD",
        "LABS",
        "Vitals",
    }

    again = train_ehr(cohort, tmp_path / "again", grid=GRID, seed=1)
    np.testing.assert_array_equal(again.predictions["prob"], run.predictions["prob"])


def test_cli_train_ehr_on_meds_features(small_cohort, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "train-ehr",
            str(small_cohort),
            "--out",
            str(tmp_path),
            "--set",
            "ehr.features=meds",
            "--set",
            "ehr.model=hgb",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "val AUROC" in result.output
    assert (tmp_path / "predictions" / "ehr.csv").exists()
    assert json.loads((tmp_path / "ehr" / "model.json").read_text())["features"]["source"] == "meds"
