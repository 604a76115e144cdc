"""The paper's Tables 3-12, laid out as in the paper, with 95% intervals.

Tables 3-4: the six metrics (rows) per model (columns), whole test set and non-subsegmental.
Tables 5-10: the same per subgroup, models x groups as columns: gender (5-6), age (7-8),
race (9-10). Tables 11-12: EOD per attribute (rows) per model. The best value of each row
(per group) is marked, as the paper bolds it: highest for metrics, lowest for EOD.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from radfusion.evaluation.metrics import METRICS
from radfusion.io import atomic_path

__all__ = ["PaperTable", "paper_tables", "write_tables"]

METRIC_LABELS = {
    "accuracy": "Accuracy",
    "auroc": "AUROC",
    "specificity": "Specificity",
    "sensitivity": "Sensitivity",
    "ppv": "PPV",
    "npv": "NPV",
}
SUBSET_TITLES = {"all": "the testing set", "non_subsegmental": "the non-subsegmental-only PE set"}
GROUP_TABLES = (  # (table number for "all", attribute, groups)
    (5, "gender", ("Female", "Male")),
    (7, "age", (">80", "<=80")),
    (9, "race", ("White", "Others")),
)
ATTRIBUTE_LABELS = {"gender": "Gender", "race": "Race", "age": "Age"}
GROUP_LABELS = {">80": "Age > 80", "<=80": "Age ≤ 80"}


@dataclass
class PaperTable:
    number: int
    title: str
    values: pd.DataFrame  # numbers
    low: pd.DataFrame
    high: pd.DataFrame
    lower_is_better: bool = False

    def best(self) -> pd.DataFrame:
        """True where a cell is the best of its row among the models (per group)."""
        best = pd.DataFrame(False, index=self.values.index, columns=self.values.columns)
        groups = (
            self.values.columns.get_level_values(1).unique()
            if isinstance(self.values.columns, pd.MultiIndex)
            else [None]
        )
        for group in groups:
            cols = (
                self.values.columns
                if group is None
                else [c for c in self.values.columns if c[1] == group]
            )
            block = self.values[cols]
            target = block.min(axis=1) if self.lower_is_better else block.max(axis=1)
            best[cols] = block.eq(target, axis=0) & block.notna()
        return best

    def cells(self, digits: int = 3) -> pd.DataFrame:
        """Text cells: ``0.912 (0.871-0.946)``; ``n/a`` when undefined."""

        def fmt(v, lo, hi):
            if not np.isfinite(v):
                return "n/a"
            if np.isfinite(lo) and np.isfinite(hi):
                return f"{v:.{digits}f} ({lo:.{digits}f}–{hi:.{digits}f})"
            return f"{v:.{digits}f}"

        out = self.values.copy().astype(object)
        for r in range(self.values.shape[0]):
            for c in range(self.values.shape[1]):
                out.iat[r, c] = fmt(self.values.iat[r, c], self.low.iat[r, c], self.high.iat[r, c])
        return out

    def to_markdown(self) -> str:
        cells, best = self.cells(), self.best()
        cols = list(cells.columns)
        head = [" / ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in cols]
        lines = [
            f"**Table {self.number}**: {self.title}",
            "",
            "| " + " | ".join([cells.index.name or "", *head]) + " |",
            "|" + "---|" * (len(cols) + 1),
        ]
        for row in cells.index:
            texts = [
                f"**{cells.at[row, c]}**" if best.at[row, c] else cells.at[row, c] for c in cols
            ]
            lines.append("| " + " | ".join([str(row), *texts]) + " |")
        return "\n".join(lines) + "\n"

    def to_latex(self) -> str:
        cells, best = self.cells(), self.best()
        cells = cells.where(~best, "\\textbf{" + cells.astype(str) + "}")
        cells = cells.map(lambda t: t.replace("–", "--").replace(">", "$>$").replace("≤", "$\\le$"))
        cells.columns = [
            (" / ".join(map(str, c)) if isinstance(c, tuple) else str(c))
            .replace(">", "$>$")
            .replace("≤", "$\\le$")
            for c in cells.columns
        ]
        body = cells.to_latex(escape=False, caption=f"Table {self.number}: {self.title}")
        return body.replace("_", "\\_")

    def to_csv_frame(self) -> pd.DataFrame:
        names = ["model", "group"] if isinstance(self.values.columns, pd.MultiIndex) else ["model"]
        frames = {}
        for key, frame in (("value", self.values), ("ci_low", self.low), ("ci_high", self.high)):
            frame = frame.copy()
            frame.columns = frame.columns.set_names(names)
            frames[key] = frame.stack(names, future_stack=True)
        return pd.concat(frames, axis=1).reset_index()


def _pick(metrics, subset, attribute, group, models):
    part = metrics[
        (metrics["subset"] == subset)
        & (metrics["attribute"] == attribute)
        & (metrics["group"] == group)
    ]
    out = {}
    for key in ("value", "ci_low", "ci_high"):
        table = part.pivot(index="metric", columns="model", values=key)
        out[key] = table.reindex(index=list(METRICS), columns=models)
    return out


def paper_tables(
    metrics: pd.DataFrame, fairness: pd.DataFrame, models: list[str] | None = None
) -> list[PaperTable]:
    """Build Tables 3-12 from ``metrics.csv`` and ``fairness.csv`` frames."""
    models = models or list(dict.fromkeys(metrics["model"]))
    tables = []

    def relabel(frame):
        frame = frame.rename(index=METRIC_LABELS)
        frame.index.name = "Metric"
        return frame

    for number, subset in ((3, "all"), (4, "non_subsegmental")):
        p = _pick(metrics, subset, "overall", "all", models)
        tables.append(
            PaperTable(
                number,
                f"Performance of each model on {SUBSET_TITLES[subset]}",
                relabel(p["value"]),
                relabel(p["ci_low"]),
                relabel(p["ci_high"]),
            )
        )
    for first, attribute, groups in GROUP_TABLES:
        for offset, subset in enumerate(("all", "non_subsegmental")):
            parts = {g: _pick(metrics, subset, attribute, g, models) for g in groups}
            blocks = {}
            for key in ("value", "ci_low", "ci_high"):
                frame = pd.concat({g: parts[g][key] for g in groups}, axis=1)
                frame = frame.swaplevel(axis=1)[[(m, g) for m in models for g in groups]]
                frame.columns = pd.MultiIndex.from_tuples(
                    [(m, GROUP_LABELS.get(g, g)) for m, g in frame.columns]
                )
                blocks[key] = relabel(frame)
            tables.append(
                PaperTable(
                    first + offset,
                    f"Performance of each model for different {attribute} groups on "
                    f"{SUBSET_TITLES[subset]}",
                    blocks["value"],
                    blocks["ci_low"],
                    blocks["ci_high"],
                )
            )
    for number, subset in ((11, "all"), (12, "non_subsegmental")):
        part = fairness[(fairness["subset"] == subset) & (fairness["metric"] == "eod")]
        blocks = {}
        for key in ("value", "ci_low", "ci_high"):
            frame = part.pivot(index="attribute", columns="model", values=key)
            frame = frame.reindex(index=["gender", "race", "age"], columns=models)
            frame = frame.rename(index=ATTRIBUTE_LABELS)
            frame.index.name = "Patient attribute"
            blocks[key] = frame
        tables.append(
            PaperTable(
                number,
                f"EOD (|TPR gap|) under each patient attribute on {SUBSET_TITLES[subset]}; "
                "less is fairer",
                blocks["value"],
                blocks["ci_low"],
                blocks["ci_high"],
                lower_is_better=True,
            )
        )
    return sorted(tables, key=lambda t: t.number)


def write_tables(tables: list[PaperTable], folder: str | Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for table in tables:
        stem = folder / f"table{table.number}"
        for suffix, text in ((".md", table.to_markdown()), (".tex", table.to_latex())):
            with atomic_path(stem.with_suffix(suffix)) as tmp:
                tmp.write_text(text)
        with atomic_path(stem.with_suffix(".csv")) as tmp:
            table.to_csv_frame().to_csv(tmp, index=False, float_format="%.6g")
