"""The lab's statistics and results schema: known samples in, exact figures out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cumulo.errors import InvalidInputError
from cumulo.lab import schema, stats


def test_median_and_quartiles_of_known_samples() -> None:
    s = stats.summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (s.n, s.median, s.q1, s.q3, s.min, s.max) == (5, 3.0, 2.0, 4.0, 1.0, 5.0)
    assert s.iqr == 2.0
    even = stats.summarize([10, 20, 30, 40])
    assert even.median == 25.0
    assert (even.q1, even.q3) == (17.5, 32.5)


def test_one_or_two_samples_spread_is_min_max() -> None:
    assert stats.summarize([7]).to_dict() == {
        "n": 1, "median": 7.0, "q1": 7.0, "q3": 7.0, "min": 7.0, "max": 7.0, "iqr": 0.0}
    two = stats.summarize([2, 4])
    assert (two.median, two.q1, two.q3) == (3.0, 2.0, 4.0)


def test_no_samples_is_an_error() -> None:
    with pytest.raises(ValueError):
        stats.summarize([])


def test_ratio_to_native_with_spread() -> None:
    native = [100.0, 100.0, 100.0]
    container = [90.0, 95.0, 100.0]
    r = stats.ratio(container, native)
    assert r.value == 0.95
    assert (r.low, r.high) == (0.925, 0.975)
    assert stats.overhead(r, higher_is_better=True) == pytest.approx(0.05)
    slower = stats.ratio([2.0, 2.0, 2.0], [1.0, 1.0, 1.0])
    assert slower.value == 2.0
    assert stats.overhead(slower, higher_is_better=False) == 1.0


def test_ratio_against_zero_native_is_refused() -> None:
    with pytest.raises(ValueError):
        stats.ratio([1.0], [0.0])


def _results() -> schema.Results:
    r = schema.Results(created="2026-11-23T11:00:00Z",
                       settings=schema.Settings(platforms=["native"], suites=["cpu"], repeat=2))
    r.add("native", "cpu", "sysbench_cpu", "events/s", 10)
    r.add("native", "cpu", "sysbench_cpu", "events/s", 12)
    r.add("native", "cpu", "hpl", "GFLOPS", 1.5, x=200, x_label="N")
    return r


def test_results_round_trip(tmp_path: Path) -> None:
    r = _results()
    assert r.find("native", "cpu", "sysbench_cpu").samples == [10.0, 12.0]  # type: ignore[union-attr]
    path = tmp_path / "r.json"
    r.save(path)
    data = json.loads(path.read_text())
    assert data["schema"] == "cumulo-bench" and data["version"] == 1
    back = schema.load(path)
    assert back == r
    assert back.find("native", "cpu", "hpl", 200).samples == [1.5]  # type: ignore[union-attr]


@pytest.mark.parametrize(("text", "message"), [
    ("nope", "not JSON"),
    ('{"a": 1}', "not a cumulo bench results file"),
    ('{"schema": "cumulo-bench", "version": 99}', "schema version 99"),
    ('{"schema": "cumulo-bench", "version": 1, "created": "x"}', "invalid results file at "
                                                                  "settings"),
])
def test_bad_results_files_are_refused(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        schema.loads(text)
