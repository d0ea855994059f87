"""``json.loads`` and ``json.dumps`` (default options) for the CLI's short-lived processes,
from the standard library's C accelerator (``_json``) alone.

Importing ``json`` compiles six regular expressions, which imports ``re`` and ``enum``:
about 8 ms of a CLI fast-path command that otherwise takes ~20 ms beyond the
interpreter's start (docs/launch-path.md, eighth round). The scanner and encoder here are
the very C functions ``json`` itself calls, set up as ``json.loads`` and ``json.dumps``
set them up with their default options. Whatever this module does not take on (a
document it cannot read, a value it cannot encode) is handed to ``json`` itself, so errors
are json's own (``json.JSONDecodeError``, ``TypeError``) and read the same.
``tests/unit/test_jsonlite.py`` holds the two to the same results.
"""

from __future__ import annotations

import _json

TYPE_CHECKING = False   # as typing's, without importing typing (see cli/fast.py)
if TYPE_CHECKING:
    from typing import Any

_WHITESPACE = " \t\n\r"   # JSON's (RFC 8259 2)
_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


class _Decoding:
    """The attributes ``_json.make_scanner`` reads: those of ``json.JSONDecoder()``."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__


_scan = _json.make_scanner(_Decoding())  # type: ignore[arg-type]  # (a decoder's attributes)


def _unencodable(o: object) -> Any:
    raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")




def loads(s: str | bytes | bytearray) -> Any:
    """As ``json.loads(s)``."""
    try:
        text = s if isinstance(s, str) else bytes(s).decode("utf-8")
        text = text.strip(_WHITESPACE)
        value, end = _scan(text, 0)
        if end == len(text):
            return value
    except (StopIteration, ValueError):
        pass
    import json  # it raises as it does (its error, its message)

    return json.loads(s)


def dumps(obj: Any) -> str:
    """As ``json.dumps(obj)``."""
    # json.dumps's defaults: a cycle check (its own marks: an encoding that fails leaves
    # some behind), ASCII only, ", " and ": ", NaN allowed
    encode = _json.make_encoder({}, _unencodable, _json.encode_basestring_ascii, None,
                                ": ", ", ", False, False, True)
    try:
        return "".join(encode(obj, 0))
    except (TypeError, ValueError):
        import json

        return json.dumps(obj)
