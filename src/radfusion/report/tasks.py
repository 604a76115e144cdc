"""The summary of a benchmark over several tasks (``data.task=all``): ``tasks.csv`` and one HTML
page with a tasks x models table and a section per task, each linking to the task's own full
report (``tasks/<task>/report/report.html``)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape

from radfusion import __version__
from radfusion.io import atomic_path, write_csv
from radfusion.rundir import RunDir

__all__ = ["SUMMARY_METRICS", "task_table", "write_task_summary"]

#: The figures of each task's section, all on the whole test set at the validation threshold.
SUMMARY_METRICS = ("auroc", "auprc", "brier", "ece", "sensitivity", "specificity")


def task_table(runs: list[tuple[str, RunDir]]) -> pd.DataFrame:
    """One row per (task, model, metric): value and CI on the whole test set, with the test
    split's positives and negatives."""
    rows = []
    for task, run in runs:
        metrics = pd.read_csv(run.eval.metrics)
        overall = metrics[
            (metrics["attribute"] == "overall")
            & (metrics["subset"] == "all")
            & metrics["metric"].isin(SUMMARY_METRICS)
        ]
        outcomes = pd.read_csv(run.eval.outcomes)
        test = outcomes[outcomes["split"] == "test"]
        for row in overall.itertuples():
            rows.append(
                {
                    "task": task,
                    "model": row.model,
                    "metric": row.metric,
                    "value": row.value,
                    "ci_low": row.ci_low,
                    "ci_high": row.ci_high,
                    "test_positives": int(test["label"].sum()),
                    "test_negatives": int((test["label"] == 0).sum()),
                }
            )
    return pd.DataFrame(rows)


def _cell(value, low, high) -> str:
    if pd.isna(value):
        return "–"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]" if pd.notna(low) else f"{value:.3f}"


def write_task_summary(run: RunDir, runs: list[tuple[str, RunDir]], section) -> Path:
    """Write ``run/tasks.csv`` and ``run/report/report.html`` for the task runs."""
    table = task_table(runs)
    write_csv(table, run.root / "tasks.csv", float_format="%.6g")
    auroc = table[table["metric"] == "auroc"].copy()
    auroc["cell"] = [
        _cell(v, lo, hi)
        for v, lo, hi in zip(auroc["value"], auroc["ci_low"], auroc["ci_high"], strict=True)
    ]
    models = list(dict.fromkeys(auroc["model"]))
    grid = auroc.pivot(index="task", columns="model", values="cell").reindex(
        index=[t for t, _ in runs], columns=models
    )
    sections = []
    for task, task_run in runs:
        part = table[table["task"] == task].copy()
        part["cell"] = [
            _cell(v, lo, hi)
            for v, lo, hi in zip(part["value"], part["ci_low"], part["ci_high"], strict=True)
        ]
        wide = part.pivot(index="model", columns="metric", values="cell").reindex(
            index=models, columns=list(SUMMARY_METRICS)
        )
        first = part.iloc[0] if len(part) else None
        sections.append(
            {
                "task": task,
                "positives": int(first["test_positives"]) if first is not None else 0,
                "negatives": int(first["test_negatives"]) if first is not None else 0,
                "table": wide.fillna("–").to_html(escape=True, border=0),
                "link": os.path.relpath(task_run.report_page, run.report_page.parent),
            }
        )
    env = Environment(
        loader=PackageLoader("radfusion.report", "."), autoescape=select_autoescape(["html", "j2"])
    )
    from markupsafe import Markup

    page = env.get_template("tasks.html.j2").render(
        title=getattr(section, "title", None) or run.root.name,
        version=__version__,
        grid=Markup(grid.fillna("–").to_html(escape=True, border=0)),
        sections=[{**s, "table": Markup(s["table"])} for s in sections],
    )
    run.report.mkdir(parents=True, exist_ok=True)
    with atomic_path(run.report_page) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return run.report_page
