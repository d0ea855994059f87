"""Cluster-wide settings (``cumulo cluster config``), kept as text in the shared store
and checked here: the placement engine's scoring strategy, and the automatic
rebalancer's, after Incus' ``cluster.rebalance.*``.

=====================  =======  ==================================================
placement.strategy     spread   how launches, evacuations and recoveries score
                                members: spread (least used first) or compact
                                (most used first: fill members one by one)
rebalance.interval     0        seconds between two checks by the daemon; 0: off
rebalance.threshold    0.1      imbalance score from which a check moves instances
rebalance.batch        3        most moves in one round
rebalance.cooldown     300      seconds after a round that moved something before
                                the next one may (cluster-wide)
rebalance.min_gain     0.01     a move must lower the score by at least this
=====================  =======  ==================================================
"""

from __future__ import annotations

from dataclasses import dataclass

from cumulo.cluster.model import POLICIES, SPREAD
from cumulo.errors import InvalidInputError

DEFAULTS: dict[str, str] = {
    "placement.strategy": SPREAD,
    "rebalance.interval": "0",
    "rebalance.threshold": "0.1",
    "rebalance.batch": "3",
    "rebalance.cooldown": "300",
    "rebalance.min_gain": "0.01",
}
_INTEGER = {"rebalance.batch"}


def check(key: str, value: str) -> str:
    """``value`` as stored for ``key``; one line naming what is wrong otherwise."""
    if key not in DEFAULTS:
        raise InvalidInputError(f"unknown cluster setting {key!r}: one of"
                                f" {', '.join(DEFAULTS)}")
    if key == "placement.strategy":
        if value.strip() not in POLICIES:
            raise InvalidInputError(f"{key} must be one of {', '.join(POLICIES)}, not"
                                    f" {value!r}")
        return value.strip()
    try:
        number = int(value) if key in _INTEGER else float(value)
    except ValueError:
        kind = "a whole number" if key in _INTEGER else "a number"
        raise InvalidInputError(f"{key} must be {kind}, not {value!r}") from None
    if number < 0 or (key == "rebalance.batch" and number < 1):
        least = "at least 1" if key in _INTEGER else "zero or more"
        raise InvalidInputError(f"{key} must be {least}, not {value!r}")
    return value.strip()


@dataclass(frozen=True)
class Rebalance:
    """The automatic rebalancer's settings, read from the store's text."""

    interval: float = 0.0
    threshold: float = 0.1
    batch: int = 3
    cooldown: float = 300.0
    min_gain: float = 0.01

    @staticmethod
    def of(stored: dict[str, str]) -> Rebalance:
        v = {**DEFAULTS, **stored}
        return Rebalance(float(v["rebalance.interval"]), float(v["rebalance.threshold"]),
                         int(v["rebalance.batch"]), float(v["rebalance.cooldown"]),
                         float(v["rebalance.min_gain"]))


def strategy(stored: dict[str, str]) -> str:
    """The placement engine's strategy, from the store's text."""
    return stored.get("placement.strategy", SPREAD)
