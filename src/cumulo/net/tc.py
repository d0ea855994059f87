"""Bandwidth limits with tc: a token bucket (tbf) on the egress of a link.

On a NIC's host end this caps what the instance receives; on a link inside a
namespace, what leaves it. Rates are in bits per second, as users write them
(``20Mbit``); the kernel takes bytes per second.
"""

from __future__ import annotations

import re
from pathlib import Path

from cumulo.errors import InvalidInputError
from cumulo.net import netlink

UNITS = {"": 1, "bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9,
         "k": 10**3, "m": 10**6, "g": 10**9}
MIN_RATE, MAX_RATE = 8_000, 32 * 10**9   # tbf keeps the rate in 32 bits of bytes/s
MIN_BURST = 16 * 1024


def parse_rate(text: str) -> int:
    """``20Mbit``, ``500kbit``, ``1G`` to bits per second."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in UNITS:
        raise InvalidInputError(f"invalid rate {text!r}: use a number with bit, kbit, Mbit "
                                "or Gbit, e.g. 20Mbit")
    bits = int(float(m.group(1)) * UNITS[unit])
    if not MIN_RATE <= bits <= MAX_RATE:
        raise InvalidInputError(f"rate {text!r} is out of range (8kbit to 32Gbit)")
    return bits


def default_burst(bits: int) -> int:
    """About 10 ms worth of traffic, never less than a few full frames."""
    return max(MIN_BURST, bits // 8 // 100)


def limit_egress(link: str, bits: int, burst: int | None = None,
                 netns: Path | None = None) -> None:
    """Cap what ``link`` sends at ``bits`` per second (replaces an earlier cap)."""
    netlink.set_tbf(link, bits, burst or default_burst(bits), netns=netns)


def clear(link: str, netns: Path | None = None) -> None:
    """Back to the kernel's default queueing on ``link``."""
    netlink.clear_root_qdisc(link, netns=netns)
