"""What the command line shows: progress bars, the stage lines, and the tables (Table 1 and 2
of a cohort, the test AUROCs, one study's scores). The CLI calls these; nothing else prints."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from radfusion.pipeline.stages import StageReporter

__all__ = [
    "RichReporter",
    "console",
    "err_console",
    "print_aurocs",
    "print_cohort_summary",
    "print_study_score",
    "progress",
    "stage_progress",
    "warn",
]

console = Console()
err_console = Console(stderr=True)


def warn(message: str) -> None:
    # A message is text, never markup: "[mean]" in it is printed as it is.
    console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def progress() -> Progress:
    """One progress bar style for every long command (hidden once done)."""
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def stage_progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


class RichReporter(StageReporter):
    """Stage lines plus one progress bar for the stage at work."""

    def __init__(self, bars: Progress):
        self.progress, self.task = bars, None
        self.seconds: dict[str, float] = {}  # each finished stage's wall time, in order

    def stage(self, name, status, seconds=0.0):
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
        if status in ("running", "resumed"):
            label = f"{name} (resumed)" if status == "resumed" else name
            self.task = self.progress.add_task(label, total=None)
        elif status == "skipped":
            self.progress.console.print(f"  [dim]-[/] {name:<11} unchanged, skipped")
        elif status == "off":
            self.progress.console.print(f"  [dim]-[/] {name:<11} off")
        else:
            self.seconds[name] = seconds
            self.progress.console.print(f"  [green]✓[/] {name:<11} {seconds:6.1f} s")

    def total(self, n):
        if self.task is not None:
            self.progress.update(self.task, total=n, completed=0)

    def advance(self, n=1):
        if self.task is not None:
            self.progress.advance(self.task, n)


def print_stage_times(seconds: dict[str, float], total: float) -> None:
    """One line with every stage's seconds, for the end of a long run."""
    parts = " · ".join(f"{name} {s:.0f}" for name, s in seconds.items())
    console.print(f"stage seconds: {parts} · total {total:.0f}")


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return f"{value['mean']:.2f} : {value['std']:.2f}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def print_task_summary(summary: dict) -> None:
    """An INSPECT cohort per split (:func:`radfusion.data.summary.task_summary`)."""
    splits = summary["splits"]
    order = ["overall", "train", "val", "test"]
    table = Table(title=f"{summary['layout']} cohort: studies per split")
    table.add_column("")
    for name in order:
        table.add_column(name.capitalize(), justify="right")
    table.add_row("# of studies", *[_fmt(splits[s]["studies"]) for s in order])
    table.add_row("# of patients", *[_fmt(splits[s]["patients"]) for s in order])
    table.add_row(
        "Median # of slices (IQR)",
        *[f"{_fmt(splits[s]['median_slices'])} ({_fmt(splits[s]['iqr_slices'])})" for s in order],
    )

    def spacing(s):
        sp = splits[s]["slice_spacing"]
        return "-" if sp is None else f"{sp['median']:g} ({sp['min']:g}-{sp['max']:g})"

    table.add_row("Slice spacing mm: median (range)", *[spacing(s) for s in order])
    console.print(table)
    tasks = Table(title="Labels per task: positive / negative / censored")
    tasks.add_column("Task")
    for name in order:
        tasks.add_column(name.capitalize(), justify="right")
    for task in splits["overall"]["tasks"]:
        cells = []
        for s in order:
            c = splits[s]["tasks"][task]
            cells.append(f"{c['positives']} / {c['negatives']} / {c['censored']}")
        tasks.add_row(task, *cells)
    console.print(tasks)


