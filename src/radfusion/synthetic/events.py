"""The synthetic cohort's raw EHR: MEDS events generated from a latent PE risk.

Generative model
----------------
Each study has a latent EHR risk ``z ~ N(separation * label, 1)`` and an independent
"sickness" ``s ~ N(0, 1)`` that drives how much care a patient receives regardless of PE.
Every EHR event is drawn from (z, s) and the study's demographics, which are independent of
the label. The oracle ``p_ehr = P(PE | z)`` is therefore the best any EHR model can do
(given the split's base rate): ``logit p = logit(prior) + separation * z - separation**2 / 2``.

* Medications and diagnosis groups: code ``c`` is present with probability
  ``sigmoid(logit(base_c) + beta_c * z + gamma_c * s)`` (base prevalences fall off like Zipf's
  law; anticoagulants, estrogens, chemotherapy, DVT, prior PE, cancer, fractures, surgery,
  tachycardia and dyspnoea load on z; a few alternative diagnoses load negatively), with
  ``1 + Poisson`` prescriptions or codes, at random times in the 12-month window.
* Labs: D-dimer taken and positive in exactly Table 1's numbers, the positives being the
  taken tests with the highest ``z + noise``; other tests are present at test-specific rates
  with values shifted by ``z`` (troponin, BNP, lactate, CRP) or by nothing.
* Vitals: several measurements per vital, the last one at the CT's encounter. The last value
  follows Table 1 (BMI and pulse exact per split); earlier values differ from it by an acute
  change proportional to ``z`` (pulse and breathing rate up, SpO2 and blood pressure down), so
  the slope carries signal.
* Events the leakage rules must drop: the PE diagnosis recorded at the CT's encounter or
  within 24 h before it, dyspnoea/chest-pain codes from the emergency visit, anticoagulants
  started after the CT, and events older than the 12-month window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from radfusion.data.layout import SPLITS
from radfusion.ehr.vocabulary import LAB_TESTS, Vocabulary
from radfusion.synthetic.design import PAPER, ddimer_positive_count

__all__ = ["SyntheticEHR", "generate_events"]

US_PER_DAY = 86_400_000_000
US_PER_HOUR = 3_600_000_000
#: Scales every loading below; 2.2 puts a tuned ElasticNet near the paper's EHR-only AUROC (0.92).
LOADING_SCALE = 2.2

DRUG_LOADINGS = {
    "ANTICOAGULANTS - HEPARIN": 0.5,
    "ANTICOAGULANTS - LOW MOLECULAR WEIGHT HEPARIN": 0.6,
    "ANTICOAGULANTS - COUMARIN": 0.5,
    "ANTICOAGULANTS - DIRECT FACTOR XA INHIBITORS": 0.5,
    "ESTROGENS": 0.4,
    "CONTRACEPTIVES - ORAL": 0.4,
    "ANTINEOPLASTIC - ALKYLATING AGENTS": 0.5,
    "ANTINEOPLASTIC - ANTIMETABOLITES": 0.5,
    "GLUCOCORTICOIDS": 0.2,
    "OPIOID ANALGESICS": 0.3,
    "BRONCHODILATORS - BETA AGONISTS": -0.3,
    "LOOP DIURETICS": -0.2,
}
ICD_LOADINGS = {
    "Pulmonary embolism and infarction": 0.7,
    "Phlebitis and thrombophlebitis": 0.6,
    "Deep vein thrombosis of lower extremity": 0.9,
    "Malignant neoplasm of bronchus and lung": 0.5,
    "Secondary malignant neoplasm": 0.6,
    "Malignant neoplasm of breast": 0.3,
    "Fracture of lower limb": 0.5,
    "Complications of surgical procedures": 0.5,
    "Pregnancy complications": 0.3,
    "Dyspnea": 0.4,
    "Chest pain": 0.2,
    "Syncope and collapse": 0.4,
    "Tachycardia": 0.5,
    "Long term use of anticoagulants": 0.5,
    "Heart failure": -0.4,
    "Chronic obstructive pulmonary disease": -0.3,
    "Pneumonia": -0.4,
    "Asthma": -0.2,
}
#: lab -> (mean, sd, loading on z, lower bound)
LAB_MODEL = {
    "Troponin I": (0.04, 0.05, 0.6, 0.0),
    "BNP": (180.0, 220.0, 0.4, 5.0),
    "Creatinine": (1.0, 0.35, 0.0, 0.3),
    "BUN": (17.0, 7.0, 0.0, 3.0),
    "Hemoglobin": (12.5, 1.9, 0.0, 5.0),
    "Hematocrit": (38.0, 5.5, 0.0, 15.0),
    "Platelet count": (245.0, 75.0, 0.1, 10.0),
    "WBC": (8.2, 3.1, 0.2, 0.5),
    "INR": (1.15, 0.3, 0.0, 0.8),
    "PTT": (31.0, 6.0, 0.0, 18.0),
    "Sodium": (139.0, 3.2, 0.0, 115.0),
    "Potassium": (4.1, 0.45, 0.0, 2.5),
    "Chloride": (103.0, 3.5, 0.0, 85.0),
    "Bicarbonate": (25.0, 3.0, -0.1, 10.0),
    "Glucose": (118.0, 38.0, 0.0, 40.0),
    "ALT": (31.0, 22.0, 0.0, 4.0),
    "AST": (30.0, 19.0, 0.0, 5.0),
    "Albumin": (3.8, 0.5, 0.0, 1.5),
    "Lactate": (1.5, 0.8, 0.4, 0.3),
    "CRP": (3.5, 4.0, 0.3, 0.1),
    "nan": (1.0, 1.0, 0.0, -10.0),
}
#: vital -> (mean, sd of the last value, acute change per unit z, measurement noise sd)
VITAL_MODEL = {
    "SBP": (128.0, 18.0, -4.0, 8.0),
    "DBP": (75.0, 11.0, -2.0, 6.0),
    "height_inch": (66.5, 4.0, 0.0, 0.3),
    "weight_kg": (None, None, 0.0, 1.0),  # from BMI and height
    "bmi": (None, None, 0.0, 0.4),  # Table 1, per split
    "tempf": (98.3, 0.7, 0.15, 0.4),
    "respirations": (17.5, 3.0, 1.6, 1.5),
    "spO2": (96.0, 2.4, -1.4, 1.0),
    "pulse": (None, None, 7.0, 5.0),  # Table 1, per split
}


@dataclass(frozen=True)
class SyntheticEHR:
    events: pd.DataFrame  # MEDS: subject_id, time, code, numeric_value, encounter_id
    studies: pd.DataFrame  # idx, subject_id, ct_time, encounter_id
    oracle: pd.DataFrame  # idx, p_ehr


class _Events:
    """Accumulates event columns as arrays and builds one frame at the end."""

    def __init__(self):
        self.parts: list[dict[str, np.ndarray]] = []

    def add(self, subject, time_us, code, value, encounter):
        n = len(subject)
        self.parts.append(
            {
                "subject_id": np.asarray(subject, dtype=np.int64),
                "time": np.asarray(time_us, dtype=np.int64),
                "code": np.broadcast_to(np.asarray(code, dtype=object), (n,)),
                "numeric_value": np.broadcast_to(np.asarray(value, dtype=np.float64), (n,)),
                "encounter_id": np.broadcast_to(np.asarray(encounter, dtype=np.int64), (n,)),
            }
        )

    def frame(self) -> pd.DataFrame:
        cols = {k: np.concatenate([p[k] for p in self.parts]) for k in self.parts[0]}
        time = cols.pop("time")
        frame = pd.DataFrame(
            {
                "subject_id": cols["subject_id"],
                "time": pd.to_datetime(
                    np.where(time == np.iinfo(np.int64).min, 0, time), unit="us"
                ),
                "code": cols["code"].astype(str),
                "numeric_value": cols["numeric_value"].astype(np.float32),
                "encounter_id": cols["encounter_id"],
            }
        )
        frame.loc[time == np.iinfo(np.int64).min, "time"] = pd.NaT
        frame["encounter_id"] = frame["encounter_id"].astype("Int64")
        frame.loc[frame["encounter_id"] < 0, "encounter_id"] = pd.NA
        frame = frame.sort_values(["subject_id", "time"], kind="stable", na_position="first")
        return frame.reset_index(drop=True)


def _zipf_prevalence(n: int, top: float, rng) -> np.ndarray:
    ranks = rng.permutation(n) + 1
    return np.clip(top / ranks**0.75, 0.002, 0.5)


def _coded_presence(rng, z, s, base, beta, gamma=0.5):
    lo = logit(base)[None, :] + beta[None, :] * z[:, None] + gamma * s[:, None]
    return rng.random(lo.shape) < expit(lo)


def generate_events(
    studies: pd.DataFrame,
    vocab: Vocabulary,
    rng: np.random.Generator,
    *,
    separation: float = 2.3,
) -> SyntheticEHR:
    """Draw every study's EHR events; see the module docstring for the model."""
    n = len(studies)
    label = studies["label"].to_numpy()
    split = studies["split"].to_numpy()
    z = rng.normal(separation * label, 1.0)
    s = rng.normal(0.0, 1.0, n)
    subject = studies["patient_id"].to_numpy(np.int64)
    ct = studies["ct_time"].to_numpy("datetime64[us]").astype(np.int64)
    ct_encounter = 1_000_000 + rng.permutation(n)
    visits = 2_000_000 + np.arange(n)[:, None] * 8 + np.arange(6)[None, :]

    ev = _Events()

    def regular(rows, codes, values, lo_days=1.5, hi_days=364.5):
        """Events at random times in the window, at random routine visits."""
        t = ct[rows] - (rng.uniform(lo_days, hi_days, len(rows)) * US_PER_DAY).astype(np.int64)
        enc = visits[rows, rng.integers(0, visits.shape[1], len(rows))]
        ev.add(subject[rows], t, codes, values, enc)

    # Medications and diagnosis groups.
    train_rows = np.flatnonzero(split == "train")
    for family, names, top, loadings in (
        ("inpatient", vocab.drug_classes, 0.25, DRUG_LOADINGS),
        ("outpatient", vocab.drug_classes, 0.18, DRUG_LOADINGS),
    ):
        base = _zipf_prevalence(len(names), top, rng)
        beta = LOADING_SCALE * np.array([loadings.get(x, 0.0) for x in names])
        present = _coded_presence(rng, z, s, base, beta)
        _emit_counts(ev, regular, rng, s, present, [vocab.code(family, x) for x in names])

    groups = vocab.icd_groups + vocab.rare_icd_groups
    base = np.r_[
        rng.uniform(0.03, 0.25, len(vocab.icd_groups)), np.full(len(vocab.rare_icd_groups), 0.002)
    ]
    beta = LOADING_SCALE * np.array([ICD_LOADINGS.get(x, 0.0) for x in groups])
    present = _coded_presence(rng, z, s, base, beta)
    _enforce_prevalence(present, train_rows, len(vocab.icd_groups), rng)
    _emit_counts(ev, regular, rng, s, present, [vocab.code("icd", x) for x in groups])

    _labs(ev, regular, rng, studies, z, s, subject, ct, ct_encounter, vocab)
    _vitals(ev, rng, studies, z, subject, ct, ct_encounter, visits, vocab)
    _demographics(ev, studies, subject)
    _leaks(ev, rng, label, z, subject, ct, ct_encounter, vocab)

    raw_studies = pd.DataFrame(
        {
            "idx": studies["idx"].to_numpy(),
            "subject_id": subject,
            "ct_time": studies["ct_time"].to_numpy("datetime64[us]"),
            "encounter_id": ct_encounter,
        }
    )
    prior = np.array([studies.loc[studies["split"] == x, "label"].mean() for x in SPLITS])[
        pd.Categorical(split, categories=list(SPLITS)).codes
    ]
    p_ehr = expit(logit(prior) + separation * z - separation**2 / 2)
    oracle = pd.DataFrame({"idx": studies["idx"].to_numpy(), "p_ehr": p_ehr})
    return SyntheticEHR(events=ev.frame(), studies=raw_studies, oracle=oracle)


