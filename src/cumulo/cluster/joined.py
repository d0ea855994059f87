"""``cumulo cluster join TOKEN``: a running single host joins a cluster, as Incus joins
a server through ``incus admin init`` on it. The host must hold no instance (its own
store is left behind, as Incus wants a joining server empty); it becomes a member in
the cluster's store (the same steps as ``cumulod --join TOKEN``: its identity and
STATE_DIR/cluster.json), takes down the bridges of its own networks (the cluster's come
up instead), and the daemon then starts again in place (``exec`` of itself, same
arguments): from then on its store is the cluster's, as after a start with ``--join``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from typing import TYPE_CHECKING

from cumulo.cluster.membership import JoinToken, Membership
from cumulo.errors import ConflictError, CumuloError
from cumulo.store.cluster import ClusterStore
from cumulo.store.hosts import HostStore
from cumulo.store.identities import IdentityStore
from cumulo.store.repo import Store

if TYPE_CHECKING:
    from cumulo.services.host import Services

log = logging.getLogger(__name__)


def join_running(svc: Services, token: JoinToken) -> None:
    here = svc.cluster
    if here.identity is not None:
        raise ConflictError(f"this host is already member {here.identity.member!r} of a"
                            " cluster")
    held = svc.store.list_instances()
    if held:
        raise ConflictError(f"this host has {len(held)} instance(s): a host joins a cluster"
                            " empty (delete them, or move them with `cumulo migrate` first)")
    here._check_address()
    shared = Store(token.database)
    try:
        Membership(ClusterStore(shared.db), HostStore(shared.db), IdentityStore(shared.db),
                   here.state_dir, here.host, here.drivers, here.address,
                   here.fingerprint).join(token)
    finally:
        shared.close()
    for net in svc.store.list_networks():   # its own bridges: the cluster's replace them
        with contextlib.suppress(CumuloError):
            svc.networks.delete(net.project, net.name)


def restart(svc: Services) -> None:
    """Start cumulod again in place, once the answer is sent: its identity now names
    the cluster's store."""
    log.warning("joined the cluster: cumulod starts again on the cluster's store")
    time.sleep(0.2)
    with contextlib.suppress(Exception):
        svc.store.close()
    os.execv(sys.executable, [sys.executable, *sys.argv])
