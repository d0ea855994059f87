"""Typed errors: one root, subclasses that carry context.

Hierarchy::

    CumuloError
    ├── InvalidInputError        bad name, size, limit, argument (HTTP 400)
    │   ├── LimitExceedsHostError    a limit beyond what the host has
    │   └── TooLargeError            an upload above the configured maximum (413)
    ├── NotFoundError            unknown instance, image, operation (404)
    ├── AuthError                no, wrong, expired or revoked token (401)
    ├── ForbiddenError           the caller's role lacks a right (403)
    ├── CertificateError         a remote's certificate is not the pinned one
    ├── ConflictError            duplicate name, image in use (409)
    │   └── InvalidStateError        action not allowed in the current state
    ├── ProjectLimitError        the project does not allow it (403)
    │   ├── QuotaExceededError       over one of the project's limits.*
    │   └── RestrictedError          forbidden by one of its restricted.*
    ├── UnsupportedError         the host lacks a capability (422)
    ├── DriverError              a host tool or the kernel failed (500, message shown)
    │   └── RuntimeToolError         an external command exited non-zero
    └── StoreError               the database failed (500)

Foreign exceptions are wrapped where they enter: ``raise DriverError(...) from err``.
The API maps these classes to HTTP statuses in one table (api/errors.py).
"""

from __future__ import annotations


class CumuloError(Exception):
    """Root of every error Cumulo raises on purpose; ``str()`` is one line for users."""


class InvalidInputError(CumuloError):
    """The caller gave something we cannot accept."""


class LimitExceedsHostError(InvalidInputError):
    """A resource limit asks for more than the host has."""

    def __init__(self, what: str, asked: object, available: object) -> None:
        super().__init__(f"{what} {asked} exceeds what this host has ({available})")
        self.what, self.asked, self.available = what, asked, available


class TooLargeError(InvalidInputError):
    """A request body (an upload) is larger than this daemon accepts."""


class NotFoundError(CumuloError):
    """A named object does not exist."""

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"{kind} {name!r} not found")
        self.kind, self.name = kind, name


class AuthError(CumuloError):
    """The caller could not be identified: no token, or not one we know (any more)."""


class ForbiddenError(CumuloError):
    """The caller is known, but its role lacks ``right`` for this request."""

    def __init__(self, message: str, right: str = "") -> None:
        super().__init__(message)
        self.right = right


class CertificateError(CumuloError):
    """A TLS peer presented a certificate other than the one pinned for it."""


class ConflictError(CumuloError):
    """The request collides with existing state."""


class InvalidStateError(ConflictError):
    """An action is not allowed in the instance's current state."""

    def __init__(self, name: str, current: str, action: str) -> None:
        super().__init__(f"cannot {action} instance {name!r}: it is {current}")
        self.name, self.current, self.action = name, current, action


class ProjectLimitError(CumuloError):
    """The caller's project does not allow this (a quota or a restriction)."""


class QuotaExceededError(ProjectLimitError):
    """It would take the project past one of its quotas (``limits.*``)."""


class RestrictedError(ProjectLimitError):
    """One of the project's restrictions (``restricted.*``) forbids it."""


class UnsupportedError(CumuloError):
    """The host cannot do what was asked (missing tool, kernel feature, cgroup file)."""


class DriverError(CumuloError):
    """Something on the host failed while a driver was acting."""


class RuntimeToolError(DriverError):
    """An external tool (runc, crun, conmon, ...) failed."""

    def __init__(self, tool: str, args: list[str], code: int, stderr: str) -> None:
        msg = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit status {code}"
        super().__init__(f"{tool} {args[0] if args else ''} failed: {msg}")
        self.tool, self.args_, self.code, self.stderr = tool, args, code, stderr


class StoreError(CumuloError):
    """The store could not read or write."""


# one table from error class to HTTP status (the API answers with it; the client reads a
# failed operation's error type back to the same status)
STATUS: list[tuple[type[CumuloError], int]] = [
    (TooLargeError, 413),
    (InvalidInputError, 400),
    (NotFoundError, 404),
    (AuthError, 401),
    (ForbiddenError, 403),
    (InvalidStateError, 409),
    (ConflictError, 409),
    (ProjectLimitError, 403),
    (UnsupportedError, 422),
    (DriverError, 500),
    (StoreError, 500),
    (CumuloError, 500),
]


def status_for(err: CumuloError | type[CumuloError]) -> int:
    cls = err if isinstance(err, type) else type(err)
    return next(code for c, code in STATUS if issubclass(cls, c))


def status_of_type(name: str | None) -> int:
    """The status of the error class named ``name`` (500 for a name not known here)."""
    classes: list[type[CumuloError]] = [CumuloError, *_subclasses(CumuloError)]
    for cls in classes:
        if cls.__name__ == name:
            return status_for(cls)
    return 500


def _subclasses(cls: type[CumuloError]) -> list[type[CumuloError]]:
    out: list[type[CumuloError]] = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out