def _emit_counts(ev, regular, rng, s, present, codes):
    rows, cols = np.nonzero(present)
    counts = 1 + rng.poisson(0.8 * np.exp(0.3 * s[rows]))
    rows_rep = np.repeat(rows, counts)
    codes_rep = np.asarray(codes, dtype=object)[np.repeat(cols, counts)]
    regular(rows_rep, codes_rep, np.nan)


def _enforce_prevalence(present, train_rows, n_common, rng):
    """Make the 1% rule keep exactly the common groups and drop exactly the rare ones."""
    n_train = len(train_rows)
    need = int(np.ceil(0.01 * n_train))
    for col in range(present.shape[1]):
        have = np.flatnonzero(present[train_rows, col])
        if col < n_common and len(have) < need + 1:
            lacking = train_rows[~present[train_rows, col]]
            present[rng.choice(lacking, need + 1 - len(have), replace=False), col] = True
        elif col >= n_common and len(have) >= need:
            drop = rng.choice(have, len(have) - need + 1, replace=False)
            present[train_rows[drop], col] = False


def _labs(ev, regular, rng, studies, z, s, subject, ct, ct_encounter, vocab):
    split = studies["split"].to_numpy()
    taken = studies["ddimer_taken"].to_numpy(bool)
    positive = np.zeros(len(studies), bool)
    for name in SPLITS:
        rows = np.flatnonzero((split == name) & taken)
        k = ddimer_positive_count(name, int((split == name).sum()))
        score = z[rows] + rng.normal(0, 0.8, len(rows))
        positive[rows[np.argsort(-score, kind="stable")[:k]]] = True
    rows = np.flatnonzero(taken)
    value = np.where(
        positive[rows],
        0.5 + 0.9 * np.exp(rng.normal(0, 0.6, len(rows))),
        rng.uniform(0.15, 0.49, len(rows)),
    ).round(2)
    t = ct[rows] - (rng.uniform(1, 6, len(rows)) * US_PER_HOUR).astype(np.int64)
    ev.add(subject[rows], t, vocab.code("lab", "D-dimer"), value, ct_encounter[rows])

    for name in vocab.lab_tests:
        if name == "D-dimer":
            continue
        mean, sd, beta, lower = LAB_MODEL.get(name, (1.0, 1.0, 0.0, -np.inf))
        p = expit(logit(rng.uniform(0.2, 0.6)) + 0.5 * s)
        has = rng.random(len(studies)) < p
        rows = np.repeat(np.flatnonzero(has), 1 + rng.poisson(1.0, has.sum()))
        value = mean + sd * (LOADING_SCALE * beta * z[rows] + rng.normal(0, 1, len(rows)))
        regular(rows, vocab.code("lab", name), np.maximum(value, lower).round(2))
    assert set(LAB_MODEL) | {"D-dimer"} >= set(LAB_TESTS)


