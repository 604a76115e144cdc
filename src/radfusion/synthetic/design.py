"""The synthetic cohort's study table: splits, labels, subtypes, patients, demographics, slices.

Counts follow the paper's Tables 1 and 2, exactly for N = 1837 and scaled (largest remainder)
for any other N: split sizes, positives and PE subtypes per split, patients per split (some
patients have two studies, never across splits), the test set's subgroup sizes with and
without subsegmental positives, and the slice-count median and IQR per split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm

from radfusion.data.layout import PE_TYPES, SPLITS

__all__ = [
    "MIN_SPLIT",
    "MIN_STUDIES",
    "PAPER",
    "PAPER_TEST_GROUPS",
    "ddimer_positive_count",
    "design_cohort",
    "largest_remainder",
    "split_sizes",
]

#: The smallest cohort whose val and test splits (about 10% each) still hold 3 positives of
#: distinct subtypes and 3 negatives.
MIN_STUDIES = 60
#: The smallest split: 3 positives of distinct subtypes and 3 negatives.
MIN_SPLIT = 6


@dataclass(frozen=True)
class SplitTargets:
    studies: int
    patients: int
    positives: int
    subtypes: tuple[int, int, int]  # central, segmental, subsegmental
    median_slices: float
    iqr_slices: float
    bmi: tuple[float, float]  # mean, std
    pulse: tuple[float, float]
    ddimer: tuple[int, int]  # taken, positive


#: Table 1 of the paper, per split.
PAPER = {
    "train": SplitTargets(
        1454, 1414, 508, (202, 281, 25), 385, 136, (28.36, 10.03), (81.53, 15.64), (461, 389)
    ),
    "val": SplitTargets(
        193, 190, 108, (27, 52, 29), 388, 132, (27.11, 6.78), (83.05, 11.86), (58, 51)
    ),
    "test": SplitTargets(
        190, 190, 110, (28, 54, 28), 388, 139, (29.60, 9.22), (80.50, 13.06), (61, 56)
    ),
}

#: Table 2: test-set group sizes (including, excluding subsegmental-only positives).
PAPER_TEST_GROUPS = {"Female": (99, 87), "White": (119, 95), ">80": (57, 47)}

RACE_MIX = {  # share among non-White patients
    "Asian": 0.34,
    "Black": 0.14,
    "Native American": 0.03,
    "Other": 0.28,
    "Pacific Islander": 0.05,
    "Unknown_race": 0.16,
}
WHITE_RATE = 119 / 190
FEMALE_RATE = 99 / 190
OVER_80_RATE = 57 / 190


def largest_remainder(total: int, weights) -> np.ndarray:
    """Integers proportional to ``weights`` that sum exactly to ``total``."""
    w = np.asarray(weights, dtype=float)
    raw = total * w / w.sum()
    out = np.floor(raw).astype(int)
    short = total - out.sum()
    out[np.argsort(-(raw - out), kind="stable")[:short]] += 1
    return out


def _scaled(value: int, n: int, ref: int) -> int:
    return round(value * n / ref)


def _exact_quantiles(n: int, median: float, iqr: float, rng) -> np.ndarray:
    """``n`` values with (close to) the given median and IQR, in random order."""
    u = (np.arange(n) + 0.5) / n
    values = median + iqr / (2 * norm.ppf(0.75)) * norm.ppf(u)
    return rng.permutation(values)


def _assign_exact(rng, n: int, k: int) -> np.ndarray:
    flags = np.zeros(n, dtype=bool)
    flags[rng.choice(n, size=min(k, n), replace=False)] = True
    return flags


def split_sizes(n_studies: int, test_studies: int | None = None) -> np.ndarray:
    """Train, val and test sizes: Table 1's proportions, or ``test_studies`` for test and
    Table 1's proportions for train and val. Raises ``ValueError`` for a split too small."""
    if n_studies < MIN_STUDIES:
        raise ValueError(
            f"a synthetic cohort needs at least {MIN_STUDIES} studies, so that val and test "
            "each hold every PE subtype and some negatives"
        )
    if test_studies is None:
        return largest_remainder(n_studies, [PAPER[s].studies for s in SPLITS])
    if not 0 < test_studies < n_studies:
        raise ValueError(f"{test_studies} test studies of {n_studies}: use 1 to {n_studies - 1}")
    rest = n_studies - test_studies
    sizes = np.r_[largest_remainder(rest, [PAPER[s].studies for s in SPLITS[:2]]), test_studies]
    if sizes.min() < MIN_SPLIT:
        raise ValueError(
            f"{test_studies} test studies of {n_studies} leave train, val and test "
            f"{sizes.tolist()}; each split needs at least {MIN_SPLIT} (3 positives, 3 negatives)"
        )
    return sizes


