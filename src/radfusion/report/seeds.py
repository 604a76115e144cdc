"""The summary of a benchmark over several training seeds (``radfusion benchmark --seeds``):
every metric as mean ± sd across the seeds next to each seed's own bootstrap CI
(``seeds.csv``), and each DeLong comparison made per seed with the count of seeds where it is
significant (``seed_comparisons.csv``), on one HTML page linking to each seed's full report."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape

from radfusion import __version__
from radfusion.io import atomic_path, write_csv
from radfusion.report.tasks import SUMMARY_METRICS
from radfusion.rundir import RunDir

__all__ = ["ALPHA", "seed_comparisons", "seed_table", "write_seed_summary"]

ALPHA = 0.05  # a DeLong p below this counts the seed as significant


def seed_table(runs: list[tuple[int, RunDir]]) -> pd.DataFrame:
    """One row per (model, metric): the mean and sd over seeds of the whole test set's value,
    the seeds it covers, and each seed's value with its CI (``seed<N>``, ``seed<N>_low``...)."""
    frames = []
    for seed, run in runs:
        metrics = pd.read_csv(run.eval.metrics)
        overall = metrics[
            (metrics["attribute"] == "overall")
            & (metrics["subset"] == "all")
            & metrics["metric"].isin(SUMMARY_METRICS)
        ]
        frames.append(overall[["model", "metric", "value", "ci_low", "ci_high"]].assign(seed=seed))
    long = pd.concat(frames, ignore_index=True)
    rows = []
    for (model, metric), part in long.groupby(["model", "metric"], sort=False):
        values = part["value"].to_numpy(float)
        row = {
            "model": model,
            "metric": metric,
            "mean": float(np.nanmean(values)),
            "sd": float(np.nanstd(values, ddof=1)) if len(values) > 1 else np.nan,
            "seeds": len(values),
        }
        for r in part.itertuples():
            row |= {
                f"seed{r.seed}": r.value,
                f"seed{r.seed}_low": r.ci_low,
                f"seed{r.seed}_high": r.ci_high,
            }
        rows.append(row)
    return pd.DataFrame(rows)


def seed_comparisons(runs: list[tuple[int, RunDir]], alpha: float = ALPHA) -> pd.DataFrame:
    """Each pair of models' DeLong test on the whole test set, per seed: the mean AUROC
    difference, each seed's p, and in how many seeds p < ``alpha`` (either direction, and with
    ``model_a`` the higher)."""
    frames = []
    for seed, run in runs:
        table = pd.read_csv(run.eval.comparisons)
        frames.append(table[table["subset"] == "all"].assign(seed=seed))
    long = pd.concat(frames, ignore_index=True)
    rows = []
    for (a, b), part in long.groupby(["model_a", "model_b"], sort=False):
        significant = part["p_value"] < alpha
        row = {
            "model_a": a,
            "model_b": b,
            "mean_diff": float(part["diff"].mean()),
            "sd_diff": float(part["diff"].std(ddof=1)) if len(part) > 1 else np.nan,
            "seeds": len(part),
            "significant": int(significant.sum()),
            "a_higher_significant": int((significant & (part["diff"] > 0)).sum()),
        }
        for r in part.itertuples():
            row |= {f"seed{r.seed}_diff": r.diff, f"seed{r.seed}_p": r.p_value}
        rows.append(row)
    return pd.DataFrame(rows)


def _mean_sd(mean, sd) -> str:
    return "–" if pd.isna(mean) else f"{mean:.3f} ± {sd:.3f}" if pd.notna(sd) else f"{mean:.3f}"


def write_seed_summary(run: RunDir, runs: list[tuple[int, RunDir]], section) -> Path:
    """Write ``run/seeds.csv``, ``run/seed_comparisons.csv`` and ``run/report/report.html``."""
    from markupsafe import Markup

    table, comparisons = seed_table(runs), seed_comparisons(runs)
    write_csv(table, run.root / "seeds.csv", float_format="%.6g")
    write_csv(comparisons, run.root / "seed_comparisons.csv", float_format="%.6g")
    seeds = [s for s, _ in runs]
    summary = table.assign(
        cell=[_mean_sd(m, s) for m, s in zip(table["mean"], table["sd"], strict=True)]
    )
    grid = summary.pivot(index="model", columns="metric", values="cell")
    grid = grid.reindex(index=list(dict.fromkeys(table["model"])), columns=list(SUMMARY_METRICS))
    auroc = table[table["metric"] == "auroc"].set_index("model")
    per_seed = pd.DataFrame(
        {
            f"seed {s}": [
                "–"
                if pd.isna(r.get(f"seed{s}"))
                else f"{r[f'seed{s}']:.3f} [{r[f'seed{s}_low']:.3f}, {r[f'seed{s}_high']:.3f}]"
                for _, r in auroc.iterrows()
            ]
            for s in seeds
        },
        index=auroc.index,
    )
    shown = comparisons[
        comparisons["model_a"].isin(["fusion_mean"]) | comparisons["model_b"].isin(["fusion_mean"])
    ]
    if shown.empty:
        shown = comparisons
    delong = shown.assign(
        **{
            "AUROC difference (mean ± sd)": [
                _mean_sd(m, s) for m, s in zip(shown["mean_diff"], shown["sd_diff"], strict=True)
            ],
            f"seeds with p < {ALPHA}": [
                f"{k} of {n}" for k, n in zip(shown["significant"], shown["seeds"], strict=True)
            ],
        }
    )[["model_a", "model_b", "AUROC difference (mean ± sd)", f"seeds with p < {ALPHA}"]]
    env = Environment(
        loader=PackageLoader("radfusion.report", "."), autoescape=select_autoescape(["html", "j2"])
    )
    html = lambda frame, index=True: Markup(frame.to_html(escape=True, border=0, index=index))  # noqa: E731
    page = env.get_template("seeds.html.j2").render(
        title=getattr(section, "title", None) or run.root.name,
        version=__version__,
        seeds=seeds,
        grid=html(grid.fillna("–")),
        per_seed=html(per_seed),
        delong=html(delong, index=False),
        links=[(s, os.path.relpath(r.report_page, run.report_page.parent)) for s, r in runs],
    )
    run.report.mkdir(parents=True, exist_ok=True)
    with atomic_path(run.report_page) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return run.report_page
