"""A fusion's inputs, one column per modality, with the studies that lack one.

A study lacks a modality when its model wrote no probability for it (no volume, no EHR row) or
when ``fusion.drop_modality`` hides it: ``image:0.3`` hides every image input (each imaging
model's probability, every embedding) of a random 30% of the test studies, seeded by the run's
seed, to measure how a design holds up when a modality goes missing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from radfusion.errors import RadfusionError
from radfusion.predictions import read_predictions

__all__ = ["MODALITIES", "hidden_studies", "missing_counts", "parse_drop", "probability_column"]

#: The modalities a fusion combines: every imaging input is ``image``.
MODALITIES = ("image", "ehr")


def parse_drop(text: str | None) -> tuple[str, float] | None:
    """``"image:0.3"`` -> ``("image", 0.3)``; None -> None; anything else a one-line error."""
    if text is None:
        return None
    modality, sep, fraction = str(text).partition(":")
    try:
        value = float(fraction)
    except ValueError:
        value = -1.0
    if not sep or modality not in MODALITIES or not 0 <= value <= 1:
        raise RadfusionError(
            f"fusion.drop_modality {text!r}: expected MODALITY:FRACTION with a modality of "
            f"{list(MODALITIES)} and a fraction in [0, 1], e.g. image:0.3"
        )
    return modality, value


def hidden_studies(studies: pd.DataFrame, drop: str | None, seed: int) -> dict[str, pd.Index]:
    """The test studies whose modality ``drop`` hides: ``{modality: idx}``."""
    parsed = parse_drop(drop)
    if parsed is None:
        return {}
    modality, fraction = parsed
    test = studies.index[studies["split"] == "test"]
    rng = np.random.default_rng([seed, 24])
    chosen = rng.choice(len(test), size=round(fraction * len(test)), replace=False)
    return {modality: test[np.sort(chosen)]}


def probability_column(path, studies: pd.DataFrame, hidden: pd.Index | None = None) -> pd.Series:
    """A model's probability for every study of the cohort: NaN where the file has none or
    the study is ``hidden``."""
    prob, _ = read_predictions(path, studies, allow_missing=True)
    column = prob.reindex(studies.index)
    if hidden is not None and len(hidden):
        column.loc[hidden] = np.nan
    return column


def missing_counts(inputs: dict[str, pd.Series], absent: dict[str, pd.Index], hidden, studies):
    """Per split and input: the studies, those its model wrote nothing for, and those
    ``fusion.drop_modality`` hid."""
    rows = []
    for name, column in inputs.items():
        modality = "ehr" if name == "ehr" else "image"
        gone = hidden.get(modality, pd.Index([]))
        for split in ("train", "val", "test"):
            members = studies.index[studies["split"] == split]
            rows.append(
                {
                    "split": split,
                    "input": name,
                    "modality": modality,
                    "studies": len(members),
                    "absent": int(members.isin(absent.get(name, pd.Index([]))).sum()),
                    "hidden": int(members.isin(gone).sum()),
                    "scored_without": int(column.reindex(members).isna().sum()),
                }
            )
    return pd.DataFrame(rows)