def design_cohort(
    n_studies: int,
    rng: np.random.Generator,
    *,
    slice_range: tuple[int, int] | None = None,
    short_studies: bool = False,
    test_studies: int | None = None,
) -> pd.DataFrame:
    """One row per study: idx, patient_id, split, label, pe_type, demographics, slices, CT time.

    ``slice_range`` replaces Table 1's slice distribution by an even spread over [lo, hi].
    ``short_studies`` adds the release's two short studies (1 and 21 slices) to train.
    ``test_studies`` sets the test split's size; train and val share the rest in Table 1's
    proportions. Each split's positives, subtypes, patients and (for test) Table 2's groups
    follow its own size either way.
    """
    sizes = split_sizes(n_studies, test_studies)
    frames = []
    for split, size in zip(SPLITS, sizes, strict=True):
        t = PAPER[split]
        n_pos = round(size * t.positives / t.studies)
        n_pos = min(max(n_pos, 3), size - 3)
        subtypes = largest_remainder(n_pos, t.subtypes)
        subtypes = np.maximum(subtypes, 1)  # every subtype present, for the subsets downstream
        subtypes[1] = n_pos - subtypes[0] - subtypes[2]
        pe_type = np.array(["" for _ in range(size)], dtype=object)
        pe_type[:n_pos] = np.repeat(np.array(PE_TYPES, dtype=object), subtypes)
        label = np.r_[np.ones(n_pos, int), np.zeros(size - n_pos, int)]
        order = rng.permutation(size)
        frame = pd.DataFrame({"split": split, "label": label[order], "pe_type": pe_type[order]})
        n_patients = size - _scaled(t.studies - t.patients, size, t.studies)
        frame["patient_slot"] = _patient_slots(size, n_patients, rng)
        lo_hi = slice_range
        if lo_hi is None:
            frame["slices"] = (
                np.round(_exact_quantiles(size, t.median_slices, t.iqr_slices, rng))
                .astype(int)
                .clip(48, 900)
            )
        else:
            lo, hi = lo_hi
            frame["slices"] = np.round(rng.permutation(np.linspace(lo, hi, size))).astype(int)
        frame["ddimer_taken"] = _assign_exact(rng, size, _scaled(t.ddimer[0], size, t.studies))
        frames.append(frame)
    studies = pd.concat(frames, ignore_index=True)
    studies = _add_patients_and_demographics(studies, rng)
    # Study ids as in the release: unique ints, not in split order.
    studies.insert(0, "idx", rng.permutation(np.arange(n_studies)) + 1)
    if short_studies:  # drawn last, so the rest of the cohort is the same with or without
        train = np.flatnonzero(studies["split"].eq("train").to_numpy())
        chosen = rng.choice(train, size=2, replace=False)
        studies.loc[chosen, "slices"] = [1, 21]
    return studies.sort_values("idx", kind="stable").reset_index(drop=True)


def _patient_slots(size: int, n_patients: int, rng) -> np.ndarray:
    """Patient slot per study: ``size - n_patients`` patients get a second study."""
    slots = np.arange(size)
    repeats = size - n_patients
    if repeats > 0:
        firsts = rng.choice(n_patients, size=repeats, replace=False)
        slots[n_patients:] = firsts
    return rng.permutation(slots)


def ddimer_positive_count(split: str, size: int) -> int:
    """How many of a split's D-dimer tests are positive (Table 1, scaled to the split size)."""
    t = PAPER[split]
    return min(_scaled(t.ddimer[1], size, t.studies), _scaled(t.ddimer[0], size, t.studies))


