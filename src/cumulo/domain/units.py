"""Parsing and printing of sizes (``256MiB``, ``1.5GB``) and names."""

from __future__ import annotations

import re

from cumulo.errors import InvalidInputError

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


MAX_SIZE = (1 << 63) - 1   # what a file offset can hold: more is no real size


def parse_size(text: str | int) -> int:
    """Bytes from ``512MiB``, ``1GB``, ``1.5GiB`` or a plain number of bytes."""
    if isinstance(text, int):
        if text < 0:
            raise InvalidInputError(f"invalid size {text!r}: must not be negative")
        n = text
    else:
        m = _SIZE_RE.match(text)
        unit = m.group(2).lower() if m else ""
        if not m or unit not in _UNITS:
            raise InvalidInputError(
                f"invalid size {text!r}: use a number with B, KB, MB, GB, KiB, MiB or GiB"
            )
        n = int(float(m.group(1)) * _UNITS[unit])
    if n > MAX_SIZE:
        raise InvalidInputError(f"invalid size {str(text)[:40]!r}: far too large (at most"
                                " 8 EiB)")
    return n


def format_size(n: int | None) -> str:
    """A short human size in binary units."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{n}B"


def validate_name(name: str, kind: str = "instance") -> str:
    """Names are DNS labels: ``[a-z0-9-]``, 1-63 chars, no leading or trailing dash."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidInputError(
            f"invalid {kind} name {name!r}: use 1-63 characters from a-z, 0-9 and '-',"
            " starting and ending with a letter or digit"
        )
    return name
