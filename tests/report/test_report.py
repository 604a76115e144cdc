"""evaluate -> fuse -> report on a synthetic cohort with made-up prediction files."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from radfusion.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(small_cohort, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    preds = run / "predictions"
    preds.mkdir()
    labels = pd.read_csv(small_cohort / "Labels.csv")
    rng = np.random.default_rng(0)
    y = labels["label"].to_numpy()
    for name, signal in (("image", 0.25), ("ehr", 0.4)):
        prob = np.clip(0.5 + signal * (y - 0.5) + rng.normal(0, 0.2, len(y)), 0, 1)
        pd.DataFrame({"idx": labels["idx"], "prob": prob, "split": labels["split"]}).to_csv(
            preds / f"{name}.csv", index=False
        )
    mean = ["--set", "fusion.designs=[mean]"]
    result = runner.invoke(app, ["fuse", str(preds), "--models", "image,ehr", *mean])
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app,
        [
            "fuse",
            str(preds),
            "--models",
            "image,ehr",
            "--set",
            "fusion.designs=[stacked]",
            "--data",
            str(small_cohort),
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--data",
            str(small_cohort),
            "--predictions",
            str(preds),
            "--out",
            str(run / "eval"),
            "--set",
            "evaluation.n_boot=200",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "AUROC (95% CI)" in result.output
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    return run


def test_evaluation_files_have_the_contracted_columns(run_dir):
    columns = {
        "metrics.csv": [
            "model",
            "subset",
            "attribute",
            "group",
            "metric",
            "value",
            "ci_low",
            "ci_high",
            "n",
        ],
        "thresholds.csv": ["model", "threshold", "val_sensitivity", "val_specificity"],
        "fairness.csv": ["model", "subset", "attribute", "metric", "value", "ci_low", "ci_high"],
        "comparisons.csv": [
            "subset",
            "model_a",
            "model_b",
            "auroc_a",
            "auroc_b",
            "diff",
            "p_value",
        ],
        "subtypes.csv": [
            "model",
            "pe_type",
            "n_positive",
            "n_negative",
            "auroc",
            "auroc_ci_low",
            "auroc_ci_high",
            "sensitivity",
            "sensitivity_ci_low",
            "sensitivity_ci_high",
        ],
    }
    for name, expected in columns.items():
        frame = pd.read_csv(run_dir / "eval" / name)
        assert list(frame.columns[: len(expected)]) == expected, name
    metrics = pd.read_csv(run_dir / "eval" / "metrics.csv")
    assert set(metrics["model"]) == {"image", "ehr", "fusion_mean", "fusion_stacked"}
    assert set(metrics["subset"]) == {"all", "non_subsegmental"}
    assert set(metrics["group"]) == {"all", "Female", "Male", "White", "Others", ">80", "<=80"}
    fairness = pd.read_csv(run_dir / "eval" / "fairness.csv")
    assert set(fairness["metric"]) == {"eod", "tpr_diff_signed", "equalized_odds_diff", "auroc_gap"}


def test_report_has_the_twelve_tables_in_three_formats(run_dir):
    tables = run_dir / "report" / "tables"
    for number in range(3, 13):
        for suffix in ("md", "csv", "tex"):
            assert (tables / f"table{number}.{suffix}").stat().st_size > 0
    # Table 3's AUROC cells are metrics.csv's numbers.
    metrics = pd.read_csv(run_dir / "eval" / "metrics.csv")
    auroc = metrics[
        (metrics["subset"] == "all")
        & (metrics["attribute"] == "overall")
        & (metrics["metric"] == "auroc")
    ].set_index("model")["value"]
    table3 = pd.read_csv(tables / "table3.csv")
    row = table3[table3["Metric"] == "AUROC"].set_index("model")["value"]
    for model, value in auroc.items():
        assert row[model] == pytest.approx(value, abs=1e-5)
    text = (tables / "table3.md").read_text()
    header = text.splitlines()[2]
    assert header.index("image") < header.index("ehr") < header.index("fusion_mean")


def test_report_page_is_self_contained(run_dir):
    page = (run_dir / "report" / "report.html").read_text()
    assert page.count("<img") == 7 and page.count("data:image/png;base64,") == 7
    assert not re.search(r"""(src|href)=["']https?://""", page)  # nothing fetched online
    for number in range(3, 13):
        assert f"Table {number}." in page
    assert (run_dir / "report" / "figures" / "roc.png").stat().st_size > 1000


def test_report_shows_detection_by_subtype_from_subtypes_csv(run_dir, small_cohort):
    page = (run_dir / "report" / "report.html").read_text()
    section = page[page.index('id="subtypes"') : page.index('id="comparisons"')]
    subtypes = pd.read_csv(run_dir / "eval" / "subtypes.csv")
    labels = pd.read_csv(small_cohort / "Labels.csv")
    assert set(subtypes["pe_type"]) == {"central", "segmental", "subsegmental"}
    for _, row in subtypes.iterrows():
        test = labels[labels["split"] == "test"]
        positives = (test["label"] == 1) & (test["pe_type"] == row["pe_type"])
        assert row["n_positive"] == positives.sum()
        if np.isfinite(row["auroc"]):
            assert f"{row['auroc']:.3f} [{row['auroc_ci_low']:.3f}" in section


def test_report_shows_the_intersectional_cells_from_intersections_csv(run_dir):
    page = (run_dir / "report" / "report.html").read_text()
    section = page[page.index('id="intersections"') : page.index('id="comparisons"')]
    cells = pd.read_csv(run_dir / "eval" / "intersections.csv")
    assert set(cells["model"]) == {"image", "ehr", "fusion_mean", "fusion_stacked"}
    assert len(cells[cells["cell"] != "max - min"]) == 4 * 8 * 2  # models x cells x metrics
    for _, row in cells[cells["model"] == "ehr"].iterrows():
        if np.isfinite(row["value"]) and np.isfinite(row["ci_low"]):
            assert f"{row['value']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]" in section
    assert (run_dir / "report" / "figures" / "intersections.png").stat().st_size > 1000


def test_report_shows_the_mitigation_trade_off_from_mitigation_csv(run_dir):
    page = (run_dir / "report" / "report.html").read_text()
    section = page[page.index('id="mitigation"') : page.index('id="comparisons"')]
    rows = pd.read_csv(run_dir / "eval" / "mitigation.csv")
    assert set(rows["method"]) == {
        "single threshold",
        "group thresholds (equal_opportunity)",
        "group thresholds (equalized_odds)",
    }
    for _, row in rows[rows["model"] == "fusion_mean"].iterrows():
        if np.isfinite(row["value"]) and np.isfinite(row["ci_low"]):
            assert f"{row['value']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]" in section
    assert (run_dir / "report" / "figures" / "mitigation.png").stat().st_size > 1000


def test_report_without_evaluation_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "run radfusion evaluate" in result.output
