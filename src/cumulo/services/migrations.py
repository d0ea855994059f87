"""Several hosts: tokens, remotes, and moving a running VM to another cumulod.

A host issues tokens (``cumulo remote token``: identities of kind ``remote``, which may
only migrate here); another host stores one with the remote's URL and the sha256 of
its certificate, pinned on first use (``cumulo remote add``), and presents it over
HTTPS. A migration is
driven by the source:

1. ``POST /1.0/migrations/incoming`` on the destination: it records the instance
   (state ``creating``), creates it with its driver, checks that both QEMUs would
   be the same machine (the driver's signature) and starts a QEMU waiting for the
   state on its TCP address; it answers with the URI to send to;
2. the source sends the state (pre-copy while the guest runs with ``--live``);
3. ``POST .../finish``: the destination waits for the last pages and runs the guest;
4. only then the source deletes its copy. Any failure before 4 aborts the
   destination (``DELETE``) and puts the source back as it was: the instance is on
   exactly one host.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from cumulo import faults
from cumulo.client import Client, fetch_fingerprint, normal_fingerprint
from cumulo.domain import projects
from cumulo.domain.lifecycle import State
from cumulo.domain.limits import Limits
from cumulo.domain.models import Instance, Operation
from cumulo.domain.units import validate_name
from cumulo.drivers.migratable import MachineVariants, Migratable, Postcopy, StateArchive
from cumulo.errors import (
    ConflictError,
    CumuloError,
    InvalidInputError,
    NotFoundError,
    UnsupportedError,
)
from cumulo.services import (
    archive_migration,
    migration_image,
    migration_nics,
    migration_recovery,
)
from cumulo.services.identities import IdentityService
from cumulo.services.images import ImageService
from cumulo.services.instances import InstanceService
from cumulo.services.migration_cancel import CancelWatch
from cumulo.services.operations import Progress
from cumulo.store.hosts import HostStore, Remote
from cumulo.store.identities import REMOTE, Identity

TIMEOUT = 120.0
log = logging.getLogger(__name__)
_TOKEN_N = re.compile(r"token-(\d+)")


def next_token_name(names: list[str]) -> str:
    """``token-N`` one past the highest such name: free even after some were revoked
    (one past the count is not)."""
    used = [int(m.group(1)) for n in names if (m := _TOKEN_N.fullmatch(n))]
    return f"token-{max(used, default=0) + 1}"


class MigrationService:
    def __init__(self, instances: InstanceService, hosts: HostStore,
                 listen_host: str | None, identities: IdentityService) -> None:
        self.instances, self.hosts, self.listen_host = instances, hosts, listen_host
        self.identities = identities
        # networks and groups made for instances being received: dropped again on abort
        self._made: dict[tuple[str, str], migration_nics.Received] = {}
        self._images_received: set[str] = set()   # fingerprints sent here for migrations
        self._received: set[tuple[str, str]] = set()   # VMs this daemon finished receiving
        self.recovery = migration_recovery.Recovery(self)

    # --- the image of an instance migrating here (services/migration_image.py) ---
    def image_expected(self, fingerprint: str) -> None:
        """An image is about to be sent for a migration: only such an image may be
        dropped again by a remote (``drop_image``)."""
        if not re.fullmatch(r"[0-9a-f]{64}", fingerprint):
            raise InvalidInputError(f"not an image fingerprint: {fingerprint!r}")
        self._images_received.add(fingerprint)

    def drop_image(self, images: ImageService, fingerprint: str) -> None:
        """Delete an image received for a migration that then failed (not another one)."""
        if not re.fullmatch(r"[0-9a-f]{64}", fingerprint):   # (a fuzzer's name is not echoed)
            raise InvalidInputError(f"not an image fingerprint: {fingerprint[:80]!r}")
        if fingerprint not in self._images_received:
            raise ConflictError(f"image {fingerprint[:12]} was not received for a migration")
        images.delete(fingerprint)
        self._images_received.discard(fingerprint)

    # --- tokens and remotes ---
    def token_names(self) -> list[str]:
        return [i.name for i in self.identities.store.list(REMOTE)]

    def issue_token(self, name: str | None) -> tuple[str, str]:
        name = name or next_token_name([i.name for i in self.identities.store.list()])
        return name, self.identities.issue_remote(name)

    def revoke_token(self, name: str) -> Identity:
        return self.identities.store.revoke(name, REMOTE)

    def add_remote(self, name: str, url: str, token: str, fingerprint: str | None = None
                   ) -> Remote:
        """Trust ``url``: its certificate is pinned (``fingerprint``, or the one it shows
        now: trust on first use), then checked: reachable, and the token accepted."""
        validate_name(name)
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise InvalidInputError(f"invalid remote URL {url!r}: use https://HOST:PORT")
        if parsed.scheme == "http":
            fp = ""
        elif fingerprint:
            fp = normal_fingerprint(fingerprint)
        else:
            fp = fetch_fingerprint(url)
        remote = Remote(name=name, url=url.rstrip("/"), token=token, fingerprint=fp)
        with self._client(remote) as c:
            c.server()  # reachable, the certificate the pinned one, and the token accepted
        self.hosts.add_remote(remote)
        return remote

    def _remote(self, name: str) -> Remote:
        """A remote by name; in a cluster a member's name is one too (its own token)."""
        cluster = self.instances.cluster
        if cluster is not None and self.instances.member is not None \
                and name not in {r.name for r in self.hosts.list_remotes()}:
            return cluster.remote_for(name)
        return self.hosts.get_remote(name)

    def _placed(self, project: str, name: str) -> None:
        """In a cluster, the instance's allocation follows it here."""
        cluster, member = self.instances.cluster, self.instances.member
        if cluster is not None and member is not None:
            cluster.moved(project, name, member)

    def _being_received(self, inst: Instance) -> bool:
        """In a cluster the row is shared and keeps its state while it moves: what this
        member receives is what it has made for it (``_made``)."""
        if self.instances.member is not None:
            return (inst.project, inst.name) in self._made
        return inst.state == State.CREATING

    @staticmethod
    def _client(remote: Remote, timeout: float = TIMEOUT) -> Client:
        return Client(url=remote.url, token=remote.token, timeout=timeout,
                      fingerprint=remote.fingerprint or None)

    # --- the source side ---
    def _driver(self, type_: str) -> Migratable:
        driver = self.instances._driver(type_)
        if not isinstance(driver, Migratable):
            raise UnsupportedError(f"{type_} instances cannot migrate: stop, copy and start"
                                   " instead")
        return driver

    def _archive_driver(self, type_: str) -> StateArchive | None:
        """The driver, if it moves instances as state files (containers)."""
        driver = self.instances._driver(type_)
        if isinstance(driver, Migratable) or not isinstance(driver, StateArchive):
            return None
        return driver

    def _send_image(self, inst: Instance, remote: Remote, rc: Client,
                    progress: Progress) -> bool:
        """The image follows the instance: copy it there if the remote lacks it."""
        return migration_image.send(self.instances.image_root,
                                    self.instances.store.get_image(inst.image, inst.project),
                                    rc, remote.name, progress)

    def migrate(self, project: str, name: str, remote_name: str, live: bool,
                bandwidth: int | None = None, postcopy: bool = False) -> Operation:
        inst = self.instances.get(project, name)
        projects.check_migration(project, self.instances.store.projects.get(project).config,
                                 remote_name)
        if (archive := self._archive_driver(inst.type)) is not None:
            if postcopy:
                raise UnsupportedError(f"{inst.type} instances cannot migrate with post-copy"
                                       " (a QEMU feature): drop --postcopy")
            return self._migrate_archive(inst, archive, remote_name, live)
        driver = self._driver(inst.type)
        if postcopy and not live:
            raise InvalidInputError("--postcopy needs --live: a stopped guest moves in one pass")
        if postcopy and not isinstance(driver, Postcopy):
            raise UnsupportedError(f"{inst.type} instances cannot migrate with post-copy")
        if inst.state not in (State.RUNNING, State.PAUSED):
            raise ConflictError(f"instance {name!r} is {inst.state.value}: only a running or"
                                " paused VM migrates (a stopped one has only its config)")
        remote = self._remote(remote_name)
        body = {"name": name, "type": inst.type, "image": inst.image,
                "limits": inst.limits.to_dict(), "command": list(inst.command),
                "options": dict(inst.options), "privileged": inst.privileged,
                "signature": driver.signature(inst.host_id),
                "root": None if inst.root is None else {
                    "copy": bool(inst.root.get("copy")), "size": inst.root.get("size")},
                "nics": migration_nics.describe(self.instances.networks, inst)
                if inst.nics else None, "postcopy": postcopy}

        def work(progress: Progress) -> dict[str, Any]:
            was_running = inst.state == State.RUNNING
            with self.instances._locked(inst), self._client(remote) as rc:
                copied = self._send_image(inst, remote, rc, progress)
                progress(0.3 if copied else 0.02, f"preparing {remote.name}")
                # from here until the copy here is dropped, a restarted daemon knows to
                # settle the migration (services/migration_recovery.py)
                migration_recovery.mark(self, inst, remote.name, was_running)
                watch = CancelWatch(progress)   # cancel: QEMU stops, the source stays
                try:
                    uri = rc.request("POST", "/migrations/incoming",
                                     params={"project": project}, json=body).json()["uri"]
                    faults.point("migrate.source.after_incoming")
                    if postcopy and isinstance(driver, Postcopy):
                        driver.allow_postcopy(inst.host_id)
                    stats = driver.send(inst.host_id, uri, live=live, bandwidth=bandwidth,
                                        progress=watch.progress, cancelled=watch)
                    faults.point("migrate.source.after_send")
                    watch.progress(0.98, f"starting on {remote.name}")  # too late to cancel
                    rc.request("POST", f"/migrations/incoming/{name}/finish",
                               params={"project": project})
                    faults.point("migrate.source.after_finish")
                except BaseException as err:
                    outcome, status = self._settle_failed(inst, remote.name)
                    if outcome == migration_recovery.Outcome.STAYED:
                        if copied:
                            migration_image.forget(rc, inst.image)
                        raise
                    if outcome == migration_recovery.Outcome.PENDING:
                        if status in ("completed", "gone"):
                            raise migration_recovery.remote_silent(remote.name, name,
                                                                   err) from err
                        raise
                    # the guest runs there after all (the answer to finish was lost)
                    return {"remote": remote.name, "image_sent": copied, "recovered": True}
                # the guest runs there now: nothing of it stays here
                self._forget(inst)
                self.instances.events.lifecycle("migrated", project, name, remote=remote.name)
                return {"remote": remote.name, "image_sent": copied, **stats}

        return self.instances.ops.submit(f"migrate instance {name} to {remote.name}", work,
                                         {"instances": [f"{project}/{name}"]})

    def _settle_failed(self, inst: Instance, remote: str
                       ) -> tuple[migration_recovery.Outcome, str]:
        """After a failed send or finish: how it really ended, from both sides; a missing
        answer is asked again in the background."""
        try:
            outcome, status = self.recovery.settle(inst)
        except CumuloError as err:
            log.warning("migration of %s to %s: cannot settle it now: %s", inst.name,
                        remote, err)
            outcome, status = migration_recovery.Outcome.PENDING, "unknown"
        if outcome == migration_recovery.Outcome.PENDING:
            self.recovery.later(inst)
        return outcome, status

    def _forget(self, inst: Instance) -> None:
        """Remove a migrated-away instance here: QEMU, taps, files, store rows, its leases."""
        self.instances._driver(inst.type).delete(
            inst.host_id, self.instances.instances_dir / inst.host_id)
        with contextlib.suppress(CumuloError):
            self.instances.networks.detach(inst)
        shutil.rmtree(self.instances.instances_dir / inst.host_id, ignore_errors=True)
        with contextlib.suppress(NotFoundError):
            # in a cluster the row is shared: it stays when another member holds it
            if self.instances.local(self.instances.store.get_instance(inst.project, inst.name)):
                self.instances.store.delete_instance(inst.project, inst.name)
        if inst.nics:
            self.instances.networks.nics_changed(inst.project, [n.network for n in inst.nics])

    # --- the destination side ---
    def incoming(self, project: str, body: dict[str, Any]) -> str:
        if self.listen_host is None:
            raise UnsupportedError("this cumulod listens on no TCP address (--listen): it"
                                   " cannot receive migrations")
        name, type_ = str(body["name"]), str(body["type"])
        validate_name(name)
        archive = self._archive_driver(type_)
        driver = None if archive is not None else self._driver(type_)
        projects.check_instance(project, self.instances.store.projects.get(project).config,
                                type_, bool(body.get("privileged")),
                                dict(body.get("options") or {}))
        try:
            image = self.instances.store.get_image(str(body["image"]), project)
        except NotFoundError:
            raise ConflictError(f"this host lacks image {str(body['image'])[:12]!r}, which"
                                f" instance {name!r} runs from: import it here first (`cumulo"
                                " image export` on the source), then migrate again") from None
        if self.instances.member is not None:   # the row is shared: it moves, not copied
            inst = self.instances.store.get_instance(project, name)
            if self.instances.local(inst) or (project, name) in self._made:
                raise ConflictError(f"instance {name!r} is already on this member")
            self._made[(project, name)] = migration_nics.Received(nics=list(inst.nics))
            return self._prepare_incoming(inst, body, archive, driver)
        root_req = body.get("root")
        storage = self.instances.storage
        root = None if root_req is None or storage is None else storage.plan_root(
            None, bool(root_req.get("copy")), root_req.get("size"))
        networks = self.instances.networks
        with networks.lock:   # the addresses stay free until the NICs are stored
            made = migration_nics.receive(networks, project, dict(body.get("nics") or {}))
            try:
                inst = self.instances.store.add_instance(Instance(
                    project=project, name=name, type=type_, image=image.fingerprint,
                    state=State.CREATING,
                    limits=Limits.from_dict(dict(body.get("limits") or {})),
                    privileged=bool(body.get("privileged")),
                    command=list(body.get("command") or []),
                    options=dict(body.get("options") or {}), root=root, nics=made.nics))
            except BaseException:
                migration_nics.release(networks, project, made)
                raise
            self._made[(project, name)] = made
        return self._prepare_incoming(inst, body, archive, driver)

    def _prepare_incoming(self, inst: Instance, body: dict[str, Any],
                          archive: StateArchive | None, driver: Migratable | None) -> str:
        project, name, type_ = inst.project, inst.name, inst.type
        networks = self.instances.networks
        try:
            if inst.nics:   # its static DHCP lease and its groups in the firewall
                networks.nics_changed(project, [n.network for n in inst.nics])
            spec = self.instances._spec(inst)
            self.instances._driver(type_).create(spec)
            if archive is not None:
                mine = "" if body.get("cold") else archive.signature(inst.host_id)
            else:
                assert driver is not None
                if isinstance(driver, MachineVariants):
                    driver.match_source(inst.host_id, str(body.get("signature") or ""))
                mine = driver.signature(inst.host_id)
            if mine != body.get("signature"):
                raise ConflictError(f"the hosts would run different machines ({mine} here,"
                                    f" {body.get('signature')} there): cannot load the state")
            if driver is None:
                return "archive"   # the source uploads state files (PUT .../state/PART)
            if body.get("postcopy"):
                if not isinstance(driver, Postcopy):
                    raise UnsupportedError(f"{type_} instances cannot receive post-copy here")
                driver.allow_postcopy(inst.host_id)
            assert self.listen_host is not None   # checked in ``incoming``
            uri = driver.prepare_incoming(spec, self.listen_host)
            faults.point("migrate.dest.after_prepare")
            return uri
        except BaseException:
            self.incoming_abort(project, name)
            raise

    def incoming_finish(self, project: str, name: str, start: bool = True) -> None:
        inst = self.instances.store.get_instance(project, name)
        if not self._being_received(inst):
            if (project, name) in self._received and inst.state in (State.RUNNING,
                                                                     State.PAUSED):
                # finished already: the source lost the answer (it died, or the link), and
                # asks again; it may not read instances here, so this is its only way to
                # learn the guest runs here (else it would resume its copy too)
                return
            raise ConflictError(f"instance {name!r} is not being received")
        here = {} if self.instances.member is None else {"location": self.instances.member}
        if (archive := self._archive_driver(inst.type)) is not None:
            try:
                state = archive_migration.finish(self.instances, archive, inst, start)
            except BaseException:
                self.incoming_abort(project, name)
                raise
            self.instances.store.update_instance(project, name, state=state, **here)
            self._placed(project, name)
            self._made.pop((project, name), None)
            self.instances.events.lifecycle("migrated-in", project, name)
            return
        try:
            self._driver(inst.type).finish_incoming(inst.host_id, resume=True)
        except BaseException:
            self.incoming_abort(project, name)
            raise
        faults.point("migrate.dest.after_finish")   # running, the store not told yet
        self.instances.store.update_instance(project, name, state=State.RUNNING, **here)
        self._received.add((project, name))
        self._placed(project, name)
        self._made.pop((project, name), None)
        self.instances.events.lifecycle("migrated-in", project, name)

    def incoming_abort(self, project: str, name: str) -> None:
        """No trace of an instance that was being received (nothing there is fine)."""
        try:
            inst = self.instances.store.get_instance(project, name)
        except NotFoundError:
            return
        if not self._being_received(inst):
            raise ConflictError(f"instance {name!r} is not being received")
        with contextlib.suppress(CumuloError):
            self._forget(inst)
        made = self._made.pop((project, name), None)
        if made is not None:
            migration_nics.release(self.instances.networks, project, made)

    # --- moving by state files (containers): services/archive_migration.py ---
    def _migrate_archive(self, inst: Instance, driver: StateArchive, remote_name: str,
                         live: bool) -> Operation:
        name, project = inst.name, inst.project
        if live and inst.state not in (State.RUNNING, State.PAUSED):
            raise ConflictError(f"instance {name!r} is {inst.state.value}: only a running"
                                " container migrates with its state (--stop-first moves a"
                                " stopped one)")
        if live:
            try:
                signature = driver.signature(inst.host_id)
                from_state = True
            except CumuloError as err:
                raise archive_migration.cannot_live(name, err) from err
        else:
            signature, from_state = "", False
        remote = self._remote(remote_name)
        body = {"name": name, "type": inst.type, "image": inst.image,
                "limits": inst.limits.to_dict(), "command": list(inst.command),
                "options": dict(inst.options), "privileged": inst.privileged,
                "signature": signature, "cold": not from_state,
                "root": None if inst.root is None else {
                    "copy": bool(inst.root.get("copy")), "size": inst.root.get("size")},
                "nics": migration_nics.describe(self.instances.networks, inst)
                if inst.nics else None}

        def work(progress: Progress) -> dict[str, Any]:
            with self.instances._locked(inst), self._client(remote) as rc:
                current = self.instances.get(project, name)
                copied = self._send_image(inst, remote, rc, progress)
                progress(0.3 if copied else 0.02, f"preparing {remote.name}")
                try:
                    rc.request("POST", "/migrations/incoming", params={"project": project},
                               json=body)
                except BaseException:
                    if copied:
                        migration_image.forget(rc, inst.image)
                    raise
                try:
                    stats = archive_migration.send(self.instances, driver, current, rc, live,
                                                   progress)
                except BaseException:
                    with contextlib.suppress(CumuloError):
                        rc.request("DELETE", f"/migrations/incoming/{name}",
                                   params={"project": project})
                    if copied:
                        migration_image.forget(rc, inst.image)
                    raise
                # it runs there now (or is stopped there): nothing of it stays here
                self._forget(inst)
                self.instances.events.lifecycle("migrated", project, name, remote=remote.name)
                return {"remote": remote.name, "image_sent": copied, **stats}

        return self.instances.ops.submit(f"migrate instance {name} to {remote.name}", work,
                                         {"instances": [f"{project}/{name}"]})

    def incoming_state_path(self, project: str, name: str, part: str) -> Path:
        """Where an uploaded state part of an instance being received is written."""
        inst = self.instances.store.get_instance(project, name)
        if not self._being_received(inst) or self._archive_driver(inst.type) is None:
            raise ConflictError(f"instance {name!r} is not being received as state files")
        return archive_migration.part_path(self.instances.instances_dir / inst.host_id, part)
