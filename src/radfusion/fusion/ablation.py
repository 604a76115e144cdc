"""What each modality contributes to a fusion: its test AUROC with each input removed, and
each modality's Shapley share of the AUROC gain over chance.

"Removed" means every test study lacks the input, so the design scores them by its stated
fallback (:data:`radfusion.fusion.designs.DESIGNS`). With the value of a set of modalities
``v(S)`` = the design's test AUROC given only ``S`` (``v({})`` = 0.5, chance), modality ``i``'s
Shapley value is the average over orderings of ``v(S + i) - v(S)``; its share is that value
over ``v(all) - 0.5``, the shares summing to one. The CIs come from one set of stratified
bootstrap resamples of the test studies, shared by every design, every removal and the shares,
so each resample's shares are computed from that resample's AUROCs.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

from radfusion.evaluation.bootstrap import interval, stratified_counts
from radfusion.evaluation.metrics import auroc

__all__ = ["ablation_tables", "shapley_values"]


def shapley_values(value: dict[frozenset, np.ndarray], players: list[str]) -> dict[str, np.ndarray]:
    """Each player's Shapley value from the value of every coalition (arrays: one value per
    bootstrap replicate, or scalars)."""
    n = len(players)
    out = {}
    for player in players:
        others = [p for p in players if p != player]
        total = 0.0
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for coalition in itertools.combinations(others, size):
                s = frozenset(coalition)
                total = total + weight * (value[s | {player}] - value[s])
        out[player] = total
    return out


def ablation_tables(
    designs: dict[str, dict[frozenset, pd.Series]],
    studies: pd.DataFrame,
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``designs``: per design, its test scores given each set of modalities (the full set
    and each set with one removed; the empty set is chance). Returns the ablation table (one
    row per design and removed input: AUROC and CI) and the Shapley table (one row per
    design and modality: value, share, CIs)."""
    test = studies.index[studies["split"] == "test"]
    y = studies.loc[test, "label"].to_numpy().astype(bool)
    counts = stratified_counts(y, n_boot, np.random.default_rng([seed, 4]))
    ablation, shapley = [], []
    for design, by_set in designs.items():
        players = sorted(max(by_set, key=len))
        full = frozenset(players)
        value, replicates = {frozenset(): 0.5}, {frozenset(): np.full(n_boot, 0.5)}
        for members, score in by_set.items():
            s = score.reindex(test).to_numpy(float)
            value[members] = float(auroc(y, s))
            replicates[members] = np.asarray(auroc(y, s, counts), dtype=float)
        for members in sorted(by_set, key=lambda m: (-len(m), sorted(m))):
            removed = sorted(full - members)
            low, high = interval(replicates[members])
            ablation.append(
                {
                    "design": design,
                    "removed": "+".join(removed) if removed else "none",
                    "inputs": "+".join(sorted(members)),
                    "auroc": value[members],
                    "ci_low": low,
                    "ci_high": high,
                    "drop": value[full] - value[members],
                }
            )
        if not all(frozenset(c) in value for c in _coalitions(players)):
            continue  # Shapley needs every coalition's value
        point = shapley_values(value, players)
        boot = shapley_values(replicates, players)
        gain, gain_boot = value[full] - 0.5, replicates[full] - 0.5
        for player in players:
            with np.errstate(divide="ignore", invalid="ignore"):
                share_boot = np.where(np.abs(gain_boot) > 1e-9, boot[player] / gain_boot, np.nan)
            shapley.append(
                {
                    "design": design,
                    "modality": player,
                    "shapley": float(point[player]),
                    "shapley_low": interval(boot[player])[0],
                    "shapley_high": interval(boot[player])[1],
                    "share": float(point[player] / gain) if abs(gain) > 1e-9 else np.nan,
                    "share_low": interval(share_boot)[0],
                    "share_high": interval(share_boot)[1],
                }
            )
    return pd.DataFrame(ablation), pd.DataFrame(shapley)


def _coalitions(players):
    for size in range(len(players) + 1):
        yield from itertools.combinations(players, size)
