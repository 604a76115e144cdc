"""Evaluation commands: the paper's evaluation of predictions files (or, with
``--models-from``, an external validation of a run's models on another cohort), and the
report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from radfusion.cli.app import ConfigOpt, PrintOpt, SetOpt, command, resolve, split_list
from radfusion.pipeline.console import console, warn

PANEL = "Stages and runs"  # where --help lists these commands


@command(rich_help_panel=PANEL)
def evaluate(
    data: Annotated[
        Path, typer.Option(help="The cohort (only Labels.csv and Demographics.csv are read).")
    ],
    out: Annotated[Path, typer.Option(help="Folder for metrics.csv, thresholds.csv, ...")],
    predictions: Annotated[
        list[str] | None,
        typer.Option(
            help="Prediction CSVs (idx,prob) or folders of them; repeat or comma-separate."
        ),
    ] = None,
    models_from: Annotated[
        Path | None,
        typer.Option(
            help="External validation: score DATA with this run's models at its thresholds."
        ),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    show: PrintOpt = False,
) -> None:
    """Evaluate every model as the paper does (section evaluation), with CIs and DeLong tests.

    Youden threshold on val; six metrics on test and its non-subsegmental subset, per
    subgroup; equal-opportunity differences. With --models-from RUN, an external
    validation: RUN's models score every study of DATA at RUN's operating points, beside
    their internal figures (OUT/external.csv, OUT/report/report.html)."""
    from radfusion.errors import RadfusionError
    from radfusion.evaluation.evaluate import auroc_summary
    from radfusion.pipeline.console import print_aurocs
    from radfusion.pipeline.steps import evaluate_predictions

    resolved = resolve(config, set_, show, ["data", "evaluation"])
    if models_from is not None:
        if predictions:
            raise RadfusionError("--models-from scores the run's own models: drop --predictions")
        _external(models_from, data, out, resolved)
        return
    if not predictions:
        raise RadfusionError("give --predictions (files or folders), or --models-from RUN")
    sources = split_list(predictions)
    result = evaluate_predictions(
        data, sources, out, resolved.evaluation, resolved.seed, data_section=resolved.data
    )
    for note in result.notes:
        warn(note)
    print_aurocs(auroc_summary(result.metrics))
    console.print(f"wrote {out}/: metrics, thresholds, fairness, comparisons, subtypes")


def _external(models_from: Path, data: Path, out: Path, resolved) -> None:
    import pandas as pd

    from radfusion.evaluation.evaluate import auroc_summary
    from radfusion.pipeline.console import print_aurocs
    from radfusion.pipeline.external import external_validation
    from radfusion.rundir import RunDir

    result = external_validation(
        models_from,
        data,
        out,
        data_section=resolved.data,
        n_boot=resolved.evaluation.n_boot,
        seed=resolved.seed,
        workers=resolved.preprocess.workers,
    )
    for model, why in result.not_transferred.items():
        warn(f"{model}: not transferred: {why}")
    print_aurocs(auroc_summary(pd.read_csv(RunDir(out).eval.metrics)))
    console.print(f"report: {RunDir(out).report_page}")


@command(rich_help_panel=PANEL)
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run folder with eval/ and predictions/.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    show: PrintOpt = False,
) -> None:
    """Write RUN_DIR/report/ (section report): report.html, Tables 3-12, figures."""
    from radfusion.pipeline.steps import write_run_report
    from radfusion.rundir import RunDir

    resolved = resolve(config, set_, show, ["report"])
    console.print(f"wrote {write_run_report(RunDir(run_dir), resolved.report)}")
