"""The bound on uploads: image imports, `docker load`, `docker import`, `docker cp` in.

At most ``CUMULO_MAX_UPLOAD`` bytes (a size such as ``8GiB``; default 16 GiB) in the
daemon's environment. A request whose Content-Length says more is refused before a byte
of it is read (413, one line); one sent without a length is cut off when it passes the
bound. JSON bodies have their own, smaller bound (api/body_limit.py).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping

from cumulo.domain.units import format_size, parse_size
from cumulo.errors import InvalidInputError, TooLargeError

ENV = "CUMULO_MAX_UPLOAD"
DEFAULT = 16 << 30


def maximum() -> int:
    raw = os.environ.get(ENV, "")
    try:
        return parse_size(raw) if raw else DEFAULT
    except InvalidInputError:
        return DEFAULT


def _refuse(what: str, limit: int) -> TooLargeError:
    return TooLargeError(f"{what} is too large: uploads are at most {format_size(limit)}"
                         f" here ({ENV})")


def check_length(headers: Mapping[str, str], what: str) -> None:
    """Refuse at once a body that announces more than the bound, or a nonsense length."""
    raw = headers.get("content-length")
    if raw is None:
        return
    if not raw.strip().isdigit():
        raise InvalidInputError(f"invalid Content-Length {raw[:40]!r}")
    limit = maximum()
    if int(raw) > limit:
        raise _refuse(what, limit)


async def bounded(chunks: AsyncIterator[bytes], what: str) -> AsyncIterator[bytes]:
    """``chunks`` passed on while their total stays within the bound."""
    limit, seen = maximum(), 0
    async for chunk in chunks:
        seen += len(chunk)
        if seen > limit:
            raise _refuse(what, limit)
        yield chunk