def _add_patients_and_demographics(studies: pd.DataFrame, rng) -> pd.DataFrame:
    studies = studies.copy()
    # Global patient ids; a patient's second study keeps the patient's id.
    key = studies["split"] + ":" + studies["patient_slot"].astype(str)
    codes, uniques = pd.factorize(key)
    patient_ids = rng.permutation(len(uniques)) + 10_001
    studies["patient_id"] = patient_ids[codes]
    n_patients = len(uniques)

    female = rng.random(n_patients) < FEMALE_RATE
    white = rng.random(n_patients) < WHITE_RATE
    others = rng.choice(list(RACE_MIX), size=n_patients, p=list(RACE_MIX.values()))
    age_at_first = np.clip(rng.normal(62, 16, n_patients), 18, 79).astype(int)
    old = rng.random(n_patients) < OVER_80_RATE
    age_at_first[old] = rng.integers(81, 98, old.sum())
    smoking = rng.choice(["N", "Y", ""], size=n_patients, p=[0.7, 0.15, 0.15])

    studies["gender"] = np.where(female, "Female", "Male")[codes]
    studies["race"] = np.where(white, "White", others)[codes]
    studies["smoking"] = smoking[codes]

    # CT times: first study 2000-2014; a second study 430-1500 days later, so that the
    # windows (12 months before each CT, plus 30 days of follow-up events) never overlap.
    first_ct = pd.Timestamp("2000-01-01") + pd.to_timedelta(
        rng.integers(0, 15 * 365 * 24 * 60, n_patients), unit="min"
    )
    rank = studies.groupby(codes).cumcount().to_numpy()
    gap = pd.to_timedelta(rng.integers(430, 1500, len(studies)) * rank, unit="D")
    studies["ct_time"] = (first_ct[codes] + gap).astype("datetime64[us]")
    studies["age"] = age_at_first[codes] + (gap.days.to_numpy() / 365.25).astype(int)
    studies = _exact_test_groups(studies, rng)
    studies["birth_time"] = _birth_times(studies, rng)
    # Ages follow from the birth time (a patient's second study is older by its gap).
    age_days = (studies["ct_time"] - studies["birth_time"]) / pd.Timedelta(days=1)
    studies["age"] = np.floor(age_days / 365.25).astype(int)
    return studies.drop(columns=["patient_slot"])


def _exact_test_groups(studies: pd.DataFrame, rng) -> pd.DataFrame:
    """Set test-set gender, race and age so Table 2's counts hold exactly (scaled to N).

    Test patients have one study each (Table 1: 190 studies, 190 patients), so this changes
    nothing for any other study.
    """
    test = studies["split"].eq("test").to_numpy()
    n_test = int(test.sum())
    subseg = test & studies["pe_type"].eq("subsegmental").to_numpy()
    rest = test & ~subseg
    for group, (incl, excl) in PAPER_TEST_GROUPS.items():
        for mask, count, ref in ((subseg, incl - excl, 28), (rest, excl, 162)):
            members = np.flatnonzero(mask)
            k = round(count * len(members) / ref) if n_test != 190 else count
            flags = _assign_exact(rng, len(members), k)
            rows = studies.index[members]
            if group == "Female":
                studies.loc[rows, "gender"] = np.where(flags, "Female", "Male")
            elif group == "White":
                other = rng.choice(list(RACE_MIX), size=len(rows), p=list(RACE_MIX.values()))
                studies.loc[rows, "race"] = np.where(flags, "White", other)
            else:
                young = np.clip(rng.normal(60, 14, len(rows)), 18, 80).astype(int)
                studies.loc[rows, "age"] = np.where(flags, rng.integers(81, 98, len(rows)), young)
    return studies


def _birth_times(studies: pd.DataFrame, rng) -> pd.Series:
    """A birth time per patient consistent with every study's whole-year age."""
    first = studies.sort_values("ct_time").groupby("patient_id").first()
    frac = rng.uniform(0.05, 0.95, len(first))
    birth = first["ct_time"] - pd.to_timedelta((first["age"] + frac) * 365.25, unit="D")
    return studies["patient_id"].map(birth.astype("datetime64[us]"))
