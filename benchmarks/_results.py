"""One machine-readable line per figure, for ``run_all.py``: ``RESULT {json}``."""

from __future__ import annotations

import json


def result(
    benchmark: str, figure: str, value: float, unit: str, ratio: float, against: str, aim: str = ""
) -> None:
    """Print a figure, its ratio to a baseline measured in the same process, and the aim."""
    print(
        "RESULT "
        + json.dumps(
            {
                "benchmark": benchmark,
                "figure": figure,
                "value": round(value, 4),
                "unit": unit,
                "ratio": round(ratio, 3),
                "against": against,
                "aim": aim,
            }
        ),
        flush=True,
    )