def print_cohort_summary(summary: dict) -> None:
    """Tables 1 and 2 of a cohort (:func:`radfusion.data.summary.summarize`)."""
    splits = summary["splits"]
    order = ["overall", "train", "val", "test"]
    table = Table(title="Table 1: data characteristics")
    table.add_column("")
    for name in order:
        table.add_column(name.capitalize(), justify="right")

    def pct(key, of):
        return [
            f"{splits[s][key]} ({100 * splits[s][key] / max(splits[s][of], 1):.1f}%)" for s in order
        ]

    table.add_row("# of studies", *[_fmt(splits[s]["studies"]) for s in order])
    table.add_row("# of patients", *[_fmt(splits[s]["patients"]) for s in order])
    table.add_row(
        "Median # of slices (IQR)",
        *[f"{_fmt(splits[s]['median_slices'])} ({_fmt(splits[s]['iqr_slices'])})" for s in order],
    )
    table.add_row("# of negative PE", *pct("negatives", "studies"))
    table.add_row("# of positive PE", *pct("positives", "studies"))
    for subtype in ("central", "segmental", "subsegmental"):
        table.add_row(f"  {subtype.capitalize()}", *pct(subtype, "positives"))
    for key, title in (("bmi", "BMI (mean : std)"), ("pulse", "Pulse (mean : std)")):
        if key in splits["overall"]:
            table.add_row(title, *[_fmt(splits[s][key]) for s in order])
    if "ddimer_taken" in splits["overall"]:
        table.add_row("D-dimer test taken", *pct("ddimer_taken", "studies"))
        table.add_row("D-dimer positive", *pct("ddimer_positive", "studies"))
    console.print(table)

    groups = Table(title="Table 2: test-set groups")
    groups.add_column("Attribute")
    groups.add_column("Group")
    groups.add_column("Including subsegmental-only PE", justify="right")
    groups.add_column("Excluding subsegmental-only PE", justify="right")
    for attr, names in (
        ("Gender", ("Female", "Male")),
        ("Race", ("White", "Others")),
        ("Age", (">80", "<=80")),
    ):
        for g in names:
            groups.add_row(
                attr,
                g,
                str(summary["test_groups"][g]),
                str(summary["test_groups_non_subsegmental"][g]),
            )
    console.print(groups)


def print_aurocs(summary) -> None:
    """The test AUROC table (``auroc_summary``): every model, all studies and non-subsegmental."""
    table = Table(title="Test AUROC (95% CI)")
    # A benchmark of every task (or of several seeds): one row per task (seed) and model.
    key = next((k for k in ("task", "seed") if k in summary.columns), None)
    tasks = key is not None
    if tasks:
        table.add_column(key)
    table.add_column("model")
    table.add_column("all test studies", justify="right")
    if not tasks:
        table.add_column("non-subsegmental", justify="right")
    for row in summary.itertuples():
        cells = [
            f"{getattr(row, f'{s}_value'):.3f} "
            f"({getattr(row, f'{s}_ci_low'):.3f}-{getattr(row, f'{s}_ci_high'):.3f})"
            for s in (("all",) if tasks else ("all", "non_subsegmental"))
        ]
        table.add_row(*([str(getattr(row, key))] if tasks else []), row.model, *cells)
    console.print(table)


def print_study_score(score) -> None:
    """One study's scores (:class:`radfusion.pipeline.predict.StudyScore`)."""
    table = Table(show_header=False)
    table.add_row("image (PENet)", f"{score.image_prob:.4f}")
    table.add_row("EHR", "-" if score.ehr_prob is None else f"{score.ehr_prob:.4f}")
    table.add_row("fused (mean)", "-" if score.fused_prob is None else f"{score.fused_prob:.4f}")
    start, end = score.best_window
    table.add_row("most suspicious window", f"slices {start}-{end}")
    verdict = "PE" if score.decision else "no PE"
    table.add_row("decision", f"{verdict} ({score.model} >= {score.threshold:.4f} is PE)")
    if score.slicenet is not None:
        s = score.slicenet
        table.add_row("image (SliceNet)", f"{s['prob']:.4f}")
        fused = "-" if s["fused_prob"] is None else f"{s['fused_prob']:.4f}"
        table.add_row("SliceNet fused (mean)", fused)
        start, end = s["best_window"]
        table.add_row("SliceNet's most suspicious slices", f"{start}-{end}")
        verdict = "PE" if s["decision"] else "no PE"
        table.add_row(
            "SliceNet decision", f"{verdict} ({s['model']} >= {s['threshold']:.4f} is PE)"
        )
    console.print(table)
    for note in score.notes:
        console.print(f"note: {note}")
