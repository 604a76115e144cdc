"""The external validation's page: run A's models on cohort B beside their internal test
figures, with CIs, and the calibration shift between the two cohorts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape

from radfusion import __version__
from radfusion.io import atomic_path
from radfusion.rundir import RunDir

__all__ = ["write_external_report"]


def _cell(row, where: str) -> str:
    value = row.get(f"{where}_value")
    if value is None or pd.isna(value):
        return "–"
    low, high = row.get(f"{where}_ci_low"), row.get(f"{where}_ci_high")
    return f"{value:.3f} [{low:.3f}, {high:.3f}]" if pd.notna(low) else f"{value:.3f}"


def write_external_report(
    out: RunDir, table: pd.DataFrame, shift: pd.DataFrame, notes: list[str], run: Path, data: Path
) -> Path:
    rows = pd.DataFrame(
        {
            "model": table["model"],
            "metric": table["metric"],
            "internal (run A's test set)": [_cell(r, "internal") for r in table.to_dict("records")],
            "external (cohort B)": [_cell(r, "external") for r in table.to_dict("records")],
        }
    )
    env = Environment(
        loader=PackageLoader("radfusion.report", "."), autoescape=select_autoescape(["html", "j2"])
    )
    from markupsafe import Markup

    page = env.get_template("external.html.j2").render(
        run=str(run),
        data=str(data),
        version=__version__,
        notes=notes,
        table=Markup(rows.to_html(index=False, escape=True, border=0)),
        shift=Markup(shift.to_html(index=False, escape=True, border=0, float_format="%.3f")),
    )
    out.report.mkdir(parents=True, exist_ok=True)
    with atomic_path(out.report_page) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out.report_page
