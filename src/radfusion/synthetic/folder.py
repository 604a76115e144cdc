"""A synthetic cohort's folder: claimed before writing, marked when complete, and the one
call that checks the generator's options, writes the cohort and marks it (``radfusion synth``).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from radfusion.errors import RadfusionError
from radfusion.io import write_json

__all__ = [
    "PARTIAL_MARKER",
    "SYNTH_MARKER",
    "claim_synth_folder",
    "finish_synth_folder",
    "parse_slice_range",
    "synthesize",
]

SYNTH_MARKER = "synthetic.json"
#: Present while ``radfusion synth`` writes a folder: a generation that stopped half-way (a
#: full disk, a kill) is still recognised as ours, and ``--overwrite`` may delete it.
PARTIAL_MARKER = ".synthetic-partial"


def claim_synth_folder(folder: Path, overwrite: bool) -> None:
    """Make ``folder`` ready for a synthetic cohort: empty, or (with ``overwrite``) emptied
    when it holds one of ours, finished or not. Anything else is refused in one line."""
    if folder.exists() and any(folder.iterdir()):
        ours = (folder / SYNTH_MARKER).exists() or (folder / PARTIAL_MARKER).exists()
        if not overwrite:
            state = (
                "holds a synthetic cohort whose writing stopped half-way"
                if (folder / PARTIAL_MARKER).exists()
                else "not empty"
            )
            raise RadfusionError(f"{folder}: {state}; choose a new folder or pass --overwrite")
        if not ours:
            raise RadfusionError(
                f"{folder}: not a synthetic cohort (no {SYNTH_MARKER}); refusing to delete it"
            )
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json({"started": True}, folder / PARTIAL_MARKER)


def finish_synth_folder(folder: Path, description: dict) -> None:
    """Mark ``folder`` as a complete synthetic cohort described by ``description``."""
    write_json(description, folder / SYNTH_MARKER)
    (folder / PARTIAL_MARKER).unlink(missing_ok=True)


def parse_slice_range(text: str | None) -> tuple[int, int] | None:
    """``"LO:HI"`` as a pair of slice counts; None keeps Table 1's counts."""
    if text is None:
        return None
    try:
        lo, hi = (int(part) for part in text.split(":"))
    except ValueError:
        raise RadfusionError(f"--slices {text!r}: expected LO:HI, e.g. 32:64") from None
    if not 1 <= lo <= hi:
        raise RadfusionError(f"--slices {text!r}: need 1 <= LO <= HI")
    return lo, hi


def synthesize(
    out_dir: Path,
    studies: int,
    seed: int = 0,
    *,
    slices: str | None = None,
    size: int = 64,
    quirks: bool = False,
    calibre: float = 1.0,
    test_studies: int | None = None,
    workers: int = 1,
    overwrite: bool = False,
    on_volume: Callable[[int], None] | None = None,
    keep: int | None = None,
    layout: str = "radfusion",
):
    """Check the options, claim ``out_dir``, write the cohort (``layout``: ``radfusion``, the
    release's; ``inspect``, INSPECT's NIfTI, CSVs and MEDS) and mark it complete; returns
    the generated cohort (its studies table)."""
    from radfusion.synthetic.design import MIN_STUDIES, split_sizes
    from radfusion.synthetic.writer import write_synthetic_cohort

    slice_range = parse_slice_range(slices)
    if studies < MIN_STUDIES:
        raise RadfusionError(
            f"--studies {studies}: need at least {MIN_STUDIES} to fill train, val and test"
        )
    if size < 8:
        raise RadfusionError(f"--size {size}: need at least 8 pixels")
    if not 0 < calibre <= 5:
        raise RadfusionError(f"--calibre {calibre}: use a factor in (0, 5]; 1 is true to size")
    try:
        split_sizes(studies, test_studies)
    except ValueError as err:
        raise RadfusionError(f"--studies {studies} --test-studies {test_studies}: {err}") from None
    if keep is not None and not 6 <= keep <= studies:
        raise RadfusionError(f"--keep {keep}: keep between 6 and --studies ({studies}) studies")
    if layout not in ("radfusion", "inspect"):
        raise RadfusionError(f"--layout {layout!r}: use radfusion or inspect")
    if layout == "inspect" and (quirks or keep is not None):
        raise RadfusionError("--quirks and --keep are the RadFusion layout's; drop them")
    claim_synth_folder(out_dir, overwrite)
    common = {
        "size": size,
        "slice_range": slice_range,
        "calibre": calibre,
        "test_studies": test_studies,
        "workers": workers,
        "on_volume": on_volume,
    }
    if layout == "inspect":
        from radfusion.synthetic.inspect_writer import write_inspect_cohort
        from radfusion.synthetic.writer import SyntheticCohort

        design = write_inspect_cohort(out_dir, studies, seed, **common)
        cohort = SyntheticCohort(root=out_dir, studies=design, annotations=design.iloc[:0])
    else:
        cohort = write_synthetic_cohort(out_dir, studies, seed, quirks=quirks, keep=keep, **common)
    finish_synth_folder(
        out_dir,
        {
            "studies": studies,
            "seed": seed,
            "size": size,
            "slices": list(slice_range) if slice_range else None,  # as the demo's marker
            "quirks": quirks,
            "calibre": calibre,
            "test_studies": test_studies,
            "keep": keep,
            "layout": layout,
        },
    )
    return cohort
