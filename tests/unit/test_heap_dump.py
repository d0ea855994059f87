"""The interned-strings census of the heap dumps (issue 23: what keeps the table of
interned strings growing), and the soak's comparison of two of them."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
from bench.soak import interned_growth

from cumulo.host.heap_dump import interned


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="CPython 3.11's table only")
def test_the_census_sees_a_string_while_it_is_interned_and_alive() -> None:
    token = uuid.uuid4().hex
    name = sys.intern(f"cumulo-census-{token}")
    alive = interned()
    assert alive is not None and name in alive and "__qualname__" in alive
    del name, alive
    # mortal: once nothing holds it, it leaves the table
    assert not [s for s in interned() or [] if token in s]
    sys.intern(f"cumulo-census-{token}-2")   # interned and dropped at once
    assert not [s for s in interned() or [] if token in s]


def test_growth_counts_the_new_strings_by_shape(tmp_path: Path) -> None:
    (tmp_path / "1.interned").write_text("'a'\n'b'\n'old7'\n")
    (tmp_path / "2.interned").write_text("'a'\n'b'\n'eth12'\n'eth13'\n'lease'\n")
    lines = interned_growth(tmp_path / "1.snap", tmp_path / "2.snap")
    assert lines is not None
    assert lines[0] == "interned strings alive: 3 -> 5 (3 new ones alive, 1 gone)"
    assert lines[1].split() == ["2", "'eth#'", "e.g.", "'eth12'"]
    assert interned_growth(tmp_path / "1.snap", tmp_path / "3.snap") is None
