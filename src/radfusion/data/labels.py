"""``Labels.csv``: one row per study with its label, PE subtype and split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from radfusion.data.findings import Findings, bad_ids, preview, read_csv_checked, suggest
from radfusion.data.layout import LABEL_COLUMNS, LABELS_FILE, PE_TYPES, SPLITS
from radfusion.io import quote

__all__ = ["PATIENT_COLUMNS", "read_labels"]

#: Optional patient-id column names (the public release has none; copies and our synth do).
PATIENT_COLUMNS = ("patient_id", "patient", "subject_id")


def read_labels(root: Path, findings: Findings) -> pd.DataFrame | None:
    """Read and check ``Labels.csv``; return it indexed by idx, or None on a fatal error.

    Columns of the result: ``label`` (0/1), ``pe_type`` ("" for negatives), ``split`` and,
    when the file has one, ``patient_id``.
    """
    path = root / LABELS_FILE
    frame = read_csv_checked(
        path, findings, "the labels file", "a RadFusion folder needs Labels.csv at its top level"
    )
    if frame is None:
        return None
    missing = [c for c in LABEL_COLUMNS if c not in frame.columns]
    if missing:
        findings.error(
            f"{path}: missing column(s) {missing}; found {list(frame.columns)[:8]}. "
            f"Labels.csv needs {list(LABEL_COLUMNS)}"
        )
        return None
    rows = frame.index + 2  # file line numbers: header is line 1

    idx, bad = bad_ids(frame["idx"])
    if bad.any():
        findings.error(
            f"{path}: idx must be whole non-negative numbers; line(s) {preview(rows[bad])} "
            f"have {preview(frame.loc[bad, 'idx'].tolist())}; fix or remove those rows"
        )
        return None
    frame["idx"] = idx
    dup = frame["idx"].duplicated(keep=False)
    if dup.any():
        findings.error(
            f"{path}: idx appears more than once: {preview(sorted(frame.loc[dup, 'idx'].unique()))}"
            f" (lines {preview(rows[dup])}); keep one row per study"
        )

    label = pd.to_numeric(frame["label"], errors="coerce")
    bad = ~label.isin([0, 1])
    if bad.any():
        findings.error(
            f"{path}: label must be 0 or 1; found {preview(frame.loc[bad, 'label'].unique())} "
            f"for idx {preview(frame.loc[bad, 'idx'])}"
        )
    split = frame["split"].astype(str).str.strip().str.lower()
    for value in sorted(set(split) - set(SPLITS)):
        where = frame.loc[split == value, "idx"]
        findings.error(
            f"{path}: split {quote(value)} for idx {preview(where)} is not one of "
            f"{list(SPLITS)}{suggest(value, SPLITS)}"
        )

    pe_type = frame["pe_type"].map(lambda v: "" if pd.isna(v) else str(v).strip().lower())
    positive = label == 1
    bad = positive & ~pe_type.isin(PE_TYPES)
    if bad.any():
        findings.error(
            f"{path}: positive studies need a pe_type in {list(PE_TYPES)}; idx "
            f"{preview(frame.loc[bad, 'idx'])} have {preview(pe_type[bad].unique())}"
        )
    dummy = (label == 0) & (pe_type != "")
    if dummy.any():
        findings.warn(
            f"{path}: {int(dummy.sum())} negative studies carry a pe_type "
            f"({preview(pe_type[dummy].unique())}); ignored, as the release's negatives do"
        )
    pe_type = pe_type.where(positive, "")

    out = pd.DataFrame(
        {
            "label": label.fillna(-1).astype(np.int64).to_numpy(),
            "pe_type": pe_type.to_numpy(),
            "split": split.to_numpy(),
        },
        index=pd.Index(frame["idx"].to_numpy(), name="idx"),
    )
    patient = next((c for c in PATIENT_COLUMNS if c in frame.columns), None)
    if patient is not None:
        # "P10067 " and "P10067" are one patient: ids are compared stripped.
        ids = frame[patient]
        text = ids.map(lambda v: v.strip() if isinstance(v, str) else v)
        out["patient_id"] = text.to_numpy()
        splits_per_patient = out.groupby("patient_id")["split"].nunique()
        leaked = splits_per_patient[splits_per_patient > 1].index
        if len(leaked):
            findings.error(
                f"{path}: patient(s) {preview(leaked)} have studies in more than one split "
                "(a leak between train and evaluation); move each patient's studies into one split"
            )
    return out[~out.index.duplicated(keep="first")]
