"""Scoring: one new study with a run's models, a cohort with a checkpoint, and a run's recipe."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from radfusion.cli.app import SetOpt, command, config_app, fail
from radfusion.pipeline.console import console

PANEL = "Scoring"  # where --help lists these commands


@command(rich_help_panel=PANEL)
def predict(
    run: Annotated[Path, typer.Option(help="A benchmark run folder (radfusion benchmark --out).")],
    volume: Annotated[Path | None, typer.Option(help="The study as a .npy volume.")] = None,
    dicom: Annotated[Path | None, typer.Option(help="The study as a DICOM series folder.")] = None,
    ehr: Annotated[
        Path | None, typer.Option(help="One row of EHR features (the release tables' columns).")
    ] = None,
    hu_intercept: Annotated[
        int | None, typer.Option(help="Stored value + this = HU (default: detected).")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the scores here.")
    ] = None,
) -> None:
    """Score one new study with a run's models.

    Image, EHR and fused probabilities, the decision at the validation threshold, and the most
    suspicious window."""
    from radfusion.io import write_json
    from radfusion.pipeline.console import print_study_score
    from radfusion.pipeline.predict import predict_study

    score = predict_study(run, volume=volume, dicom=dicom, ehr_row=ehr, hu_intercept=hu_intercept)
    print_study_score(score)
    if json_out is not None:
        write_json(score.to_dict(), json_out)
        console.print(f"wrote {json_out}")


@command("predict-image", rich_help_panel=PANEL)
def predict_image_command(
    checkpoint: Annotated[Path, typer.Argument(help="A train-image checkpoint (.ckpt).")],
    data_dir: Annotated[Path, typer.Argument(help="The cohort whose studies to score.")],
    cache: Annotated[Path, typer.Option(help="The cache root given to radfusion preprocess.")],
    out: Annotated[Path, typer.Option(help="Predictions CSV to write (idx, prob, split, ...).")],
    split: Annotated[str | None, typer.Option(help="Only this split.")] = None,
    batch_size: Annotated[int, typer.Option(help="Windows per batch.")] = 8,
) -> None:
    """Score a cohort's studies with a checkpoint alone.

    The model and its preprocessing are rebuilt from what the checkpoint records."""
    from radfusion.pipeline.predict import score_cohort

    n = score_cohort(checkpoint, data_dir, cache, out, split=split, batch_size=batch_size)
    console.print(f"wrote {out} ({n} studies)")


@command("show", target=config_app, rich_help_panel=PANEL)
def config_show(
    source: Annotated[
        str,
        typer.Argument(help="A run folder (its config.yaml), a YAML file, or a shipped name."),
    ],
    set_: SetOpt = None,
) -> None:
    """Print a resolved configuration: a run's recipe, a file's, or a shipped one's."""
    from radfusion.config import load_config
    from radfusion.rundir import RunDir

    path = Path(source)
    if path.is_dir():
        if not RunDir(path).config.exists():
            fail(f"{path}: no config.yaml; not a radfusion run folder")
        path = RunDir(path).config
    sys.stdout.write(load_config(path if path.exists() else source, set_).to_yaml())
