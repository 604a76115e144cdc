"""The command line: synth then validate, as the README runs them."""

from __future__ import annotations

import json

import pandas as pd
from typer.testing import CliRunner

from radfusion.cli import app

runner = CliRunner()


def test_synth_then_validate(tmp_path):
    out = tmp_path / "c"
    result = runner.invoke(
        app,
        [
            "synth",
            str(out),
            "--studies",
            "60",
            "--seed",
            "1",
            "--size",
            "16",
            "--slices",
            "24:30",
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "Labels.csv").exists() and (out / "raw" / "data" / "0.parquet").exists()
    result = runner.invoke(app, ["validate", str(out)])
    assert result.exit_code == 0, result.output
    assert "Table 1" in result.output and "Table 2" in result.output

    result = runner.invoke(app, ["validate", str(out), "--json"])
    assert result.exit_code == 0
    payload = json.loads(result.stdout)
    assert {"splits", "test_groups", "warnings", "errors"} <= set(payload)
    labels = pd.read_csv(out / "Labels.csv")
    for split in ("train", "val", "test"):
        part = labels[labels["split"] == split]
        row = payload["splits"][split]
        assert row["studies"] == len(part) and row["positives"] == part["label"].sum()
        assert {"negatives", "central", "segmental", "subsegmental", "median_slices"} <= set(row)
    assert set(payload["test_groups"]) == {"Female", "Male", "White", "Others", ">80", "<=80"}
    assert payload["errors"] == []


def test_validate_exits_2_with_errors_in_json(tmp_path, small_cohort):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "Labels.csv").write_text("idx,label,pe_type,split\n1,3,,train\n")
    result = runner.invoke(app, ["validate", str(bad), "--json"])
    assert result.exit_code == 2
    payload = json.loads(result.stdout)
    assert any("label must be 0 or 1" in e for e in payload["errors"])
    assert any("Demographics.csv" in e for e in payload["errors"])


def test_synth_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["synth", str(tmp_path), "--studies", "40", "--overwrite"])
    assert result.exit_code == 2
    assert (tmp_path / "keep.txt").exists()


def test_synth_rejects_a_bad_slice_range(tmp_path):
    result = runner.invoke(app, ["synth", str(tmp_path / "x"), "--slices", "40-50"])
    assert result.exit_code == 2 and "LO:HI" in result.output


def test_synth_sizes_the_test_split_on_request(tmp_path):
    """``--test-studies``: the test split takes that many studies, train and val share the
    rest in Table 1's proportions (1454 : 193), and every split keeps its own PE rate."""
    out = tmp_path / "c"
    args = ["synth", str(out), "--studies", "90", "--test-studies", "40", "--size", "8"]
    result = runner.invoke(app, [*args, "--slices", "24:26", "--workers", "1"])
    assert result.exit_code == 0, result.output
    labels = pd.read_csv(out / "Labels.csv")
    sizes = labels["split"].value_counts()
    assert (sizes["train"], sizes["val"], sizes["test"]) == (44, 6, 40)  # 50 * 1454 / 1647 = 44.1
    test = labels[labels["split"] == "test"]
    assert test["label"].sum() == round(40 * 110 / 190)  # Table 1: 110 of 190 test studies
    assert set(test.loc[test["label"] == 1, "pe_type"]) == {"central", "segmental", "subsegmental"}
    assert json.loads((out / "synthetic.json").read_text())["test_studies"] == 40
    result = runner.invoke(app, ["validate", str(out)])
    assert result.exit_code == 0, result.output


def test_synth_refuses_a_test_split_that_starves_the_others(tmp_path):
    out = tmp_path / "c"
    result = runner.invoke(app, ["synth", str(out), "--studies", "60", "--test-studies", "54"])
    assert result.exit_code == 2
    assert "[5, 1, 54]" in result.output and "at least 6" in result.output
    assert not out.exists()
    result = runner.invoke(app, ["synth", str(out), "--studies", "60", "--test-studies", "60"])
    assert result.exit_code == 2 and "use 1 to 59" in result.output


def test_synth_an_inspect_cohort_then_validate_its_tasks(tmp_path):
    out = tmp_path / "inspect"
    args = ["synth", str(out), "--layout", "inspect", "--studies", "60", "--size", "16"]
    result = runner.invoke(app, [*args, "--slices", "24:28", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert (out / "Final_labels.csv").exists() and (out / "meds" / "data" / "0.parquet").exists()
    result = runner.invoke(app, ["validate", str(out)])
    assert result.exit_code == 0, result.output
    assert "12_month_PH" in result.output and "Slice spacing" in result.output
    payload = json.loads(runner.invoke(app, ["validate", str(out), "--json"]).stdout)
    labels = pd.read_csv(out / "Final_labels.csv", dtype=str).set_index("impression_id")
    splits = pd.read_csv(out / "Final_splits.csv", dtype=str).set_index("impression_id")
    test = labels.loc[splits.index[splits["split"] == "test"], "6_month_mortality"]
    counts = payload["splits"]["test"]["tasks"]["6_month_mortality"]
    assert counts == {
        "positives": int((test == "True").sum()),
        "negatives": int((test == "False").sum()),
        "censored": int((test == "Censored").sum()),
    }
    assert runner.invoke(app, ["validate", str(out), "--layout", "radfusion"]).exit_code == 2
