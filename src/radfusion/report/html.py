"""``radfusion report RUN_DIR``: Tables 3-12, figures and one self-contained HTML page.

Reads ``RUN_DIR/eval/`` (written by ``radfusion evaluate --out RUN_DIR/eval``) and the
models' prediction files; writes ``RUN_DIR/report/``: ``tables/table3.md`` ... ``table12.md``
(+ ``.csv``, ``.tex``), ``figures/*.png`` and ``report.html`` (images embedded, no network).
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape

from radfusion import __version__
from radfusion.data.summary import TEST_GROUPS, label_counts, test_group_counts
from radfusion.errors import RadfusionError
from radfusion.evaluation.intersections import GAP_CELL
from radfusion.io import atomic_path
from radfusion.predictions import collect_prediction_files
from radfusion.report import figures
from radfusion.report.tables import PaperTable, paper_tables, write_tables
from radfusion.rundir import RunDir

__all__ = ["write_report"]

EVAL_FILES = ("metrics", "thresholds", "fairness", "comparisons", "outcomes")


def _html_table(table: PaperTable) -> str:
    cells, best = table.cells(), table.best()
    cols = list(cells.columns)
    multi = isinstance(cells.columns, pd.MultiIndex)
    head = ["<tr><th rowspan='2'>" if multi else "<tr><th>", cells.index.name or "", "</th>"]
    if multi:
        models = list(dict.fromkeys(c[0] for c in cols))
        span = len(cols) // len(models)
        head += [f"<th colspan='{span}'>{m}</th>" for m in models]
        head += ["</tr><tr>", *[f"<th>{c[1]}</th>" for c in cols], "</tr>"]
    else:
        head += [*[f"<th>{c}</th>" for c in cols], "</tr>"]
    rows = []
    for r in cells.index:
        tds = "".join(
            f"<td class='best'>{cells.at[r, c]}</td>"
            if best.at[r, c]
            else f"<td>{cells.at[r, c]}</td>"
            for c in cols
        )
        rows.append(f"<tr><td>{r}</td>{tds}</tr>")
    return "<table>" + "".join(head) + "".join(rows) + "</table>"


def _frame_html(frame: pd.DataFrame, digits: int = 3) -> str:
    return frame.to_html(
        index=False, float_format=lambda v: f"{v:.{digits}g}", na_rep="n/a", border=0
    )


def _with_ci(value, low, high) -> str:
    if not np.isfinite(value):
        return "n/a"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]" if np.isfinite(low) else f"{value:.3f}"


def _mitigation_html(mitigation: pd.DataFrame) -> str:
    """One row per model, attribute and method: each metric with its CI."""
    rows = []
    for (model, attribute, method), part in mitigation.groupby(
        ["model", "attribute", "method"], sort=False
    ):
        row = {"model": model, "attribute": attribute, "thresholds": method}
        for r in part.itertuples():
            row[r.metric.replace("_", " ")] = _with_ci(r.value, r.ci_low, r.ci_high)
        row["note"] = next((n for n in part["note"].fillna("") if n), "")
        rows.append(row)
    return _frame_html(pd.DataFrame(rows))


def _intersections_html(cells: pd.DataFrame) -> str:
    """One row per cell (and the gap between cells), one column pair per model: TPR and FPR
    with CIs; a cell too small for the gap is marked."""
    models = list(dict.fromkeys(cells["model"]))
    first = cells[cells["model"] == models[0]]
    rows = []
    for name in dict.fromkeys(cells["cell"]):
        sizes = first[(first["cell"] == name) & (first["metric"] == "tpr")].iloc[0]
        row = {
            "cell": name,
            "positives": sizes["n_positive"] if name != GAP_CELL else "",
            "negatives": sizes["n_negative"] if name != GAP_CELL else "",
        }
        for model in models:
            for metric in ("tpr", "fpr"):
                r = cells[
                    (cells["model"] == model)
                    & (cells["cell"] == name)
                    & (cells["metric"] == metric)
                ].iloc[0]
                mark = "" if r["in_gap"] else " *"
                row[f"{model} {metric.upper()}"] = (
                    _with_ci(r["value"], r["ci_low"], r["ci_high"]) + mark
                )
        rows.append(row)
    return _frame_html(pd.DataFrame(rows))


def _subtypes_html(subtypes: pd.DataFrame) -> str:
    """One row per model and subtype: n, AUROC [CI], sensitivity [CI]."""

    def cell(row, metric):
        value = row[metric]
        if not np.isfinite(value):
            return "n/a"
        low, high = row[f"{metric}_ci_low"], row[f"{metric}_ci_high"]
        return f"{value:.3f} [{low:.3f}, {high:.3f}]" if np.isfinite(low) else f"{value:.3f}"

    table = pd.DataFrame(
        {
            "model": subtypes["model"],
            "subtype": subtypes["pe_type"],
            "positives": subtypes["n_positive"],
            "negatives": subtypes["n_negative"],
            "AUROC": [cell(r, "auroc") for _, r in subtypes.iterrows()],
            "sensitivity": [cell(r, "sensitivity") for _, r in subtypes.iterrows()],
        }
    )
    return _frame_html(table)


def _cohort_tables(outcomes: pd.DataFrame) -> tuple[str, str]:
    """Table 1's counts per split and Table 2, from the evaluation's outcomes."""
    rows = [
        {"split": split, **label_counts(outcomes[outcomes["split"] == split])}
        for split in ("train", "val", "test")
    ]
    with_sub, without_sub = test_group_counts(outcomes)
    attribute = {"gender": "Gender", "race": "Race", "age_group": "Age"}
    groups = [
        {
            "attribute": attribute[a],
            "group": g,
            "including subsegmental": with_sub[g],
            "excluding subsegmental": without_sub[g],
        }
        for a, g in TEST_GROUPS
    ]
    return _frame_html(pd.DataFrame(rows)), _frame_html(pd.DataFrame(groups))


def _fusion_tables(layout: RunDir) -> dict | None:
    """The fusion stage's tables (designs, missing inputs, ablation, Shapley shares), or None
    for a run without them."""
    folder = layout.fusion
    names = ("designs", "missing", "ablation", "shapley")
    if not all((folder / f"{n}.csv").exists() for n in names):
        return None
    from markupsafe import Markup

    designs, missing, ablation, shapley = (pd.read_csv(folder / f"{n}.csv") for n in names)
    ablation = pd.DataFrame(
        {
            "design": ablation["design"],
            "removed": ablation["removed"],
            "inputs": ablation["inputs"],
            "test AUROC": [
                _with_ci(v, lo, hi)
                for v, lo, hi in zip(
                    ablation["auroc"], ablation["ci_low"], ablation["ci_high"], strict=True
                )
            ],
            "drop": ablation["drop"],
        }
    )
    if not shapley.empty:
        shapley = pd.DataFrame(
            {
                "design": shapley["design"],
                "modality": shapley["modality"],
                "Shapley value": [
                    _with_ci(v, lo, hi)
                    for v, lo, hi in zip(
                        shapley["shapley"],
                        shapley["shapley_low"],
                        shapley["shapley_high"],
                        strict=True,
                    )
                ],
                "share of the gain": [
                    _with_ci(v, lo, hi)
                    for v, lo, hi in zip(
                        shapley["share"], shapley["share_low"], shapley["share_high"], strict=True
                    )
                ],
            }
        )
    drop = None
    if layout.config.exists():
        import yaml

        drop = ((yaml.safe_load(layout.config.read_text()) or {}).get("fusion") or {}).get(
            "drop_modality"
        )
    return {
        "designs": Markup(_frame_html(designs)),
        "missing": Markup(_frame_html(missing)),
        "ablation": Markup(_frame_html(ablation)),
        "shapley": Markup(_frame_html(shapley)),
        "drop": drop,
    }


def write_report(run_dir: str | os.PathLike, *, title: str | None = None) -> Path:
    """Write ``RUN_DIR/report/``; returns the path of ``report.html``."""
    layout = RunDir(Path(run_dir))
    run, evaluation = layout.root, layout.eval
    needed = [getattr(evaluation, f) for f in EVAL_FILES]
    missing = [p.name for p in needed if not p.exists()]
    if missing:
        raise RadfusionError(
            f"{evaluation.root}: missing {missing}; "
            f"run radfusion evaluate --out {evaluation.root} first"
        )
    metrics, thresholds, fairness, comparisons, outcomes = (pd.read_csv(p) for p in needed)
    outcomes = outcomes.set_index("idx")
    # optional: evaluations before it lack it
    subtypes = pd.read_csv(evaluation.subtypes) if evaluation.subtypes.exists() else None
    meta = json.loads(evaluation.meta.read_text()) if evaluation.meta.exists() else {}
    # optional too: evaluations before the intersectional cells lack it
    cells = pd.read_csv(evaluation.intersections) if evaluation.intersections.exists() else None
    mitigation = pd.read_csv(evaluation.mitigation) if evaluation.mitigation.exists() else None
    selection = pd.read_csv(layout.selection) if layout.selection.exists() else None
    models = list(dict.fromkeys(metrics["model"]))
    sources = meta.get("predictions") or [str(layout.predictions)]
    files = {p.stem: p for p in collect_prediction_files(sources)}
    absent = [m for m in models if m not in files]
    if absent:
        raise RadfusionError(f"{run}: prediction files for {absent} not found in {sources}")
    probs = pd.DataFrame({m: pd.read_csv(files[m]).set_index("idx")["prob"] for m in models})

    out = layout.report
    tables = paper_tables(metrics, fairness, models)
    write_tables(tables, out / "tables")
    pictures = [
        (
            "roc.png",
            "ROC curves per model (AUROC in the legend).",
            figures.roc_overall(outcomes, probs, metrics, models),
        ),
        ("auroc_forest.png", "AUROC with 95% CI per group.", figures.auroc_forest(metrics, models)),
        (
            "roc_groups.png",
            "ROC curves per subgroup, whole test set.",
            figures.roc_by_group(outcomes, probs, metrics, models),
        ),
        (
            "tpr_gaps.png",
            "TPR differences between groups (signed; EOD is their absolute value) with 95% CI.",
            figures.tpr_gaps(fairness, models),
        ),
        (
            "calibration.png",
            "Calibration (reliability) and the distribution of predictions.",
            figures.calibration(outcomes, probs, models),
        ),
    ]
    if cells is not None:
        pictures.append(
            (
                "intersections.png",
                "TPR and FPR per gender × race × age cell, at each model's operating point.",
                figures.intersection_heatmap(cells, models),
            )
        )
    sweeps = {
        m: json.loads(files[m].with_suffix(".sweep.json").read_text())
        for m in models
        if files[m].with_suffix(".sweep.json").exists()
    }
    if sweeps:
        pictures.append(
            (
                "fair_fusion.png",
                "Fairness-aware fusion: validation AUROC against the TPR gap over the fusion "
                "weight, the weight chosen at each AUROC loss δ marked.",
                figures.fair_fusion_sweep(sweeps),
            )
        )
    if mitigation is not None:
        pictures.append(
            (
                "mitigation.png",
                "What group thresholds cost: test TPR gap against accuracy, per attribute.",
                figures.mitigation_tradeoff(mitigation, models),
            )
        )
    (out / "figures").mkdir(parents=True, exist_ok=True)
    for name, _, data in pictures:
        with atomic_path(out / "figures" / name) as tmp:
            tmp.write_bytes(data)
    cohort_table, groups_table = _cohort_tables(outcomes)
    config_path = layout.config
    config = config_path.read_text() if config_path.exists() else json.dumps(meta, indent=2)
    fair = fairness.copy()
    env = Environment(
        loader=PackageLoader("radfusion.report", "."), autoescape=select_autoescape(["html", "j2"])
    )
    from markupsafe import Markup

    page = env.get_template("template.html.j2").render(
        title=title or run.name,
        models=models,
        bootstrap=meta.get("bootstrap", "?"),
        seed=meta.get("seed", "?"),
        version=__version__,
        notes=meta.get("notes", []),
        cohort_table=Markup(cohort_table),
        groups_table=Markup(groups_table),
        thresholds_table=Markup(_frame_html(thresholds)),
        tables=[
            {"number": t.number, "title": t.title, "html": Markup(_html_table(t))} for t in tables
        ],
        fairness_table=Markup(_frame_html(fair[fair["metric"] != "eod"].replace({np.nan: None}))),
        comparisons_table=Markup(_frame_html(comparisons)),
        subtypes_table=Markup(_subtypes_html(subtypes)) if subtypes is not None else None,
        intersections_table=Markup(_intersections_html(cells)) if cells is not None else None,
        mitigation_table=Markup(_mitigation_html(mitigation)) if mitigation is not None else None,
        selection_table=Markup(_frame_html(selection)) if selection is not None else None,
        fusion=_fusion_tables(layout),
        figures=[{"caption": c, "data": base64.b64encode(d).decode()} for _, c, d in pictures],
        config=config,
    )
    with atomic_path(layout.report_page) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return layout.report_page
