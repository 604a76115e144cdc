"""Atomic writes: a failed write leaves neither a partial file nor a temporary one."""

from __future__ import annotations

import pandas as pd
import pytest

from radfusion.io import atomic_path, write_csv


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(OSError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise OSError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.csv"
    write_csv(pd.DataFrame({"a": [1]}), target)
    with pytest.raises(OSError), atomic_path(target) as tmp:
        tmp.write_text("a\n2\n")
        raise OSError("disk full")
    assert pd.read_csv(target)["a"].tolist() == [1]
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]
