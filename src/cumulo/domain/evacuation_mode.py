"""How an instance leaves a member that is evacuated: the ``cluster.evacuate`` instance
option, as Incus names it. ``auto`` (the default) moves it live where it allows that
and cold otherwise; ``live-migrate`` only live (it stays if that fails); ``migrate``
cold (stopped, moved, started again); ``stop`` stops it in place and ``cumulo cluster
restore`` starts it again. A stopped instance is moved cold whatever its mode (but
``stop``: it stays). Options under ``cluster.`` are the cluster's, never a driver's.
"""

from __future__ import annotations

from collections.abc import Mapping

KEY = "cluster.evacuate"
AUTO, LIVE, COLD, STOP = "auto", "live-migrate", "migrate", "stop"
MODES = (AUTO, LIVE, COLD, STOP)
CHOICES: dict[str, tuple[str, ...]] = {KEY: MODES}   # every type offers them
PREFIX = "cluster."


def of(options: Mapping[str, str]) -> str:
    """The instance's mode (``auto`` unless set)."""
    return options.get(KEY, AUTO)


def driver_options(options: Mapping[str, str]) -> dict[str, str]:
    """The options its driver sees: without the cluster's."""
    return {k: v for k, v in options.items() if not k.startswith(PREFIX)}
