"""The one configuration: a typed section per stage, the paper's settings as defaults.

Every command reads the same sections: ``radfusion benchmark`` all of them, each single-stage
command its own (``preprocess`` reads ``preprocess``, ``train-image`` reads ``image`` or
``slicenet``, ...). A value comes from, in order: the defaults below (the paper's; the shipped
``configs/paper.yaml`` spells them out), a YAML file or shipped name (``--config paper``,
``--config cpu-demo``), then each ``--set section.key=value``, whose value is read as YAML
(``1e-3``, ``true``, ``[mean, max]``).

Importing this module imports no torch: it is read by the command line before any model is.

>>> load_config("paper", ["image.lr=1e-3"]).image.lr
0.001
"""

from __future__ import annotations

import difflib
import importlib.resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from radfusion.errors import RadfusionError
from radfusion.io import quote, read_text

__all__ = [
    "SECTIONS",
    "SHIPPED_CONFIGS",
    "Config",
    "DataSection",
    "EHRSection",
    "EvaluationSection",
    "FusionSection",
    "ImageSection",
    "PreprocessSection",
    "ReportSection",
    "SliceNetSection",
    "TrainConfig",
    "load_config",
    "shipped_config_path",
]

SHIPPED_CONFIGS = ("paper", "cpu-demo")


class Section(BaseModel):
    """A config section: unknown keys and wrong types are refused, also on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)


class DataSection(Section):
    """Which layout a data folder holds, which task's label is the study's, and, for the
    INSPECT layout, where its files are when their names are not the release's."""

    layout: Literal["auto", "radfusion", "inspect"] = "auto"  # auto: detected by file names
    # PE (the RadFusion release's only task), an INSPECT task column, a comma-separated list
    # of them, or all (a benchmark of several: one run folder per task under OUT/tasks/).
    task: str = "PE"
    metadata: str | None = None  # INSPECT files, relative to the data folder or absolute;
    labels: str | None = None  # None: found by the release's names (*metadata*.csv, ...)
    splits: str | None = None
    master: str | None = None
    meds: str | None = None  # the MEDS root (holding data/ and metadata/)
    ct_dir: str | None = None  # the NIfTI volumes' folder
    # A labelled study without a volume: "error" stops the load (the RadFusion release holds
    # every volume, so one missing is a copy to mend); "ehr" keeps it, scored by the
    # modalities it has (the EHR model, each fusion's fallback) and left out of the image
    # models' training and metrics. None: error for the RadFusion layout, ehr for INSPECT.
    without_volume: Literal["error", "ehr"] | None = None


class PreprocessSection(Section):
    size: int = Field(208, ge=8)  # PENet's recipe: slices resized to 208, then cropped to 192
    hu_intercept: Literal[0, -1024] | None = None  # None: detected per volume (the air peak)
    # NIfTI volumes resampled to this many mm between slices; None: kept as acquired. The
    # release's .npy volumes carry no spacing and are always kept.
    slice_thickness: float | None = Field(None, gt=0)
    workers: int = Field(2, ge=1)

    def fingerprint(self) -> dict:
        return self.model_dump(exclude={"workers"})  # more processes, the same cache


class EHRSection(Section):
    model: str = "elasticnet"  # elasticnet (the paper's) or hgb: radfusion.ehr.model's registry
    # release: the RadFusion tables; meds: those tables rebuilt from <data>/raw events; codes:
    # per-code features of any MEDS dataset (radfusion.ehr.codes); auto: codes for an INSPECT
    # cohort, release otherwise.
    features: Literal["auto", "release", "meds", "codes"] = "auto"
    min_frequency: float = Field(0.01, ge=0, le=1)  # codes: train studies a code needs
    windows_days: list[int] = Field(default_factory=lambda: [365], min_length=1)  # codes
    cv: int | None = Field(None, ge=2)  # None: select on the validation split, as the paper
    grid: dict[str, list[Any]] | None = None  # None: the model's full grid
    n_jobs: int | None = None