def _standardised(x, mean, std):
    return mean + std * (x - x.mean()) / x.std()


def _vitals(ev, rng, studies, z, subject, ct, ct_encounter, visits, vocab):
    n = len(studies)
    split = studies["split"].to_numpy()
    last = {}
    bmi = np.empty(n)
    pulse = np.empty(n)
    for name in SPLITS:
        rows = split == name
        t = PAPER[name]
        raw = rng.lognormal(0.0, 0.35, rows.sum())
        bmi[rows] = _standardised(raw, *t.bmi)
        pulse[rows] = _standardised(rng.normal(0, 1, rows.sum()), *t.pulse)
    last["bmi"], last["pulse"] = bmi.round(1), pulse.round(0)
    for name, (mean, sd, _, _) in VITAL_MODEL.items():
        if mean is not None:
            last[name] = mean + sd * rng.normal(0, 1, n)
    last["weight_kg"] = last["bmi"] * (last["height_inch"] * 0.0254) ** 2

    for name in vocab.vitals:
        _, _, acute, noise = VITAL_MODEL[name]
        # BMI and pulse are measured at every CT (Table 1 reports them for all studies).
        count = rng.poisson(3.0, n)
        if name not in ("bmi", "pulse"):
            count = np.where(rng.random(n) < 0.08, 0, count)
        # The last measurement: at the CT's encounter, shortly before the CT.
        has = count >= 0 if name in ("bmi", "pulse") else count > 0
        rows = np.flatnonzero(has)
        t = ct[rows] - (rng.uniform(0.05, 1.5, len(rows)) * US_PER_DAY).astype(np.int64)
        ev.add(
            subject[rows],
            t,
            vocab.code("vital", name),
            last[name][rows].round(1),
            ct_encounter[rows],
        )
        # Earlier measurements: before the acute change.
        rows = np.repeat(np.arange(n), np.where(has, count, 0))
        value = last[name][rows] - acute * z[rows] + noise * rng.normal(0, 1, len(rows))
        t = ct[rows] - (rng.uniform(2, 364, len(rows)) * US_PER_DAY).astype(np.int64)
        enc = visits[rows, rng.integers(0, visits.shape[1], len(rows))]
        ev.add(subject[rows], t, vocab.code("vital", name), value.round(1), enc)


