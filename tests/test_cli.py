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
