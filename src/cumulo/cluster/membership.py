"""Membership: enabling the cluster on the first host, join tokens, joining, heartbeats,
and this member's identity (kept in STATE_DIR/cluster.json, mode 0600).

Every member serves the whole cluster's store. Members talk HTTPS: each one's
certificate fingerprint is kept in the shared members table when it joins, and the
others pin it. A member presents its own token (an identity of kind ``member`` named
``member-NAME`` in the shared identities table, so every member accepts it) when it
forwards a request to another member's --listen address, naming the caller it speaks
for (``ON_BEHALF``): the receiving member authorizes that caller (api/auth.py).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import os
import secrets
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cumulo.domain.units import validate_name
from cumulo.errors import (
    ConflictError,
    CumuloError,
    InvalidInputError,
    NotFoundError,
    UnsupportedError,
)
from cumulo.host.info import HostInfo
from cumulo.store.cluster import ONLINE, ClusterStore, Member, Usage
from cumulo.store.hosts import HostStore, Remote
from cumulo.store.identities import MEMBER, IdentityStore

if TYPE_CHECKING:
    from cumulo.services.placement import Scheduler

log = logging.getLogger(__name__)
IDENTITY = "cluster.json"
TOKEN_PREFIX = "cumulo-join:"
HEARTBEAT = 2.0        # seconds between heartbeats
OFFLINE_AFTER = 10.0   # a member silent this long is offline
JOIN_TTL = 3600.0      # a join token's lifetime
FORWARDED = "x-cumulo-forwarded"      # set by a member: answer here, do not forward again
ON_BEHALF = "x-cumulo-on-behalf-of"   # set by a member: the identity it speaks for
ROOT_CALLER = "@root"                 # ... root on the forwarding member's unix socket


def identity_name(member: str) -> str:
    """The name of a member's identity (its token authenticates it to the others)."""
    return f"member-{member}"


def behalf(member: str | None, caller: str) -> dict[str, str]:
    """The headers of a request a member sends on behalf of ``caller``."""
    return {FORWARDED: member or "", ON_BEHALF: caller}


@dataclass(frozen=True)
class Identity:
    """Who this daemon is in the cluster."""
    member: str
    database: str
    token: str          # presented to the other members

    def save(self, state_dir: Path) -> None:
        path = state_dir / IDENTITY
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"member": self.member, "database": self.database,
                       "token": self.token}, f)

    @staticmethod
    def load(state_dir: Path) -> Identity | None:
        path = state_dir / IDENTITY
        if not path.exists():
            return None
        d = json.loads(path.read_text())
        return Identity(d["member"], d["database"], d["token"])


@dataclass(frozen=True)
class JoinToken:
    database: str
    name: str
    secret: str

    def encode(self) -> str:
        raw = json.dumps({"db": self.database, "name": self.name, "secret": self.secret})
        return TOKEN_PREFIX + base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @staticmethod
    def decode(token: str) -> JoinToken:
        body = token.strip().removeprefix(TOKEN_PREFIX)
        try:
            d = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            return JoinToken(str(d["db"]), str(d["name"]), str(d["secret"]))
        except (binascii.Error, ValueError, KeyError, TypeError):
            raise InvalidInputError("not a join token: use the line `cumulo cluster add NAME`"
                                    " printed") from None


def features(host: HostInfo, drivers: list[str]) -> dict[str, Any]:
    """What a member offers, from its host probe."""
    return {"kvm": host.kvm_usable, "criu": host.criu_check, "arch": host.arch,
            "runtimes": sorted(host.oci_runtimes), "instance_types": sorted(drivers)}