class TrainConfig(Section):
    """PENet's training recipe (the paper's: SGD 1e-2, momentum 0.9, weight decay 1e-3, focal
    loss with gamma 2, 30% abnormal windows, 24-slice windows cropped to 192). Each checkpoint
    stores these fields, so it rebuilds its model and its windows alone."""

    model: str = "penet_50"  # a name in radfusion.imaging.registry
    model_args: dict[str, Any] = Field(default_factory=dict)  # the model's constructor overrides
    max_epochs: int = Field(50, ge=1)
    windows_per_epoch: int = Field(4096, ge=1)
    batch_size: int = Field(8, ge=1)
    eval_batch_size: int = Field(1, ge=1)  # on CPU, windows one at a time are fastest
    accumulate: int = Field(1, ge=1)  # gradient accumulation: the paper's batch on less memory
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(1e-2, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd only
    weight_decay: float = Field(1e-3, ge=0)
    warmup_fraction: float = Field(0.1, ge=0, le=1)
    loss: Literal["focal", "bce"] = "focal"
    focal_gamma: float = Field(2.0, ge=0)  # focal only
    abnormal_prob: float = Field(0.3, ge=0, le=1)
    # A training window is positive with this many annotated slices: the paper's 4 slices of
    # 1.25 mm (5 mm of clot). Thick slices (a downsampled demo) need fewer.
    min_abnormal_slices: int = Field(4, ge=1)
    window: int = Field(24, ge=1)
    crop: int = Field(192, ge=8)
    # In-plane rotation of training windows within +-this many degrees (the paper's 15).
    # Bilinear resampling blurs a structure one or two pixels wide: 0 turns it off.
    max_rotation: float = Field(15.0, ge=0, le=180)
    eval_stride: int | None = Field(None, ge=1)  # None: windows side by side (= window)
    aggregate: str = Field("max", pattern=r"^(max|mean|top\d*)$")  # study = max over windows
    # The checkpoint that scores the studies: "best" validation AUROC (the paper's) or "last".
    # On a validation split of a few dozen studies the AUROC is noise enough to pick an
    # untrained epoch (docs/experiments/demo-recipe.md).
    select: Literal["best", "last"] = "best"
    # DataLoader workers. None: none on a CPU (they would take the model's cores), all cores
    # but one (at most 8) feeding a GPU; see radfusion.imaging.datamodule.loader_options.
    num_workers: int | None = Field(None, ge=0)
    # Scoring precision: "32", "bf16" (autocast), or "auto": bf16 on a GPU and on a CPU with
    # bf16 instructions (avx512_bf16, AMX), 32 elsewhere (bf16 is emulated there, 30x slower).
    eval_precision: Literal["32", "bf16", "auto"] = "32"
    seed: int = 0


class ImageSection(TrainConfig):
    """The ``image`` stage: PENet's recipe, plus where and how Lightning runs it."""

    accelerator: str = "auto"
    devices: str = "auto"
    strategy: str = "auto"
    num_nodes: int = Field(1, ge=1)
    # Lightning's precision, or "auto": bf16-mixed on a GPU that has bf16, 32-true elsewhere.
    precision: str = "auto"
    pretrained: str | None = None  # a local checkpoint; nothing is ever downloaded
    logger: Literal["csv", "tensorboard", "mlflow"] = "csv"  # Lightning's own loggers
    seed: int | None = None  # None: the run's seed; set, it reseeds this model's training alone

    def train_config(self, run_seed: int) -> TrainConfig:
        """The recipe alone (what a checkpoint stores), seeded by ``seed`` or ``run_seed``."""
        values = self.model_dump(include=set(TrainConfig.model_fields))
        return TrainConfig(**{**values, "seed": run_seed if self.seed is None else self.seed})

    def trainer_args(self) -> dict:
        """Lightning ``Trainer`` arguments: devices as a count where it is one."""
        devices = int(self.devices) if self.devices.isdigit() else self.devices
        precision = self.precision
        if precision == "auto":
            from radfusion.devices import cuda_bf16, on_gpu

            bf16 = on_gpu(self.accelerator) and cuda_bf16()
            precision = "bf16-mixed" if bf16 else "32-true"
        return {
            "accelerator": self.accelerator,
            "devices": devices,
            "strategy": self.strategy,
            "num_nodes": self.num_nodes,
            "precision": precision,
        }


class SliceNetSection(ImageSection):
    """SliceNet (``radfusion.imaging.slicenet``): trained like PENet, on 5-slice windows
    labelled by their annotated slices; off in the paper's config."""

    enabled: bool = False
    model: str = "slicenet"
    window: int = Field(5, ge=1)  # = model_args.slices
    eval_stride: int | None = Field(1, ge=1)  # one window per slice at test time
    min_abnormal_slices: int = Field(3, ge=1)  # positive when most of its slices are annotated
    abnormal_prob: float = Field(0.5, ge=0, le=1)
    max_epochs: int = Field(20, ge=1)
    windows_per_epoch: int = Field(16384, ge=1)
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    optimizer: Literal["sgd", "adamw"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    loss: Literal["focal", "bce"] = "bce"


#: The fusion designs (radfusion.fusion.designs.DESIGNS): late ones on the models'
#: probabilities, early (an embedding with the EHR features), joint (trained end to end).
FusionDesign = Literal[
    "mean", "weighted", "stacked", "stacked_logit", "max", "fair", "early", "joint"
]


class FusionSection(Section):
    # mean is the paper's late fusion. "strategies", this key's former name, is read too.
    designs: list[FusionDesign] = Field(
        default_factory=lambda: ["mean", "weighted", "stacked", "max", "fair", "early"],
        min_length=1,
    )
    # fair: the weight with the smallest validation TPR gap between this attribute's two
    # groups, among those whose validation AUROC is within fair_delta of the best weight's.
    fair_attribute: Literal["gender", "race", "age"] = "gender"
    fair_delta: float = Field(0.02, ge=0, le=1)
    early_model: Literal["elasticnet", "hgb"] = "elasticnet"  # tuned on validation
    joint_variants: list[Literal["all", "heads"]] = Field(
        default_factory=lambda: ["all", "heads"], min_length=1
    )
    joint_epochs: int = Field(4, ge=1)  # from the trained PENet checkpoint
    joint_lr: float = Field(3e-4, gt=0)  # AdamW, cosine decay
    joint_hidden: int = Field(64, ge=1)  # the EHR MLP's width
    # MODALITY:FRACTION (image or ehr): hide that modality on a random fraction of the test
    # studies, which the designs then score by their fallbacks. None: hide nothing.
    drop_modality: str | None = Field(None, pattern=r"^(image|ehr):(0(\.\d+)?|1(\.0*)?|\.\d+)$")

    def joint_fingerprint(self) -> dict:
        return self.model_dump(
            include={"joint_variants", "joint_epochs", "joint_lr", "joint_hidden"}
        )


class EvaluationSection(Section):
    n_boot: int = Field(2000, ge=100)  # bootstrap resamples of every CI
    allow_missing: bool = False  # evaluate even when some test studies have no prediction
    # Intersectional cells (gender x race x age) with fewer positives (for TPR) or negatives
    # (for FPR) are shown but left out of the gap between cells.
    min_cell_size: int = Field(10, ge=1)


class ReportSection(Section):
    title: str | None = None  # None: the run folder's name


class Config(Section):
    """The whole recipe: ``seed`` and one section per stage."""

    seed: int = 0
    data: DataSection = Field(default_factory=DataSection)
    preprocess: PreprocessSection = Field(default_factory=PreprocessSection)
    ehr: EHRSection = Field(default_factory=EHRSection)
    image: ImageSection = Field(default_factory=ImageSection)
    slicenet: SliceNetSection = Field(default_factory=SliceNetSection)
    fusion: FusionSection = Field(default_factory=FusionSection)
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)
    report: ReportSection = Field(default_factory=ReportSection)

    def to_dict(self) -> dict:
        return self.model_dump()

    def to_yaml(self, sections: list[str] | None = None) -> str:
        """The resolved configuration as YAML; only ``sections`` (and the seed) if given."""
        values = self.to_dict()
        if sections is not None:
            values = {k: v for k, v in values.items() if k == "seed" or k in sections}
        return yaml.safe_dump(values, sort_keys=False)


#: The sections, in stage order: the names ``--set`` and a YAML file may address.
SECTIONS = tuple(k for k in Config.model_fields if k != "seed")


def shipped_config_path(name: str) -> Path:
    return Path(str(importlib.resources.files("radfusion.configs") / f"{name}.yaml"))


def _parse_set(item: str) -> dict:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise RadfusionError(f"--set {quote(item)}: expected section.key=value, e.g. image.lr=1e-3")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text  # the field's type decides whether a plain string will do
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def _merge(base: dict, values, where: str) -> dict:
    """``values`` laid over ``base``: sections key by key, every other value replaced."""
    if not isinstance(values, dict):
        raise RadfusionError(f"{where}: expected a mapping of sections, got {quote(values)}")
    merged = dict(base)
    for key, value in values.items():
        if key == "fusion" and isinstance(value, dict) and "strategies" in value:
            value = {**value, "designs": value["strategies"]}  # the key's former name
            del value["strategies"]
        if key in SECTIONS and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _model_at(loc: tuple) -> type[BaseModel]:
    """The section model a validation error's location points into."""
    model: type[BaseModel] = Config
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return model


def _one_line(exc: ValidationError, where: str) -> str:
    """The first problem of ``exc`` as one line: the key, the value, what is allowed, and the
    closest allowed name."""
    error = exc.errors()[0]
    loc = tuple(str(p) for p in error["loc"])
    key = ".".join(loc) or "(top)"
    value = error.get("input")
    if error["type"] == "extra_forbidden":
        known = list(_model_at(loc).model_fields)
        close = difflib.get_close_matches(loc[-1], known, n=1)
        prefix = ".".join(loc[:-1])
        hint = f"; did you mean {prefix + '.' if prefix else ''}{close[0]}?" if close else ""
        return f"{where}: unknown config key {key}{hint} (known: {', '.join(known)})"
    allowed = error["msg"].removeprefix("Input should be ").removeprefix("Value error, ")
    hint = ""
    expected = (error.get("ctx") or {}).get("expected")
    if expected and isinstance(value, str):
        options = [o.strip(" '") for o in expected.replace(" or ", ",").split(",")]
        close = difflib.get_close_matches(value, options, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
    return f"{where}: config key {key}: got {quote(value)}, expected {allowed}{hint}"


def load_config(source: str | Path | None = None, sets: list[str] | None = None) -> Config:
    """Defaults, then ``source`` (a YAML file or a shipped name), then each ``--set``."""
    values: dict = {}
    if source is not None:
        path = Path(source)
        if not path.exists() and str(source) in SHIPPED_CONFIGS:
            path = shipped_config_path(str(source))
        if not path.exists():
            raise RadfusionError(
                f"{source}: no such config file; shipped configs: {', '.join(SHIPPED_CONFIGS)}"
            )
        try:
            text = yaml.safe_load(read_text(path, "config file", "config"))
        except yaml.YAMLError as exc:
            raise RadfusionError(f"{path}: not valid YAML ({exc})") from None
        values = _merge(values, text or {}, str(path))
        _validate(values, str(path))
    for item in sets or []:
        values = _merge(values, _parse_set(item), f"--set {item}")
    return _validate(values, "--set" if sets else "config")


def _validate(values: dict, where: str) -> Config:
    try:
        return Config.model_validate(values)
    except ValidationError as exc:
        raise RadfusionError(_one_line(exc, where)) from None