def _demographics(ev, studies, subject):
    first = studies.drop_duplicates("patient_id")
    none = np.iinfo(np.int64).min
    subj = first["patient_id"].to_numpy(np.int64)
    birth = first["birth_time"].to_numpy("datetime64[us]").astype(np.int64)
    ev.add(subj, birth, "MEDS_BIRTH", np.nan, -1)
    for prefix, column in (("GENDER", "gender"), ("RACE", "race"), ("SMOKING", "smoking")):
        rows = first[column].to_numpy() != ""
        codes = np.array([f"{prefix}//{v}" for v in first[column].to_numpy()[rows]], dtype=object)
        ev.add(subj[rows], np.full(rows.sum(), none), codes, np.nan, -1)


def _leaks(ev, rng, label, z, subject, ct, ct_encounter, vocab):
    """Events the leakage rules and the window must remove."""
    pe = vocab.code("icd", "Pulmonary embolism and infarction")
    pos = np.flatnonzero(label == 1)
    n = len(label)

    def at(rows, lo_h, hi_h, code, encounter, value=np.nan):
        t = ct[rows] + (rng.uniform(lo_h, hi_h, len(rows)) * US_PER_HOUR).astype(np.int64)
        ev.add(subject[rows], t, code, value, encounter)

    # The diagnosis that the CT itself produced, and its traces before the CT.
    rows = pos[rng.random(len(pos)) < 0.85]
    at(rows, 0.5, 12, pe, ct_encounter[rows])
    rows = pos[rng.random(len(pos)) < 0.5]
    at(rows, -48, -25, pe, ct_encounter[rows])  # only the encounter rule drops these
    rows = pos[rng.random(len(pos)) < 0.4]
    at(rows, -20, -1, pe, 3_000_000 + rows)  # only the 24-hour rule drops these
    for code in (vocab.code("icd", "Dyspnea"), vocab.code("icd", "Chest pain")):
        rows = np.flatnonzero(rng.random(n) < 0.3)
        at(rows, -20, -1, code, ct_encounter[rows])
    # Anticoagulation started after the diagnosis.
    rows = pos[rng.random(len(pos)) < 0.7]
    drug = vocab.code("inpatient", "ANTICOAGULANTS - HEPARIN")
    at(rows, 24, 30 * 24, drug, ct_encounter[rows])
    # History older than the window.
    rows = np.flatnonzero(rng.random(n) < 0.5)
    old_codes = [vocab.code("icd", vocab.icd_groups[i]) for i in range(5)]
    codes = np.asarray(old_codes, dtype=object)[rng.integers(0, 5, len(rows))]
    at(rows, -420 * 24, -366 * 24, codes, 4_000_000 + rows)
