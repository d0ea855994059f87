"""Instances whose helper processes can die while the instance runs on.

A container's conmon (the only one who records its exit status and console) and a VM's
swtpm (its TPM) are not the instance itself: when one dies, the instance still runs but
is no longer whole. ``services/watchdog.py`` asks, reports it, and stops the instance.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Supervised(Protocol):
    def lost_helpers(self, host_id: str) -> list[str]:
        """Helper processes of this running instance that are gone (e.g. ["conmon"])."""