class Membership:
    """This daemon's side of the cluster (``identity`` None: not in one)."""

    def __init__(self, store: ClusterStore, hosts: HostStore, identities: IdentityStore,
                 state_dir: Path, host: HostInfo, drivers: list[str], address: str | None,
                 fingerprint: str | None = None, heartbeat: float = HEARTBEAT,
                 offline_after: float = OFFLINE_AFTER) -> None:
        self.store, self.hosts, self.state_dir = store, hosts, state_dir
        self.identities = identities
        self.fingerprint = fingerprint   # of this daemon's certificate (None: no HTTPS)
        self.host, self.drivers, self.address = host, drivers, address
        self.identity = Identity.load(state_dir)
        self.heartbeat_interval, self.offline_after = heartbeat, offline_after
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._duties: threading.Thread | None = None
        self.scheduler: Scheduler | None = None   # the placement engine's allocations
        self.on_beat: list[Any] = []    # called at the heartbeat's pace (cluster duties)

    @property
    def member(self) -> str | None:
        return self.identity.member if self.identity else None

    def _require(self) -> Identity:
        if self.identity is None:
            raise ConflictError("this host is in no cluster: `cumulo cluster enable` first")
        return self.identity

    def _check_address(self) -> str:
        """The --listen address the other members will use: it must be one they reach."""
        if not self.address:
            raise UnsupportedError("a cluster member needs --listen HOST:PORT: the other"
                                   " members reach it there")
        host = self.address.rpartition(":")[0].strip("[]")
        if host in ("0.0.0.0", "::", ""):
            raise UnsupportedError(f"--listen {self.address} is no address the other members"
                                   " can use: listen on this host's address in their network")
        if not self.fingerprint:
            raise UnsupportedError("cluster members talk HTTPS: start cumulod without"
                                   " --insecure-http")
        return self.address

    def _me(self, name: str) -> Member:
        total = shutil.disk_usage(self.state_dir).total
        return Member(name=name, address=self.address or "", state=ONLINE,
                      cpus=self.host.cpus, memory=self.host.memory_bytes, disk=total,
                      features=features(self.host, self.drivers),
                      fingerprint=self.fingerprint or "")

    def _become(self, name: str) -> None:
        """Register this host as member ``name`` with an identity of its own."""
        token = secrets.token_urlsafe(32)
        self.identities.add(identity_name(name), MEMBER, token)
        try:
            self.store.add_member(self._me(name))
        except BaseException:
            self.identities.revoke(identity_name(name), MEMBER)
            raise
        self.identity = Identity(name, self.store.db.url, token)
        self.identity.save(self.state_dir)

    # the first member
    def enable(self, name: str) -> Member:
        validate_name(name)
        if self.identity is not None:
            raise ConflictError(f"this host is already member {self.identity.member!r} of a"
                                " cluster")
        if self.store.db.engine.dialect.name != "postgresql":
            raise UnsupportedError("a cluster needs a store the members share: start cumulod"
                                   " with --database postgresql://... (this one is on SQLite)")
        self._check_address()
        if self.store.list_members():
            raise ConflictError("this store already holds a cluster: join it with"
                                " `cumulod --join TOKEN` instead")
        self._become(name)
        self.store.claim_unplaced(name)
        self.start()
        return self.store.get_member(name)

    def add(self, name: str, ttl: float = JOIN_TTL) -> tuple[str, str]:
        """A single-use join token for a new member ``name``; and when it expires."""
        self._require()
        validate_name(name)
        if ttl <= 0:
            raise InvalidInputError("the token's lifetime must be positive")
        secret = secrets.token_urlsafe(32)
        expires = self.store.add_join_token(name, secret, ttl)
        return JoinToken(self.store.db.url, name, secret).encode(), \
            f"{expires:%Y-%m-%d %H:%M:%S} UTC"

    # a new member, at its daemon's start (cumulod --join TOKEN)
    def join(self, token: JoinToken) -> None:
        if self.identity is not None:
            raise ConflictError(f"this host is already member {self.identity.member!r}")
        self._check_address()
        self.store.use_join_token(token.name, token.secret)
        self._become(token.name)
        log.info("joined the cluster as member %s", token.name)

    def remove(self, name: str, force: bool = False,
               forget: Callable[[str, str], None] | None = None) -> list[tuple[str, str]]:
        """Remove member ``name`` (as Incus' ``cluster remove``): refused while instances
        are located on it unless ``force`` (they are forgotten with it: their rows and
        allocations; what runs there is that host's to clean up). Its identity is
        revoked, so it can no longer speak to the others; its daemon, if it runs, notices
        at its next heartbeat and leaves the cluster. ``forget(project, name)`` deletes
        an instance's row. The instances forgotten."""
        me = self._require()
        self.store.get_member(name)   # 404 for an unknown one
        if name == me.member:
            raise ConflictError(f"member {name!r} is the one answering: ask another member to"
                                " remove it")
        held = [n for _p, n, _l in self.store.instances_on(name)]
        if held and not force:
            raise ConflictError(f"member {name!r} still has the following instances:"
                                f" {', '.join(held)}: evacuate it first (`cumulo cluster"
                                f" evacuate {name}`) or remove it with --force (they are"
                                " forgotten)")
        held_rows = self.store.instances_on(name)
        for project, inst, _loc in held_rows:
            if forget is not None:
                with contextlib.suppress(NotFoundError):
                    forget(project, inst)
        gone = [(p, n) for p, n, _l in held_rows]
        self.store.forget_member(name)
        with contextlib.suppress(NotFoundError):
            self.identities.revoke(identity_name(name), MEMBER)
        if self.scheduler is not None:
            self.scheduler.forget()
        log.warning("member %s removed from the cluster%s", name,
                    f", forgetting {len(gone)} instance(s)" if gone else "")
        return gone

    def _removed(self) -> None:
        """This member's row is gone (`cumulo cluster remove` on another member): leave
        the cluster. A restart makes this host a single one again, on its own store."""
        log.error("this host was removed from the cluster: it leaves it (restart cumulod:"
                  " it serves as a single host again, on its own store)")
        (self.state_dir / IDENTITY).unlink(missing_ok=True)
        self._stop.set()

    # reads
    def members(self) -> list[tuple[Member, Usage]]:
        self._require()
        usage = self.store.usage()
        return [(m, usage.get(m.name, Usage())) for m in self.store.list_members()]

    def state_of(self, m: Member) -> str:
        return m.effective(self.offline_after)

    def remote_for(self, member: str) -> Remote:
        """How this member reaches ``member``'s API."""
        me = self._require()
        m = self.store.get_member(member)
        if self.state_of(m) == "offline":
            raise ConflictError(f"member {member!r} is offline (silent for {m.silent:.0f} s)")
        return Remote(name=member, url=f"https://{m.address}", token=me.token,
                      fingerprint=m.fingerprint)

    # allocations (the scheduler's): kept in step with where instances are
    def released(self, project: str, name: str) -> None:
        """``name`` is gone (deleted, or its launch failed): free what it declared."""
        if self.identity is None or self.scheduler is None:
            return
        with contextlib.suppress(NotFoundError):   # none (made before the cluster)
            self.scheduler.release(project, name)

    def moved(self, project: str, name: str, member: str) -> None:
        """``name`` now runs on ``member`` (migrated, evacuated, recreated)."""
        if self.identity is None or self.scheduler is None:
            return
        try:
            self.scheduler.move(project, name, member)
        except NotFoundError:
            pass   # no allocation (made before the cluster)
        except ConflictError as err:   # it runs there already: say so, keep going
            log.warning("allocation of %s not moved to %s: %s", name, member, err)

    def is_local(self, location: str | None) -> bool:
        return self.identity is None or location is None or location == self.identity.member

    def offline_members(self) -> set[str]:
        if self.identity is None:
            return set()
        return {m.name for m in self.store.list_members() if self.state_of(m) == "offline"}

    # heartbeats
    def beat(self) -> None:
        me = self._require()
        self.store.heartbeat(me.member, self.address or "",
                             features(self.host, self.drivers))

    def start(self) -> None:
        if self.identity is None or self._thread is not None:
            return
        self._check_address()
        self.beat()
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)
        self._thread.start()
        self._duties = threading.Thread(target=self._hooks, name="cluster-duties",
                                        daemon=True)
        self._duties.start()

    def _loop(self) -> None:
        """Heartbeats only: nothing slow may delay them (a late one looks offline)."""
        while not self._stop.wait(self.heartbeat_interval):
            try:
                self.beat()
            except NotFoundError:
                self._removed()
                return
            except CumuloError as err:   # the store away for a moment: try again
                log.warning("heartbeat failed: %s", err)
            except Exception:
                log.exception("heartbeat failed")

    def _hooks(self) -> None:
        """What members do now and then (recovery of others' instances, the automatic
        rebalancer, networks), at the heartbeat's pace, in a thread of their own."""
        while not self._stop.wait(self.heartbeat_interval):
            for hook in self.on_beat:
                try:
                    hook()
                except CumuloError as err:
                    log.warning("%s failed: %s", getattr(hook, "__qualname__", hook), err)
                except Exception:
                    log.exception("%s failed", getattr(hook, "__qualname__", hook))

    def stop(self) -> None:
        self._stop.set()
        for t in (self._thread, self._duties):
            if t is not None:
                t.join(10)
