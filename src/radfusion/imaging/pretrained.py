"""Initialise a model from a local checkpoint file: never a download.

Accepted: a radfusion PENet checkpoint (a Lightning ``.ckpt`` with ``state_dict``), a plain
state dict, or the original PENet format (``model_state``), whose keys are normalised first:
``module.`` prefixes (DataParallel) stripped, ``xnet_blocks`` (the Kinetics video model)
renamed to ``penet_blocks``, and the original's layer names (``in_conv``,
``encoders.i.penet_blocks.j``, ``se_block.excite``, ``down_sample``, ``classifier.fc``) mapped
onto ours. A 3-channel
stem kernel is folded onto our 1-channel stem by summing over its input channels (exact for a
window repeated three times). Tensors that do not fit (the Kinetics 600-class head, a different
width) are left at their initial values and reported. A file is refused when less than
``min_fraction`` of the model's tensors load from it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from radfusion.errors import RadfusionError

__all__ = ["LoadReport", "load_pretrained", "normalise_keys"]


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # model tensors the file did not provide
    unexpected: list[str] = field(default_factory=list)  # file tensors the model has no use for
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    folded: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"loaded {len(self.loaded)} tensors"]
        if self.folded:
            out.append(f"folded 3-channel stem onto 1 channel: {self.folded}")
        if self.mismatched:
            out.append(
                "shape mismatch (kept initial values): "
                + ", ".join(f"{k} {tuple(a)} vs {tuple(b)}" for k, a, b in self.mismatched[:10])
            )
        if self.missing:
            out.append(f"not in the file ({len(self.missing)}): {self.missing[:10]}")
        if self.unexpected:
            out.append(f"unused from the file ({len(self.unexpected)}): {self.unexpected[:10]}")
        return out


#: The original PENet's parameter names -> ours (names only: the layers are the same).
ORIGINAL_NAMES = (
    (re.compile(r"^in_conv\."), "stem."),
    (re.compile(r"^encoders\.(\d+)\.penet_blocks\.(\d+)\."), r"stages.\1.\2."),
    (re.compile(r"\.se_block\.excite\.0\."), ".se.fc1."),
    (re.compile(r"\.se_block\.excite\.2\."), ".se.fc2."),
    (re.compile(r"\.down_sample\."), ".shortcut."),
    (re.compile(r"^classifier\.fc\."), "head."),
)


def normalise_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip wrappers' prefixes, rename the video model's ``xnet_blocks`` to
    ``penet_blocks``, then map the original PENet's names onto ours."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.").removeprefix("model.")
        key = key.replace("xnet_blocks", "penet_blocks")
        for pattern, replacement in ORIGINAL_NAMES:
            key = pattern.sub(replacement, key)
        out[key] = value
    return out


def load_pretrained(
    model: nn.Module, path: str | os.PathLike, *, min_fraction: float = 0.5
) -> LoadReport:
    path = Path(path)
    if not path.exists():
        raise RadfusionError(f"{path}: pretrained checkpoint not found (nothing is downloaded)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RadfusionError(
            f"{path}: cannot be read safely as tensors ({type(exc).__name__}); radfusion loads "
            "checkpoints with weights_only=True and never unpickles code"
        ) from exc
    state = {}
    if isinstance(blob, dict):  # Lightning's, the original's, or a bare state dict
        state = blob.get("state_dict", blob.get("model_state", blob))
    if not isinstance(state, dict) or not state:
        raise RadfusionError(f"{path}: holds no state dict")
    state = normalise_keys(state)
    own = model.state_dict()
    report, accepted = LoadReport(), {}
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
            continue
        target = own[key]
        if (
            value.ndim == 5
            and target.ndim == 5
            and value.shape[1] == 3
            and target.shape[1] == 1
            and value.shape[0] == target.shape[0]
            and value.shape[2:] == target.shape[2:]
        ):
            value = value.sum(dim=1, keepdim=True)
            report.folded.append(key)
        if value.shape != target.shape:
            report.mismatched.append((key, tuple(value.shape), tuple(target.shape)))
            continue
        accepted[key] = value
        report.loaded.append(key)
    report.missing = [k for k in own if k not in accepted]
    if len(accepted) < min_fraction * len(own):
        raise RadfusionError(
            f"{path}: only {len(accepted)} of {len(own)} tensors fit this model; is it a "
            "checkpoint of another architecture? " + "; ".join(report.lines()[1:3])
        )
    model.load_state_dict(accepted, strict=False)
    return report
