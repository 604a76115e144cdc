"""The EHR vocabulary: drug classes, diagnosis groups, lab tests and vitals, and their MEDS codes.

The release publishes 641 drug classes, 141 diagnosis groups (those present in at least 1% of
training studies), 22 lab tests and 9 vitals. Its exact class names are not public, so the
synthetic cohort uses the clinically meaningful names below for the codes that carry signal
and numbered names (``Drug class 057``) for the rest. Real data brings its own names: the
feature engineering takes whatever the events contain.

MEDS codes are ``<PREFIX>//<name>``; the prefix says which table a code feeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from radfusion.data.layout import CODE_PREFIXES, VITAL_COLUMNS

__all__ = [
    "CODE_PREFIXES",
    "DEFAULT_N_DRUG_CLASSES",
    "DEFAULT_N_ICD_GROUPS",
    "LAB_TESTS",
    "Vocabulary",
    "default_vocabulary",
]

DEFAULT_N_DRUG_CLASSES = 641
DEFAULT_N_ICD_GROUPS = 141


NAMED_DRUG_CLASSES = (
    "ANTICOAGULANTS - HEPARIN",
    "ANTICOAGULANTS - LOW MOLECULAR WEIGHT HEPARIN",
    "ANTICOAGULANTS - COUMARIN",
    "ANTICOAGULANTS - DIRECT FACTOR XA INHIBITORS",
    "ESTROGENS",
    "CONTRACEPTIVES - ORAL",
    "ANTINEOPLASTIC - ALKYLATING AGENTS",
    "ANTINEOPLASTIC - ANTIMETABOLITES",
    "GLUCOCORTICOIDS",
    "OPIOID ANALGESICS",
    "LOOP DIURETICS",
    "BETA-ADRENERGIC BLOCKERS",
    "ACE INHIBITORS",
    "HMG COA REDUCTASE INHIBITORS",
    "PROTON PUMP INHIBITORS",
    "INSULINS",
    "BIGUANIDES",
    "BRONCHODILATORS - BETA AGONISTS",
    "CEPHALOSPORINS",
    "PENICILLINS",
    "FLUOROQUINOLONES",
    "SELECTIVE SEROTONIN REUPTAKE INHIBITORS",
    "BENZODIAZEPINES",
    "ANTIEMETICS",
    "PLATELET AGGREGATION INHIBITORS",
    "THROMBOLYTICS",
    "ELECTROLYTE REPLACEMENT",
    "LAXATIVES",
    "ANTICONVULSANTS",
    "THYROID HORMONES",
)

NAMED_ICD_GROUPS = (
    "Pulmonary embolism and infarction",
    "Phlebitis and thrombophlebitis",
    "Deep vein thrombosis of lower extremity",
    "Malignant neoplasm of bronchus and lung",
    "Secondary malignant neoplasm",
    "Malignant neoplasm of breast",
    "Heart failure",
    "Atrial fibrillation and flutter",
    "Essential hypertension",
    "Chronic obstructive pulmonary disease",
    "Pneumonia",
    "Dyspnea",
    "Chest pain",
    "Syncope and collapse",
    "Fracture of lower limb",
    "Complications of surgical procedures",
    "Pregnancy complications",
    "Obesity",
    "Type 2 diabetes mellitus",
    "Chronic kidney disease",
    "Asthma",
    "Anemia",
    "Sepsis",
    "Tachycardia",
    "Long term use of anticoagulants",
)

#: 22 lab tests; the release really has one literally named ``nan``.
LAB_TESTS = (
    "D-dimer",
    "Troponin I",
    "BNP",
    "Creatinine",
    "BUN",
    "Hemoglobin",
    "Hematocrit",
    "Platelet count",
    "WBC",
    "INR",
    "PTT",
    "Sodium",
    "Potassium",
    "Chloride",
    "Bicarbonate",
    "Glucose",
    "ALT",
    "AST",
    "Albumin",
    "Lactate",
    "CRP",
    "nan",
)


def _numbered(prefix: str, named: tuple[str, ...], total: int) -> tuple[str, ...]:
    width = len(str(total))
    filler = [f"{prefix} {i:0{width}d}" for i in range(len(named) + 1, total + 1)]
    return tuple(named[:total]) + tuple(filler)


@dataclass(frozen=True)
class Vocabulary:
    """Names of every feature family, in table column order.

    ``icd_groups`` lists every group the events may contain; the feature engineering keeps
    those present in at least ``min_icd_prevalence`` of the training studies.
    """

    drug_classes: tuple[str, ...]
    icd_groups: tuple[str, ...]
    lab_tests: tuple[str, ...] = LAB_TESTS
    vitals: tuple[str, ...] = VITAL_COLUMNS
    rare_icd_groups: tuple[str, ...] = field(default=())

    def code(self, family: str, name: str) -> str:
        return f"{CODE_PREFIXES[family]}//{name}"


def default_vocabulary(
    n_drug_classes: int = DEFAULT_N_DRUG_CLASSES,
    n_icd_groups: int = DEFAULT_N_ICD_GROUPS,
    n_rare_icd_groups: int = 19,
) -> Vocabulary:
    """The synthetic cohort's vocabulary: release-sized, with ``n_rare_icd_groups`` extra
    diagnosis groups that occur in fewer than 1% of studies (the 1% rule must drop them)."""
    drugs = _numbered("Drug class", NAMED_DRUG_CLASSES, n_drug_classes)
    groups = _numbered("Diagnosis group", NAMED_ICD_GROUPS, n_icd_groups)
    rare = tuple(f"Rare diagnosis group {i:02d}" for i in range(1, n_rare_icd_groups + 1))
    return Vocabulary(drug_classes=drugs, icd_groups=groups, rare_icd_groups=rare)
