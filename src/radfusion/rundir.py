"""Where everything in a run folder lives: the one place that spells a run-folder file name.

A run folder (``radfusion benchmark --out``, or the ``--out`` of the single-stage commands)::

    config.yaml        the resolved configuration
    run.json           the cohort it belongs to
    .benchmark.lock    held while a benchmark runs here
    benchmark.log      every stage's messages, Lightning's included
    stages/<stage>.json  fingerprint and status of each stage
    cache/             the CT cache, in a sub-folder per preprocessing
    ehr/               the EHR model (model.skops, model.json, grid.csv, importance.csv)
    <image model>/     image/, slicenet/: checkpoints/, logs/, train_config.json
    predictions/       <model>.csv for every model: ehr, image, slicenet, fusion_*, probe_*,
                       yours
    embeddings/        <encoder>.parquet: idx, then one float32 column per dimension; image
                       and slicenet written by their training, yours dropped in
    fusion/            the learned fusions' models, missing.csv, ablation.csv
    joint/             the joint fusions' checkpoints (one folder per variant)
    selection.csv      each imaging model's TPR gaps under each checkpoint choice
    eval/              metrics, thresholds, fairness, comparisons, subtypes, intersections,
                       outcomes
    report/            report.html, tables/, figures/
    tasks/<task>/      with data.task=all: one such folder per task (the cache shared), and
                       tasks.csv with report/report.html summarising them
    seeds/<seed>/      with --seeds: one such folder per seed (the cache and the EHR model
                       shared), and seeds.csv with report/report.html summarising them
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["EvalDir", "ModelDir", "RunDir"]


@dataclass(frozen=True)
class EvalDir:
    """An evaluation's folder (``RUN_DIR/eval``, or ``radfusion evaluate --out``)."""

    root: Path

    metrics = property(lambda self: self.root / "metrics.csv")
    thresholds = property(lambda self: self.root / "thresholds.csv")
    fairness = property(lambda self: self.root / "fairness.csv")
    comparisons = property(lambda self: self.root / "comparisons.csv")
    subtypes = property(lambda self: self.root / "subtypes.csv")
    intersections = property(lambda self: self.root / "intersections.csv")
    mitigation = property(lambda self: self.root / "mitigation.csv")
    outcomes = property(lambda self: self.root / "outcomes.csv")
    meta = property(lambda self: self.root / "evaluation.json")

    #: The tables every evaluation writes, as the report reads them.
    TABLES = (
        "metrics",
        "thresholds",
        "fairness",
        "comparisons",
        "subtypes",
        "intersections",
        "mitigation",
    )


@dataclass(frozen=True)
class ModelDir:
    """A trained imaging model's folder (``RUN_DIR/image``, ``RUN_DIR/slicenet``)."""

    root: Path

    checkpoints = property(lambda self: self.root / "checkpoints")
    last = property(lambda self: self.root / "checkpoints" / "last.ckpt")
    logs = "logs"  # the loggers' folder name, under root
    record = property(lambda self: self.root / "train_config.json")
    lock = property(lambda self: self.root / ".train.lock")
    predictions = property(lambda self: self.root / "predictions.csv")  # when trained alone


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    config = property(lambda self: self.root / "config.yaml")
    record = property(lambda self: self.root / "run.json")
    tasks = property(lambda self: self.root / "tasks")  # one run folder per task (task=all)
    lock = property(lambda self: self.root / ".benchmark.lock")
    log = property(lambda self: self.root / "benchmark.log")
    stages = property(lambda self: self.root / "stages")
    cache = property(lambda self: self.root / "cache")
    predictions = property(lambda self: self.root / "predictions")
    embeddings = property(lambda self: self.root / "embeddings")
    fusion = property(lambda self: self.root / "fusion")  # learned fusions' models, tables
    joint = property(lambda self: self.root / "joint")
    seeds = property(lambda self: self.root / "seeds")  # one run folder per seed (--seeds)
    eval = property(lambda self: EvalDir(self.root / "eval"))
    report = property(lambda self: self.root / "report")
    report_page = property(lambda self: self.root / "report" / "report.html")
    selection = property(lambda self: self.root / "selection.csv")  # checkpoint choice, gaps

    def stage(self, name: str) -> Path:
        """A stage's record: fingerprint and status."""
        return self.stages / f"{name}.json"

    def prediction(self, model: str) -> Path:
        """The predictions file of ``model``: the model's name is the file's stem."""
        return self.predictions / f"{model}.csv"

    def embedding(self, encoder: str) -> Path:
        """An encoder's study embeddings: ``embeddings/<encoder>.parquet``."""
        return self.embeddings / f"{encoder}.parquet"

    def model(self, name: str) -> Path:
        """A trained model's folder: ``ehr``, ``image``, ``slicenet``."""
        return self.root / name

    def checkpoints(self, name: str) -> Path:
        return ModelDir(self.model(name)).checkpoints

    # The EHR model's files.
    ehr_model = property(lambda self: self.root / "ehr" / "model.skops")
    ehr_meta = property(lambda self: self.root / "ehr" / "model.json")
    ehr_grid = property(lambda self: self.root / "ehr" / "grid.csv")
    ehr_importance = property(lambda self: self.root / "ehr" / "importance.csv")
