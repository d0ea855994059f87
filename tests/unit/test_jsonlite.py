"""cumulo.jsonlite against json itself: the same text, the same values, the same errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cumulo import jsonlite

SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5)
                      | st.dictionaries(st.text(), inner, max_size=5), max_leaves=30)


def same(a: Any, b: Any) -> bool:
    """Equal, NaN included (repr tells NaN, -0.0 and 0.0 apart as json keeps them)."""
    return repr(a) == repr(b) or (isinstance(a, float) and math.isnan(a) and math.isnan(b))


@given(VALUES)
def test_dumps_writes_what_json_writes(value: Any) -> None:
    assert jsonlite.dumps(value) == json.dumps(value)


@given(VALUES)
def test_loads_reads_what_json_reads(value: Any) -> None:
    for text in (json.dumps(value), json.dumps(value, indent=2, ensure_ascii=False),
                 f" \n{json.dumps(value)}\r\t"):
        assert same(jsonlite.loads(text), json.loads(text))
        assert same(jsonlite.loads(text.encode()), json.loads(text.encode()))


@pytest.mark.parametrize("text", ["", " ", "{", "[1,]", "1 2", '"\x01"', "\ufeff1", "nan",
                                  '{"a" 1}', "[1] x", "'a'"])
def test_a_bad_document_raises_jsons_error(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as ours:
        jsonlite.loads(text)
    with pytest.raises(json.JSONDecodeError) as theirs:
        json.loads(text)
    assert str(ours.value) == str(theirs.value)


def test_what_json_cannot_encode_raises_as_json_does() -> None:
    loop: list[Any] = []
    loop.append(loop)
    for value, error in ((object(), TypeError), ({1j: 2}, TypeError), (loop, ValueError),
                         ({"a": {1, 2}}, TypeError)):
        with pytest.raises(error) as ours:
            jsonlite.dumps(value)
        with pytest.raises(error) as theirs:
            json.dumps(value)
        assert str(ours.value) == str(theirs.value)
    assert jsonlite.dumps({"after": "a failure"}) == '{"after": "a failure"}'


def test_other_encodings_of_bytes_are_read_as_json_reads_them() -> None:
    for encoding in ("utf-16", "utf-32", "utf-8-sig"):
        data = json.dumps({"é": [1, "x"]}).encode(encoding)
        assert jsonlite.loads(data) == json.loads(data) == {"é": [1, "x"]}


def test_it_does_not_import_json_or_re() -> None:
    code = ("import sys; from cumulo import jsonlite as j;"
            " j.dumps(j.loads('{\"a\": [1, 2.5, null, \"\\\\u00e9\"]}'));"
            " print(sorted({'json', 're', 'enum'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"

