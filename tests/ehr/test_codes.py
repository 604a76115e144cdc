"""The code featuriser on the MEDS community's static sample dataset (hand-checked values) and
on random events against a plain pandas computation of every column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from meds_testing_helpers.dataset import MEDSDataset
from meds_testing_helpers.static_sample_data import SIMPLE_STATIC_SHARDED_BY_SPLIT

from radfusion.data.meds import read_event_arrays, study_groups
from radfusion.ehr.codes import CodeFeaturiser


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("meds_sample")
    MEDSDataset.from_yaml(SIMPLE_STATIC_SHARDED_BY_SPLIT).write(root)
    return read_event_arrays(root)


def studies(rows):
    frame = pd.DataFrame(rows, columns=["idx", "subject_id", "prediction_time"])
    frame["prediction_time"] = pd.to_datetime(frame["prediction_time"])
    return frame.set_index("idx")


TRAIN = studies(
    [
        (1, 239684, "2010-05-11 18:30:00"),  # mid-admission: 3 HR, 3 TEMP so far
        (2, 1195293, "2010-06-20 20:30:00"),  # his 32nd birthday; 5 HR, 5 TEMP
        (3, 239684, "2010-05-11 17:41:51"),  # the admission's own second: nothing before
        (4, 68729, "2011-06-01 00:00:00"),  # a year and more after her only stay
    ]
)


def test_hand_checked_values_on_the_meds_sample(sample):
    featuriser = CodeFeaturiser(min_frequency=0.3).fit(sample, TRAIN)
    # Present for 2 (CARDIAC), 3 (HR, TEMP) of 4 studies; PULMONARY and DISCHARGE for 1.
    assert featuriser.codes_ == sorted(featuriser.codes_, key=list(sample.codes).index)
    assert set(featuriser.codes_) == {"ADMISSION//CARDIAC", "HR", "TEMP"}
    assert set(featuriser.numeric_) == {"HR", "TEMP"}
    assert featuriser.static_ == [
        "EYE_COLOR//BLUE",
        "EYE_COLOR//BROWN",
        "EYE_COLOR//HAZEL",
        "HEIGHT",
    ]
    test = studies([(9, 1500733, "2010-06-03 16:00:00"), (10, 5, "2010-01-01 00:00:00")])
    features = featuriser.transform(sample, pd.concat([TRAIN, test]))
    x = pd.DataFrame(features.matrix.toarray(), index=features.index, columns=features.names)
    assert x.loc[1, "HR:count_365d"] == 3 and x.loc[1, "HR:latest"] == pytest.approx(113.4)
    assert x.loc[1, "TEMP:latest"] == pytest.approx(95.8)
    assert x.loc[1, "ADMISSION//CARDIAC:count_365d"] == 1
    assert x.loc[1, "age_years"] == 29 and x.loc[1, "age_years:missing"] == 0
    assert x.loc[1, "EYE_COLOR//BROWN:static"] == 1
    assert x.loc[1, "HEIGHT:static"] == pytest.approx(175.271115221764, rel=1e-6)
    assert x.loc[2, "HR:count_365d"] == 5 and x.loc[2, "HR:latest"] == pytest.approx(107.7)
    assert x.loc[2, "TEMP:count_365d"] == 5 and x.loc[2, "TEMP:latest"] == pytest.approx(100.0)
    assert x.loc[2, "age_years"] == 32
    assert (x.loc[3, [c for c in x.columns if ":count" in c or ":latest" in c]] == 0).all()
    # Outside the 365-day window, still present, and its latest value kept.
    assert x.loc[4, "HR:count_365d"] == 0 and x.loc[4, "HR:present"] == 1
    assert x.loc[4, "HR:latest"] == pytest.approx(86.0)
    assert x.loc[4, "EYE_COLOR//HAZEL:static"] == 1 and x.loc[4, "EYE_COLOR//BROWN:static"] == 0
    # A held-out subject: HR at 14:54:38 and 15:39:49 before 16:00; a subject without events.
    assert x.loc[9, "HR:count_365d"] == 2 and x.loc[9, "HR:latest"] == pytest.approx(84.4)
    assert x.loc[10].drop("age_years:missing").eq(0).all()
    assert x.loc[10, "age_years:missing"] == 1


def test_the_columns_are_learnt_on_train_only(sample):
    """The frequency rule counts training studies: moving study 4 to test drops the codes only
    it has, and its features never add a column."""
    fitted = CodeFeaturiser(min_frequency=0.3).fit(sample, TRAIN.drop(index=4))
    assert "ADMISSION//PULMONARY:present" not in fitted.names_
    assert fitted.transform(sample, TRAIN).names == fitted.names_


def write_events(root, frame):
    (root / "data").mkdir(parents=True)
    table = pa.Table.from_pandas(frame, preserve_index=False).cast(
        pa.schema(
            [
                ("subject_id", pa.int64()),
                ("time", pa.timestamp("us")),
                ("code", pa.string()),
                ("numeric_value", pa.float32()),
            ]
        )
    )
    half = len(frame) // 2  # two shards, subjects interleaved across them
    pq.write_table(table.slice(0, half), root / "data" / "a.parquet")
    pq.write_table(table.slice(half), root / "data" / "b.parquet")


def test_every_column_matches_a_plain_pandas_computation(tmp_path):
    rng = np.random.default_rng(4)
    n = 4000
    codes = np.array(["LAB/1", "LAB/2", "DX/A", "DX/B", "RX/C", "VITAL/HR"])
    base = pd.Timestamp("2015-01-01")
    events = pd.DataFrame(
        {
            "subject_id": rng.integers(0, 40, n),
            "time": base + pd.to_timedelta(rng.integers(0, 3 * 365 * 24, n), unit="h"),
            "code": rng.choice(codes, n),
        }
    )
    valued = events["code"].str.startswith(("LAB", "VITAL"))
    events["numeric_value"] = np.where(valued, rng.normal(size=n).round(3), np.nan)
    births = pd.DataFrame(
        {
            "subject_id": np.arange(40),
            "time": base - pd.to_timedelta(rng.integers(20, 90, 40) * 365, unit="D"),
            "code": "MEDS_BIRTH",
            "numeric_value": np.nan,
        }
    )
    gender = pd.DataFrame(
        {
            "subject_id": np.arange(40),
            "time": pd.NaT,
            "code": np.where(np.arange(40) % 2, "Gender/F", "Gender/M"),
            "numeric_value": np.nan,
        }
    )
    frame = pd.concat([events, births, gender]).sample(frac=1, random_state=0)
    write_events(tmp_path, frame)
    arrays = read_event_arrays(tmp_path)
    cohort = studies(
        [
            (i, int(rng.integers(0, 42)), base + pd.Timedelta(hours=int(rng.integers(0, 26280))))
            for i in range(120)
        ]
    )
    train = cohort.iloc[:80]
    featuriser = CodeFeaturiser(windows_days=(30, 365), lookback_days=730, min_frequency=0.05)
    features = featuriser.fit(arrays, train).transform(arrays, cohort)
    x = pd.DataFrame(features.matrix.toarray(), index=features.index, columns=features.names)

    timed = frame[frame["time"].notna() & (frame["code"] != "MEDS_BIRTH")]
    for idx, study in cohort.iterrows():
        t = study["prediction_time"].floor("s")
        mine = timed[timed["subject_id"] == study["subject_id"]]
        before = mine[mine["time"].dt.floor("s") < t]
        for code in featuriser.codes_:
            of = before[before["code"] == code]
            for days in (30, 365):
                start = t - pd.Timedelta(days=days)
                expect = int((of["time"].dt.floor("s") >= start).sum())
                assert x.at[idx, f"{code}:count_{days}d"] == expect, (idx, code, days)
            looked = of[of["time"].dt.floor("s") >= t - pd.Timedelta(days=730)]
            assert x.at[idx, f"{code}:present"] == float(len(looked) > 0)
            if code in featuriser.numeric_:
                last = looked.sort_values(["time", "numeric_value"], kind="stable")
                expect = float(last["numeric_value"].astype("float32").iloc[-1]) if len(last) else 0
                assert x.at[idx, f"{code}:latest"] == pytest.approx(expect), (idx, code)
        birth = births.loc[births["subject_id"] == study["subject_id"], "time"]
        if len(birth):
            years = np.floor((t - birth.iloc[0]).total_seconds() / 86400 / 365.25)
            assert x.at[idx, "age_years"] == years
        else:
            assert x.at[idx, "age_years:missing"] == 1
    # Gender codes are demographics, never counted; every train subject has one.
    assert {"Gender/F:static", "Gender/M:static"} <= set(features.names)
    assert not any(name.startswith("Gender/") and ":count" in name for name in features.names)
    groups = study_groups(arrays, cohort)
    expect = np.where(
        cohort["subject_id"] >= 40, "Unknown", np.where(cohort["subject_id"] % 2, "F", "M")
    )
    assert groups["gender"].tolist() == expect.tolist()
    assert (groups["race"] == "Unknown").all()
    np.testing.assert_array_equal(
        groups["age"].to_numpy(), x["age_years"].where(x["age_years:missing"] == 0).to_numpy()
    )


def test_a_radfusion_cohorts_raw_events_predict_a_day_before_the_ct(small_cohort):
    """ehr.features=codes on a RadFusion cohort: the events of the 24 hours before the CT
    (where the paper's leakage rule drops diagnosis codes) never count, for any code."""
    from radfusion.data.cohort import Cohort
    from radfusion.ehr.train import code_features

    cohort = Cohort.load(small_cohort)
    features, featuriser = code_features(cohort, min_frequency=0.05)
    x = features.matrix.tocsr()
    events = pd.read_parquet(small_cohort / "raw" / "data" / "0.parquet")
    studies = pd.read_parquet(small_cohort / "raw" / "studies.parquet").set_index("idx")
    icd = [c for c in featuriser.codes_ if c.startswith("ICD//")]
    columns = [features.names.index(f"{c}:count_365d") for c in icd]
    events = events[events["code"].isin(icd)]
    for row, idx in enumerate(features.index[:20]):
        cut = (studies.loc[idx, "ct_time"] - pd.Timedelta(days=1)).floor("s")
        mine = events[events["subject_id"] == studies.loc[idx, "subject_id"]]
        when = mine["time"].dt.floor("s")
        window = mine[(when < cut) & (when >= cut - pd.Timedelta(days=365))]
        expect = window["code"].value_counts().reindex(icd, fill_value=0).to_numpy()
        np.testing.assert_array_equal(x[row, columns].toarray().ravel(), expect)
