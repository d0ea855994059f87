"""Roles and the rights they carry (pure data: the API's rights table uses them).

A right is what a request needs: ``read`` (list, info, logs), ``operate`` (exec,
console, start/stop), ``manage`` (create, change, delete in a project), ``admin``
(server settings: identities, remotes, images, the host) and ``migrate`` (receive an
instance from another host). An identity holds ``admin`` server-wide, or a role per
project; the migration tokens of other hosts hold only ``migrate``.
"""

from __future__ import annotations

import re
from datetime import timedelta

from cumulo.errors import InvalidInputError

READ, OPERATE, MANAGE, ADMIN, MIGRATE = "read", "operate", "manage", "admin", "migrate"
RIGHTS = (READ, OPERATE, MANAGE, ADMIN, MIGRATE)

ROLE_RIGHTS: dict[str, frozenset[str]] = {
    "viewer": frozenset({READ}),
    "user": frozenset({READ, OPERATE}),
    "operator": frozenset({READ, OPERATE, MANAGE}),
}
PROJECT_ROLES = tuple(ROLE_RIGHTS)
ROLES = (ADMIN, *PROJECT_ROLES)
# what a role held server-wide gives in every project
SERVER_RIGHTS: dict[str, frozenset[str]] = {
    ADMIN: frozenset(RIGHTS),
    "remote": frozenset({MIGRATE}),
    "member": frozenset({MIGRATE}),   # and speaks for the callers it forwards (api/auth.py)
}

_DURATION = re.compile(r"(\d+)([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidInputError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    return role


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w``, ``45s``: a positive span of time."""
    m = _DURATION.fullmatch(text.strip())
    if not m or int(m.group(1)) == 0:
        raise InvalidInputError(f"invalid duration {text!r}: use N followed by s, m, h, d"
                                " or w, e.g. 30d")
    return timedelta(seconds=int(m.group(1)) * _UNIT[m.group(2)])
