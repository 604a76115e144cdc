"""The benchmark's configuration: typed sections, read from YAML, overridden per key.

Defaults are the paper's settings (``configs/paper.yaml`` spells them out); ``cpu-demo`` is
sized for a laptop. ``--set section.key=value`` parses ``value`` as YAML (``1e-3``, ``true``,
``[mean, max]``), so every type a file can hold can be set on the command line.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.resources
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path

import yaml

from radfusion.errors import RadfusionError
from radfusion.imaging.train import TrainConfig
from radfusion.io import quote, read_text

__all__ = ["SHIPPED_CONFIGS", "BenchmarkConfig", "load_config", "shipped_config_path"]

SHIPPED_CONFIGS = ("paper", "cpu-demo")


@dataclass
class PreprocessSection:
    size: int = 208  # PENet's recipe: slices resized to 208, then cropped to 192
    hu_intercept: int | None = None  # None: detected per volume from the air peak
    workers: int = 2


@dataclass
class EHRSection:
    model: str = "elasticnet"
    features: str = "release"  # release tables, or meds (rebuilt from <data>/raw)
    cv: int | None = None  # None: select on the validation split, as the paper
    grid: dict | None = None  # None: the model's full grid
    n_jobs: int | None = None


@dataclass
class ImageSection(TrainConfig):
    model: str = "penet_50"
    crop: int = 192
    batch_size: int = 8
    max_epochs: int = 50
    windows_per_epoch: int = 4096
    accelerator: str = "auto"
    devices: str = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    pretrained: str | None = None  # a local checkpoint; nothing is downloaded
    seed: int | None = None  # None: the run's seed; set, it reseeds PENet's training alone

    def train_config(self, run_seed: int) -> TrainConfig:
        """PENet's training settings, with the image seed if set, else ``run_seed``."""
        names = {f.name for f in fields(TrainConfig)}
        values = {k: v for k, v in asdict(self).items() if k in names}
        return TrainConfig(**{**values, "seed": run_seed if self.seed is None else self.seed})

    def trainer_args(self) -> dict:
        devices = int(self.devices) if str(self.devices).isdigit() else self.devices
        return {
            "accelerator": self.accelerator,
            "devices": devices,
            "strategy": self.strategy,
            "num_nodes": self.num_nodes,
            "precision": self.precision,
        }


@dataclass
class SliceNetSection(ImageSection):
    """SliceNet (``radfusion.imaging.slicenet``): trained like PENet, on 5-slice windows
    labelled by their annotated slices; off in the paper's config."""

    enabled: bool = False
    model: str = "slicenet"
    window: int = 5  # = model_args.slices
    eval_stride: int | None = 1  # one window per slice at test time
    min_abnormal_slices: int = 3  # a window is positive when most of its slices are annotated
    abnormal_prob: float = 0.5
    max_epochs: int = 20
    windows_per_epoch: int = 16384
    batch_size: int = 32
    eval_batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    loss: str = "bce"


@dataclass
class FusionSection:
    strategies: list[str] = field(default_factory=lambda: ["mean", "weighted", "stacked", "max"])


@dataclass
class EvaluationSection:
    n_boot: int = 2000


@dataclass
class BenchmarkConfig:
    seed: int = 0
    preprocess: PreprocessSection = field(default_factory=PreprocessSection)
    ehr: EHRSection = field(default_factory=EHRSection)
    image: ImageSection = field(default_factory=ImageSection)
    slicenet: SliceNetSection = field(default_factory=SliceNetSection)
    fusion: FusionSection = field(default_factory=FusionSection)
    evaluation: EvaluationSection = field(default_factory=EvaluationSection)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


#: The type an optional key (``int | None`` and the like) holds when it is set.
_OPTIONAL = {"int": int, "float": float, "str": str, "dict": dict}


def _check_type(key: str, default, value, nullable: bool = False):
    """``value`` checked (and converted, where YAML reads loosely) against ``default``'s type."""
    if value is None or default is None:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, (str, int))
        value = str(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        expected = type(default).__name__ + (" or null" if nullable else "")
        raise RadfusionError(f"config key {key}: expected {expected}, got {quote(value)}")
    return value


def _merge(target, values: dict, prefix: str = "") -> None:
    """Set ``values`` (nested dicts) onto the dataclass ``target``, refusing unknown keys."""
    if not isinstance(values, dict):
        raise RadfusionError(f"config section {prefix.rstrip('.') or '(top)'}: expected a mapping")
    known = {f.name: f for f in fields(target)}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            raise RadfusionError(f"unknown config key {name}{hint}")
        current = getattr(target, key)
        if is_dataclass(current):
            _merge(current, value, f"{name}.")
        else:
            # An optional key (default None) is checked against its annotated type.
            base, _, rest = str(known[key].type).partition("|")
            nullable = rest.strip() == "None" and base.strip() in _OPTIONAL
            prototype = _OPTIONAL[base.strip()]() if nullable else current
            setattr(target, key, _check_type(name, prototype, value, nullable))


def _parse_set(item: str) -> dict:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise RadfusionError(f"--set {quote(item)}: expected section.key=value, e.g. image.lr=1e-3")
    value = yaml.safe_load(text) if text.strip() else None
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def shipped_config_path(name: str) -> Path:
    return Path(str(importlib.resources.files("radfusion.configs") / f"{name}.yaml"))


def load_config(source: str | Path | None = None, sets: list[str] | None = None):
    """Defaults, then ``source`` (a YAML file or a shipped name), then each ``--set``."""
    config = BenchmarkConfig()
    if source is not None:
        path = Path(source)
        if not path.exists() and str(source) in SHIPPED_CONFIGS:
            path = shipped_config_path(str(source))
        if not path.exists():
            raise RadfusionError(
                f"{source}: no such config file; shipped configs: {', '.join(SHIPPED_CONFIGS)}"
            )
        try:
            values = yaml.safe_load(read_text(path, "config file", "config")) or {}
        except yaml.YAMLError as exc:
            raise RadfusionError(f"{path}: not valid YAML ({exc})") from None
        _merge(config, values)
    for item in sets or []:
        _merge(config, _parse_set(item))
    return config
