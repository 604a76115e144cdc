"""SliceNet: a 2.5-D slice classifier, the imaging model that learns from the slice labels.

PENet labels a window (24 slices) as a whole; on a cohort of a few hundred studies most of a
positive study's windows are positive, so "this study looks positive" fits its labels almost as
well as "this artery is grey" (docs/experiments/penet-on-the-phantom.md, item 6). SliceNet takes
a few adjacent slices (5 by default) as the channels of a 2-D CNN and is trained on short
windows labelled by the annotated slices they hold, so a negative window of a positive study
teaches it where the clot is not. Its first stage runs at the slice's full resolution, where a
segmental clot is a few pixels wide. A study's probability is the highest over its windows (one
per slice: ``eval_stride`` 1), and the best window names the slices that drove it.

The network: four stages of two 3x3 convolutions (BatchNorm, ReLU), ``width`` doubling per
stage with a 2x max-pool between, global max-pooling (a small finding anywhere in the slice
counts), dropout, a linear head whose bias starts at ``logit(prior)``. It reads the same
``[batch, 1, slices, H, W]`` windows as PENet, so the training module, checkpoints, resume,
``radfusion predict`` and the evaluation are PENet's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from radfusion.errors import RadfusionError
from radfusion.imaging.registry import register_model

__all__ = ["SliceNet", "SliceNetConfig", "slicenet"]


@dataclass(frozen=True)
class SliceNetConfig:
    slices: int = 5  # adjacent slices read as channels: the training window's length
    width: int = 32  # channels of the first stage; doubled at each of the next three
    dropout: float = 0.2
    prior: float = 0.5  # the head's bias starts at logit(prior)


def _stage(cin: int, cout: int) -> nn.Sequential:
    layers = []
    for c in (cin, cout):
        layers += [nn.Conv2d(c, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)]
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class SliceNet(nn.Module):
    """``[B, 1, slices, H, W]`` windows -> logits ``[B, 1]``."""

    # What the training module converts inputs and weights to: 2-D convolutions on a 5-D
    # tensor have no channels-last-3d form.
    memory_format = torch.contiguous_format

    def __init__(self, config: SliceNetConfig = SliceNetConfig()):
        super().__init__()
        self.config = c = config
        if c.slices < 1 or c.width < 1:
            raise RadfusionError(f"SliceNet needs slices >= 1 and width >= 1; got {c}")
        widths = [c.width * 2**k for k in range(4)]
        stages, cin = [], c.slices
        for k, w in enumerate(widths):
            if k:
                stages.append(nn.MaxPool2d(2, ceil_mode=True))
            stages.append(_stage(cin, w))
            cin = w
        self.features = nn.Sequential(*stages)
        self.num_features = cin
        self.dropout = nn.Dropout(c.dropout)
        self.head = nn.Linear(cin, 1)
        nn.init.constant_(self.head.bias, math.log(c.prior / (1 - c.prior)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled embedding ``[B, num_features]``."""
        if x.ndim != 5 or x.shape[1] != 1 or x.shape[2] != self.config.slices:
            raise RadfusionError(
                f"SliceNet expects windows shaped [batch, 1, {self.config.slices}, H, W]; "
                f"got {list(x.shape)} (set the image window to model_args.slices)"
            )
        # Channels-last 2-D convolutions: 1.4x faster training steps and 2.3x faster inference
        # on CPU (width 24, batches of 32 windows of 5 x 60 x 60).
        x = x[:, 0].contiguous(memory_format=torch.channels_last)
        return self.features(x).amax(dim=(2, 3))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def slicenet(**overrides) -> SliceNet:
    """SliceNet: 5 slices, widths 32-256 (about 1.2 M parameters)."""
    fields = set(SliceNetConfig.__dataclass_fields__)
    unknown = set(overrides) - fields
    if unknown:
        raise RadfusionError(
            f"unknown SliceNet argument(s) {sorted(unknown)}; known: {sorted(fields)}"
        )
    return SliceNet(SliceNetConfig(**overrides))
