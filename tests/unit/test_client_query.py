"""The client's query string, made without urllib.parse (its import is a tenth of the CLI
fast path's ``launch``): it reads back as ``urlencode`` would have said it."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from hypothesis import given
from hypothesis import strategies as st

from cumulo.client import _query


@given(st.dictionaries(st.text(min_size=1), st.none() | st.booleans() | st.integers()
                       | st.text(), max_size=4))
def test_the_clients_query_reads_back_as_urlencode_would_say_it(params: dict[str, Any]
                                                                 ) -> None:
    sent = {k: str(v).lower() if isinstance(v, bool) else v for k, v in params.items()
            if v is not None}
    got = _query(params)
    assert got == ("?" + urlencode(sent, quote_via=lambda s, *a: _pct(s)) if params else "")
    assert parse_qsl(got[1:], keep_blank_values=True) == [(k, str(v)) for k, v in sent.items()]


def _pct(text: str) -> str:
    return quote(text, safe="")
