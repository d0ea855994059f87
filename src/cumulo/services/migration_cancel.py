"""Cancelling a migration: the operation's cancel, seen when progress is reported, becomes
a flag the driver polls, so the driver can stop QEMU's stream and mirror itself
(``migrate_cancel``, ``block-job-cancel``) and the service can clean up the destination
and leave the source running, instead of the work being torn down mid-step.
"""

from __future__ import annotations

from cumulo.services.operations import OperationCancelled, Progress


class CancelWatch:
    """Wraps an operation's ``progress``: a cancel sets ``asked`` instead of raising."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self.asked = False

    def progress(self, fraction: float, message: str = "") -> None:
        try:
            self._progress(fraction, message)
        except OperationCancelled:
            self.asked = True

    def __call__(self) -> bool:
        """Whether a client asked to cancel (the driver's ``cancelled``)."""
        return self.asked
