"""Fusion designs, one registry (:mod:`radfusion.fusion.designs`): late fusions of the models'
probabilities (:mod:`~radfusion.fusion.late`, the paper's mean among them), early fusion of a
study embedding with the EHR features (:mod:`~radfusion.fusion.early`), and joint fusion
trained end to end (:mod:`~radfusion.fusion.joint`); studies missing a modality are scored by
their fallbacks (:mod:`~radfusion.fusion.inputs`), and what each modality adds is measured by
:mod:`~radfusion.fusion.ablation`."""

from radfusion.fusion.late import (
    FAIR_DELTAS,
    NEEDS_LABELS,
    OWN_MODELS,
    SPREAD_RATIO,
    STRATEGIES,
    fuse,
    fuse_files,
    fusion_name,
    output_name,
    spreads,
    study_frame,
)

__all__ = [
    "FAIR_DELTAS",
    "NEEDS_LABELS",
    "OWN_MODELS",
    "SPREAD_RATIO",
    "STRATEGIES",
    "fuse",
    "fuse_files",
    "fusion_name",
    "output_name",
    "spreads",
    "study_frame",
]
