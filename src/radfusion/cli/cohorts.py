"""Commands on cohorts: generate one, check one, import DICOM."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from radfusion.cli.app import DataDir, command
from radfusion.pipeline.console import console, error, warn

PANEL = "Cohorts"  # where --help lists these commands


@command(rich_help_panel=PANEL)
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the cohort into.")],
    studies: Annotated[int, typer.Option(help="Number of studies (the release: 1837).")] = 1837,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same files.")] = 0,
    slices: Annotated[
        str | None, typer.Option(help="LO:HI slice counts (default Table 1's).")
    ] = None,
    size: Annotated[int, typer.Option(help="Rows and columns per slice (the release: 512).")] = 64,
    quirks: Annotated[bool, typer.Option(help="Reproduce the real release's quirks.")] = False,
    calibre: Annotated[float, typer.Option(help="Draw small arteries K times wider.")] = 1.0,
    test_studies: Annotated[int | None, typer.Option(help="The test split's size.")] = None,
    workers: Annotated[int, typer.Option(help="Processes writing volumes.")] = os.cpu_count() or 1,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier synthetic cohort.")] = False,
    keep: Annotated[
        int | None, typer.Option(help="Write only K of the studies (>= 6): a few at full size.")
    ] = None,
    layout: Annotated[
        str, typer.Option(help="radfusion (the release's) or inspect (NIfTI, CSVs, MEDS).")
    ] = "radfusion",
) -> None:
    """Generate a synthetic cohort in the release's exact layout (CTPA phantoms + EHR), or
    in INSPECT's (--layout inspect: NIfTI in varied orientations, eight tasks, MEDS)."""
    from radfusion.pipeline.console import progress
    from radfusion.synthetic.folder import synthesize

    console.print(f"Writing {studies} studies ({size}x{size}) to {out_dir}")
    with progress() as bars:
        task = bars.add_task("volumes", total=keep or studies)
        cohort = synthesize(
            out_dir,
            studies,
            seed,
            slices=slices,
            size=size,
            quirks=quirks,
            calibre=calibre,
            test_studies=test_studies,
            workers=workers,
            overwrite=overwrite,
            on_volume=lambda _: bars.advance(task),
            keep=keep,
            layout=layout,
        )
    positives = int(cohort.studies["label"].sum())
    console.print(
        f"Done: {len(cohort.studies)} studies, {positives} positive. "
        f"Check it: radfusion validate {out_dir}"
    )


@command(rich_help_panel=PANEL)
def validate(
    data_dir: DataDir,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    hu_intercept: Annotated[
        int | None, typer.Option(help="Force the HU intercept (0 or -1024) instead of detecting.")
    ] = None,
    deep: Annotated[
        bool, typer.Option(help="Also sample every volume's voxels to check its HU intercept.")
    ] = False,
    layout: Annotated[
        str, typer.Option(help="radfusion, inspect, or auto (told by the file names).")
    ] = "auto",
    meds: Annotated[
        Path | None, typer.Option(help="INSPECT: the MEDS root, where it is not found below.")
    ] = None,
) -> None:
    """Load and check a cohort; print Tables 1 and 2 (INSPECT: studies, slices and every
    task's labels per split). Exit 0 if usable, 2 on errors."""
    from radfusion.config import DataSection
    from radfusion.data.cohort import validate_cohort
    from radfusion.data.summary import summarize, summary_payload, task_summary
    from radfusion.pipeline.console import print_cohort_summary, print_task_summary

    data = DataSection(layout=layout, meds=str(meds) if meds else None)
    report = validate_cohort(data_dir, hu_intercept=hu_intercept, deep=deep, data=data)
    inspect = report.cohort is not None and report.cohort.layout == "inspect"
    summary = {}
    if report.cohort is not None:
        summary = task_summary(report.cohort) if inspect else summarize(report.cohort)
    if as_json:
        sys.stdout.write(json.dumps(summary_payload(summary, report), indent=2) + "\n")
    else:
        if summary:
            (print_task_summary if inspect else print_cohort_summary)(summary)
        for message in report.warnings:
            warn(message)
        for message in report.errors:
            error(message)
        if report.ok:
            console.print(f"[green]OK[/]: {data_dir} is usable ({len(report.warnings)} warning(s))")
    if not report.ok:
        raise typer.Exit(2)


@command("import-dicom", rich_help_panel=PANEL)
def import_dicom_command(
    dicom_root: Annotated[Path, typer.Argument(help="A tree of DICOM files (any layout).")],
    out_dir: Annotated[
        Path, typer.Argument(help="Folder for {idx}.npy, series.csv and import_report.csv.")
    ],
    workers: Annotated[
        int, typer.Option(help="Processes, one series at a time each.")
    ] = os.cpu_count() or 1,
    first_idx: Annotated[int, typer.Option(help="idx of the first series.")] = 1,
    keep_paths: Annotated[
        bool,
        typer.Option(
            help="Write source paths as they are (they may name the patient); by default "
            "every path component is hashed."
        ),
    ] = False,
) -> None:
    """Import every axial CT series as {idx}.npy (int16 HU, head to foot)."""
    from radfusion.imaging.dicom import KEEP_PATHS_WARNING, import_dicom
    from radfusion.pipeline.console import progress

    if keep_paths:
        warn(KEEP_PATHS_WARNING)
    with progress() as bars:
        task = bars.add_task("series", total=None)
        result = import_dicom(
            dicom_root,
            out_dir,
            workers=workers,
            first_idx=first_idx,
            keep_paths=keep_paths,
            on_total=lambda n: bars.update(task, total=n),
            on_series=lambda _: bars.advance(task),
        )
    console.print(f"{result.describe()}; see {out_dir / 'import_report.csv'}")
