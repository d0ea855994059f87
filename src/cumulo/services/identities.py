"""Identities: who may call this daemon over TCP, with which role where.

A token is 256 random bits, shown once; the store keeps its sha256. Revoking deletes
the identity: the next request with its token is refused, and the API closes the
websockets it holds open (api/auth.py ``Sessions``).
"""

from __future__ import annotations

import secrets
import threading
from datetime import datetime, timedelta

from cumulo.domain import roles
from cumulo.domain.units import validate_name
from cumulo.errors import AuthError, InvalidInputError, NotFoundError
from cumulo.store.identities import CLIENT, REMOTE, AuditStore, Identity, IdentityStore
from cumulo.store.tables import utcnow

TOUCH_EVERY = timedelta(seconds=60)   # last use is written at most this often per identity


def new_token() -> str:
    return secrets.token_urlsafe(32)   # 32 bytes: 256 bits


class IdentityService:
    def __init__(self, store: IdentityStore, audit: AuditStore) -> None:
        self.store, self.audit = store, audit
        self._touched: dict[int, datetime] = {}
        self._lock = threading.Lock()

    def create(self, name: str, role: str, project: str | None = "default",
               expires: str | None = None) -> tuple[Identity, str]:
        """A client identity: ``admin`` (server-wide) or a role in ``project``."""
        validate_name(name, "identity")
        roles.check_role(role)
        if role != roles.ADMIN and not project:
            raise InvalidInputError(f"the role {role!r} is held in a project: give one")
        when = utcnow() + roles.parse_duration(expires) if expires else None
        token = new_token()
        ident = self.store.add(name, CLIENT, token, admin=role == roles.ADMIN,
                               roles={} if role == roles.ADMIN else {str(project): role},
                               expires_at=when)
        return ident, token

    def grant(self, name: str, project: str, role: str | None) -> Identity:
        if role is not None and role not in roles.PROJECT_ROLES:
            raise InvalidInputError(f"unknown project role {role!r}: use one of"
                                    f" {', '.join(roles.PROJECT_ROLES)}")
        return self.store.grant(name, project, role)

    def issue_remote(self, name: str) -> str:
        """A token another host presents to migrate instances here (nothing else)."""
        validate_name(name, "token")
        token = new_token()
        self.store.add(name, REMOTE, token)
        return token

    def authenticate(self, header: str | None) -> Identity:
        """The identity of ``Authorization: Bearer TOKEN``, or AuthError saying why not."""
        if not header or not header.startswith("Bearer "):
            raise AuthError("over TCP this cumulod needs a token: set CUMULO_TOKEN to one"
                            " from `cumulo identity create` on its host")
        ident = self.store.by_token(header[7:].strip())
        if ident is None:
            raise AuthError("this token is not known here (wrong or revoked)")
        now = utcnow()
        if ident.expired(now):
            raise AuthError(f"the token of identity {ident.name!r} expired at"
                            f" {ident.expires_at:%Y-%m-%d %H:%M} UTC")
        self._touch(ident.id, now)
        return ident

    def spoken_for(self, name: str) -> Identity:
        """The identity a cluster member forwards a request for (AuthError if it is gone
        or expired: revoked between the two members' checks)."""
        try:
            ident = self.store.get(name)
        except NotFoundError:
            raise AuthError(f"the identity {name!r} a member forwarded for is not known"
                            " (revoked)") from None
        if ident.expired(utcnow()):
            raise AuthError(f"the token of identity {name!r} expired at"
                            f" {ident.expires_at:%Y-%m-%d %H:%M} UTC")
        return ident

    def valid(self, identity_id: int) -> bool:
        """Still there (not revoked, here or by another daemon on the store), unexpired."""
        ident = self.store.by_id(identity_id)
        return ident is not None and not ident.expired(utcnow())

    def _touch(self, identity_id: int, now: datetime) -> None:
        with self._lock:
            last = self._touched.get(identity_id)
            if last is not None and now - last < TOUCH_EVERY:
                return
            self._touched[identity_id] = now
        self.store.touch(identity_id, now)
