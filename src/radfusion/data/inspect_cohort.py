"""An INSPECT folder read into what a :class:`~radfusion.data.cohort.Cohort` holds.

The studies get the same columns as a RadFusion cohort's, so every stage past the reader runs
one code path: ``label`` (the chosen task's), ``split``, ``patient_id``, ``pe_type`` (empty:
INSPECT has no subtypes) and ``non_subsegmental`` (all True), the fairness groups ``gender``
(Female/Male/Unknown), ``race`` (White/Others), ``ethnicity`` and ``age_group`` (``>80`` /
``<=80``) from the MEDS demographics at the prediction time, and the volume index. Beyond them:
``image_id``, ``subject_id``, ``study_time``, ``prediction_time`` and the slice spacings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from radfusion.data.findings import Findings, preview
from radfusion.data.inspect import inspect_paths, read_inspect
from radfusion.data.layout import EXTRA_GROUP_ATTRIBUTES
from radfusion.errors import RadfusionError

__all__ = ["ETHNICITY_GROUPS", "group_columns", "read_inspect_cohort"]

AGE_CUTOFF = 80
# Spellings of the demographic values in MEDS exports of OMOP data: the concept's code or
# name (OMOP's Gender vocabulary: F 8532, M 8507; Race: 5 / 8527 White; Ethnicity: Hispanic
# 38003563, Not Hispanic 38003564).
_FEMALE = {"f", "female", "8532"}
_MALE = {"m", "male", "8507"}
_WHITE = {"white", "5", "8527"}
_HISPANIC = {"hispanic", "hispanic or latino", "38003563"}
_NOT_HISPANIC = {"not hispanic", "not hispanic or latino", "38003564"}
ETHNICITY_GROUPS = EXTRA_GROUP_ATTRIBUTES["ethnicity"][1]


def group_columns(groups: pd.DataFrame) -> pd.DataFrame:
    """MEDS demographic values (:func:`radfusion.data.meds.study_groups`) -> the paper's
    groups, plus ethnicity."""
    gender = groups["gender"].astype(str).str.strip().str.lower()
    race = groups["race"].astype(str).str.strip().str.lower()
    ethnicity = groups["ethnicity"].astype(str).str.strip().str.lower()
    age = groups["age"].astype(float)
    return pd.DataFrame(
        {
            "age": age,
            "gender": np.select(
                [gender.isin(_FEMALE), gender.isin(_MALE)], ["Female", "Male"], "Unknown"
            ),
            "race": np.where(race.isin(_WHITE), "White", "Others"),
            "ethnicity": np.select(
                [ethnicity.isin(_HISPANIC), ethnicity.isin(_NOT_HISPANIC)],
                list(ETHNICITY_GROUPS),
                "Unknown",
            ),
            "age_group": np.where(age.isna(), "Unknown", np.where(age > AGE_CUTOFF, ">80", "<=80")),
        },
        index=groups.index,
    )


def _groups(studies: pd.DataFrame, meds: Path | None, findings: Findings, events_cache: dict):
    empty = pd.DataFrame(
        {"gender": "Unknown", "race": "Unknown", "ethnicity": "Unknown", "age": np.nan},
        index=studies.index,
    )
    if meds is None:
        findings.warn(
            "no MEDS EHR found (a folder with data/*.parquet and metadata/); EHR models and the "
            "gender, race and age groups are unavailable; name it with --set data.meds=FOLDER"
        )
        return group_columns(empty).assign(has_ehr=False)
    from radfusion.data.meds import read_event_arrays, study_groups

    try:
        events = read_event_arrays(meds)
    except RadfusionError as exc:
        findings.error(str(exc))
        return group_columns(empty).assign(has_ehr=False)
    events_cache["events"] = events
    linked = studies["subject_id"].isin(events.subjects)
    if not linked.all():
        findings.warn(
            f"{meds}: {int((~linked).sum())} stud(ies) without a MEDS subject (image_id "
            f"{preview(studies.loc[~linked, 'image_id'], 3)}): no EHR, so scored by the image "
            "models and each fusion's fallback, left out of the EHR model; groups Unknown"
        )
    groups = study_groups(events, studies)
    out = group_columns(groups)
    unknown = (out["gender"] == "Unknown") & linked
    if unknown.any():
        findings.warn(
            f"{meds}: {int(unknown.sum())} linked stud(ies) without a gender code before their "
            "prediction time; gender group 'Unknown'"
        )
    out["has_ehr"] = linked.reindex(out.index).to_numpy()
    return out


def read_inspect_cohort(root: Path, findings: Findings, data=None, *, volumes: bool = True):
    """What a :class:`~radfusion.data.cohort.Cohort` of an INSPECT folder is made of (its
    ``studies`` with every study, ``tasks``, ``meds_root`` and the events read for the
    groups), or None when an error stops the read; the problems go to ``findings``."""
    read = read_inspect(
        root,
        findings,
        inspect_paths(data),
        volumes=volumes,
        without_volume=getattr(data, "without_volume", None),
    )
    if read is None:
        return None
    studies, tasks, meds = read
    cache: dict = {}
    studies = studies.join(_groups(studies, meds, findings, cache))
    studies["pe_type"] = ""
    studies["non_subsegmental"] = True
    if "volume_path" not in studies.columns:
        studies["volume_path"] = np.nan
    return {"studies": studies, "tasks": tasks, "meds_root": meds, "_events": cache}
