"""The RadFusion release's on-disk layout: file names, columns and naming patterns.

One place for every name the release uses, so the loader, the synthetic writer and the
feature engineering agree. See ``docs/data-layout.md`` for the prose version.
"""

from __future__ import annotations

__all__ = [
    "ANNOTATIONS_FILE",
    "DEMOGRAPHIC_COLUMNS",
    "EHR_TABLES",
    "EXTRA_GROUP_ATTRIBUTES",
    "GENDER_COLUMNS",
    "LABELS_FILE",
    "LABEL_COLUMNS",
    "ORACLE_FILE",
    "PE_TYPES",
    "RACE_COLUMNS",
    "SMOKING_COLUMNS",
    "SPLITS",
    "VITALS_SENTINEL",
    "VITAL_COLUMNS",
    "WINDOW_SLICES",
]

LABELS_FILE = "Labels.csv"
ANNOTATIONS_FILE = "annotations.csv"
ORACLE_FILE = "oracle.csv"

#: Columns ``Labels.csv`` must have; others (``Unnamed: 0``, ``pred``, ``patient_id``) may appear.
LABEL_COLUMNS = ("idx", "label", "pe_type", "split")
SPLITS = ("train", "val", "test")
PE_TYPES = ("central", "segmental", "subsegmental")

#: The six EHR feature tables, in the release's order: file stem -> short description.
EHR_TABLES = {
    "Demographics": "demographics",
    "INP_MED": "inpatient medications",
    "OUT_MED": "outpatient medications",
    "ICD": "diagnosis groups",
    "LABS": "lab tests",
    "Vitals": "vitals",
}

GENDER_COLUMNS = ("Female", "Male")
RACE_COLUMNS = (
    "Asian",
    "Black",
    "Native American",
    "Other",
    "Pacific Islander",
    "Unknown_race",
    "White",
)
SMOKING_COLUMNS = ("SMOKER_N", "SMOKER_Y")
DEMOGRAPHIC_COLUMNS = ("current_age_yrs", *GENDER_COLUMNS, *RACE_COLUMNS, *SMOKING_COLUMNS)

VITAL_COLUMNS = (
    "SBP",
    "DBP",
    "height_inch",
    "weight_kg",
    "bmi",
    "tempf",
    "respirations",
    "spO2",
    "pulse",
)
#: Value the release uses for a missing vital.
VITALS_SENTINEL = -10000.0

#: PENet's window: a study shorter than this cannot fill one window.
WINDOW_SLICES = 24

# Feature-name suffixes per table, exactly as the release spells them (``Frequeny`` sic).
MED_SUFFIXES = (":Binary", ":Frequeny")
MED_SUFFIX_ALIASES = {":Frequency": ":Frequeny"}
OUTPATIENT_PREFIX = "Outpatient_"
ICD_SUFFIXES = (":frequency", ":presence")
LAB_SUFFIXES = (":Binary", ":Value")

#: MEDS code prefix per feature family.
CODE_PREFIXES = {
    "inpatient": "INP_MED",
    "outpatient": "OUT_MED",
    "icd": "ICD",
    "lab": "LAB",
    "vital": "VITAL",
    "gender": "GENDER",
    "race": "RACE",
    "smoking": "SMOKING",
}

#: The paper's fairness attributes: attribute -> (the studies column, its two groups in the
#: paper's order). A study with another value (unknown gender, no age) is in neither group.
GROUP_ATTRIBUTES = {
    "gender": ("gender", ("Female", "Male")),
    "race": ("race", ("White", "Others")),
    "age": ("age_group", (">80", "<=80")),
}
#: Attributes a cohort may add to the paper's, evaluated where its studies carry them (an
#: INSPECT cohort's MEDS demographics have ethnicity).
EXTRA_GROUP_ATTRIBUTES = {"ethnicity": ("ethnicity", ("Hispanic", "Not Hispanic"))}
