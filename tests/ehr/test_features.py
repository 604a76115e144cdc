"""The paper's feature engineering on a hand-worked example of MEDS events."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from radfusion.ehr.features import build_features
from radfusion.ehr.vocabulary import Vocabulary

T = pd.Timestamp


def ev(subject, time, code, value=np.nan, encounter=None):
    return {
        "subject_id": subject,
        "time": time,
        "code": code,
        "numeric_value": value,
        "encounter_id": encounter,
    }


CT1 = T("2010-01-10 12:00")
CT2 = T("2012-03-01 08:00")
CT3A, CT3B = T("2015-01-01 10:00"), T("2016-06-01 10:00")
D, H = pd.Timedelta(days=1), pd.Timedelta(hours=1)

EVENTS = pd.DataFrame(
    [
        # patient 1, one CT (idx 10) at encounter 900
        ev(1, T("1950-06-15"), "MEDS_BIRTH"),
        ev(1, pd.NaT, "GENDER//Female"),
        ev(1, pd.NaT, "RACE//Black"),
        ev(1, pd.NaT, "SMOKING//N"),
        ev(1, CT1 - 250 * D, "SMOKING//Y", encounter=1),  # newer than the static code
        ev(1, CT1 - 100 * D, "VITAL//pulse", 70, 2),
        ev(1, CT1 - 40 * D, "VITAL//pulse", 76, 3),
        ev(1, CT1 - 1 * D, "VITAL//pulse", 88, 900),
        ev(1, CT1 + 1 * D, "VITAL//pulse", 200, 900),  # after the CT: never used
        ev(1, CT1 - 400 * D, "VITAL//pulse", 10, 4),  # before the window
        ev(1, CT1 - 60 * D, "VITAL//bmi", 31.0, 3),  # one value: no slope
        ev(1, CT1 - 10 * D, "INP_MED//Heparin", encounter=5),
        ev(1, CT1 - 5 * D, "INP_MED//Heparin", encounter=5),
        ev(1, CT1 + 2 * D, "INP_MED//Heparin", encounter=900),  # after the CT
        ev(1, CT1 - 200 * D, "OUT_MED//Statin", encounter=6),
        ev(1, CT1 - 380 * D, "OUT_MED//Statin", encounter=7),  # before the window
        ev(1, CT1 - 30 * D, "ICD//DVT", encounter=8),
        ev(1, CT1 - 2 * H, "ICD//DVT", encounter=9),  # within 24 h before the CT: dropped
        ev(1, CT1 - 30 * H, "ICD//PE", encounter=900),  # the CT's encounter: dropped
        ev(1, CT1 - 50 * D, "ICD//PE", encounter=10),
        ev(1, CT1 - 10 * D, "ICD//Cough", encounter=5),
        ev(1, CT1 - 3 * H, "LAB//D-dimer", 1.2, 900),  # a lab at the CT's encounter: kept
        ev(1, CT1 - 20 * D, "LAB//D-dimer", 0.3, 11),
        ev(1, CT1 - 5 * D, "LAB//nan", 4.0, 5),
        # patient 2, one CT (idx 20) at encounter 901; no race code
        ev(2, T("1930-01-01"), "MEDS_BIRTH"),
        ev(2, pd.NaT, "GENDER//Male"),
        ev(2, CT2 - 25 * H, "ICD//Cough", encounter=12),  # 25 h before: kept
        ev(2, CT2 - 3 * D, "VITAL//pulse", 90, 12),
        ev(2, CT2 - 3 * D, "VITAL//pulse", 96, 12),  # same time: no slope
        ev(2, CT2 - 2 * D, "LAB//D-dimer", 0.4, 12),
        ev(2, CT2 - 2 * D, "LAB//D-dimer", 0.9, 12),  # a tie in time: the larger value
        # patient 3, two CTs (idx 30, 31)
        ev(3, T("1980-02-29"), "MEDS_BIRTH"),
        ev(3, T("2015-08-01"), "OUT_MED//Statin", encounter=13),
    ]
)
STUDIES = pd.DataFrame(
    {
        "idx": [10, 20, 30, 31],
        "subject_id": [1, 2, 3, 3],
        "ct_time": [CT1, CT2, CT3A, CT3B],
        "encounter_id": [900, 901, 910, 911],
    }
)
VOCAB = Vocabulary(
    drug_classes=("Heparin", "Statin"),
    icd_groups=("DVT", "PE", "Cough"),
    lab_tests=("D-dimer", "nan"),
    vitals=("bmi", "pulse"),
)


@pytest.fixture(scope="module")
def tables():
    return build_features(EVENTS, STUDIES, vocabulary=VOCAB)


def test_vitals_slope_is_the_least_squares_slope_per_day(tables):
    # x = days before the CT (-100, -40, -1), y = (70, 76, 88):
    # mean x = -47, mean y = 78; Sxy = (-53)(-8) + (7)(-2) + (46)(10) = 870;
    # Sxx = 53^2 + 7^2 + 46^2 = 4974; slope = 870 / 4974 per day.
    vitals = tables["Vitals"]
    assert vitals.loc[10, "pulse"] == pytest.approx(870 / 4974)
    assert np.isnan(vitals.loc[10, "bmi"])  # one measurement
    assert np.isnan(vitals.loc[20, "pulse"])  # two at the same time
    assert vitals.loc[30].isna().all()


def test_medications_count_within_the_window_only(tables):
    inp, out = tables["INP_MED"], tables["OUT_MED"]
    assert list(inp.columns) == [
        "Heparin:Binary",
        "Heparin:Frequeny",
        "Statin:Binary",
        "Statin:Frequeny",
    ]
    assert inp.loc[10, "Heparin:Frequeny"] == 2 and inp.loc[10, "Heparin:Binary"] == 1
    assert out.loc[10, "Outpatient_Statin:Frequeny"] == 1
    # Patient 3's statin falls in the second CT's window only.
    assert out.loc[30, "Outpatient_Statin:Binary"] == 0
    assert out.loc[31, "Outpatient_Statin:Binary"] == 1


def test_icd_leakage_rules(tables):
    icd = tables["ICD"]
    assert list(icd.columns) == [
        "DVT:frequency",
        "DVT:presence",
        "PE:frequency",
        "PE:presence",
        "Cough:frequency",
        "Cough:presence",
    ]
    assert icd.loc[10, "DVT:frequency"] == 1  # the one 2 h before the CT is dropped
    assert icd.loc[10, "PE:frequency"] == 1  # the one at the CT's encounter is dropped
    assert icd.loc[20, "Cough:presence"] == 1  # 25 h before the CT is allowed


def test_encounter_rule_can_cover_every_code():
    tables = build_features(EVENTS, STUDIES, vocabulary=VOCAB, leakage_scope="all")
    assert tables["LABS"].loc[10, "D-dimer:Value"] == pytest.approx(0.3)
    assert tables["Vitals"].loc[10, "pulse"] == pytest.approx(6 / 60)  # (70, 76) over 60 days


def test_labs_latest_value_and_presence(tables):
    labs = tables["LABS"]
    assert list(labs.columns) == ["D-dimer:Binary", "D-dimer:Value", "nan:Binary", "nan:Value"]
    assert labs.loc[10, "D-dimer:Value"] == pytest.approx(1.2)
    assert labs.loc[20, "D-dimer:Value"] == pytest.approx(0.9)
    assert labs.loc[10, "nan:Value"] == pytest.approx(4.0)
    assert labs.loc[20, "nan:Binary"] == 0 and np.isnan(labs.loc[20, "nan:Value"])


def test_demographics(tables):
    demo = tables["Demographics"]
    assert demo.loc[10, "current_age_yrs"] == 59  # 1950-06-15 to 2010-01-10
    assert demo.loc[20, "current_age_yrs"] == 82
    assert demo.loc[30, "current_age_yrs"] == 34 and demo.loc[31, "current_age_yrs"] == 36
    assert demo.loc[10, ["Female", "Black", "SMOKER_Y"]].tolist() == [1, 1, 1]
    assert demo.loc[10, ["Male", "White", "SMOKER_N", "Unknown_race"]].tolist() == [0, 0, 0, 0]
    assert demo.loc[20, ["Male", "Unknown_race", "SMOKER_N", "SMOKER_Y"]].tolist() == [1, 1, 0, 0]


def test_rare_diagnosis_groups_dropped_on_training_prevalence():
    # Cough is in studies 10 and 20; DVT and PE only in 10. Counted over train = {10, 20, 30}:
    # Cough 2/3 is kept at a 50% threshold, DVT and PE (1/3) are dropped.
    tables = build_features(
        EVENTS, STUDIES, vocabulary=VOCAB, train_idx=[10, 20, 30], min_icd_prevalence=0.5
    )
    assert list(tables["ICD"].columns) == ["Cough:frequency", "Cough:presence"]


def test_vocabulary_inferred_from_codes():
    tables = build_features(EVENTS, STUDIES)
    assert set(tables["LABS"].columns) == {
        "D-dimer:Binary",
        "D-dimer:Value",
        "nan:Binary",
        "nan:Value",
    }
    assert "Outpatient_Statin:Frequeny" in tables["OUT_MED"].columns


@pytest.mark.parametrize(
    ("offset", "encounter", "kept"),
    [
        (-pd.Timedelta(hours=23, minutes=59), 1, False),  # just inside 24 h
        (-pd.Timedelta(hours=24), 1, False),  # exactly 24 h counts as within
        (-pd.Timedelta(hours=24, minutes=1), 1, True),  # just outside 24 h
        (-pd.Timedelta(days=300), 900, False),  # the CT's own encounter, long before
        (-pd.Timedelta(days=300), 901, True),  # another encounter
        (pd.Timedelta(0), 1, False),  # at the CT time: never used
        (-pd.Timedelta(days=365), 1, True),  # the window's first instant
        (-pd.Timedelta(days=365, seconds=1), 1, False),  # before the window
    ],
)
def test_leakage_and_window_boundaries(offset, encounter, kept):
    events = pd.DataFrame([ev(1, CT1 + offset, "ICD//DVT", encounter=encounter)])
    studies = STUDIES.iloc[[0]]
    vocab = Vocabulary(drug_classes=(), icd_groups=("DVT",), lab_tests=(), vitals=())
    icd = build_features(events, studies, vocabulary=vocab, min_icd_prevalence=0.0)["ICD"]
    assert icd.loc[10, "DVT:presence"] == int(kept)


def test_study_without_events_and_unknown_categories():
    events = pd.DataFrame([ev(7, pd.NaT, "RACE//Martian"), ev(7, pd.NaT, "GENDER//Female")])
    studies = pd.DataFrame(
        {"idx": [70, 80], "subject_id": [7, 8], "ct_time": [CT1, CT1], "encounter_id": [1, 2]}
    )
    tables = build_features(events, studies, vocabulary=VOCAB)
    demo = tables["Demographics"]
    assert demo.loc[70, "Unknown_race"] == 1 and demo.loc[70, "Female"] == 1  # unknown -> Unknown
    # Subject 8 has no events at all: zero counts, missing values, Unknown_race; never dropped.
    assert demo.loc[80, "Unknown_race"] == 1 and np.isnan(demo.loc[80, "current_age_yrs"])
    assert (tables["INP_MED"].loc[80] == 0).all()
    assert tables["LABS"].loc[80, "D-dimer:Binary"] == 0
    assert np.isnan(tables["LABS"].loc[80, "D-dimer:Value"])
    assert tables["Vitals"].loc[80].isna().all()
