"""Instance use cases: create, start, stop, delete, exec, limits, reconciliation."""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cumulo import faults
from cumulo.domain import cloud_init, evacuation_mode, projects
from cumulo.domain.lifecycle import Action, State, guard
from cumulo.domain.limits import Limits, validate_limits
from cumulo.domain.models import Instance, Operation, default_host_id
from cumulo.domain.units import format_size, validate_name
from cumulo.drivers.base import (
    Attaches,
    Details,
    ExecRequest,
    ExecSession,
    GuestStats,
    InstanceDriver,
    InstanceSpec,
    InteractiveConsole,
    Launches,
    LogRecord,
    Logs,
    MeasuresGuest,
    RootChanges,
    RunStatus,
    Usage,
)
from cumulo.errors import (
    ConflictError,
    CumuloError,
    InvalidInputError,
    InvalidStateError,
    LimitExceedsHostError,
    NotFoundError,
    UnsupportedError,
)
from cumulo.host import probe
from cumulo.host.info import HostInfo
from cumulo.images import kinds
from cumulo.images import system as system_image
from cumulo.services.networks import DEFAULT_NETWORK, NetworkService, NicRequest
from cumulo.services.operations import Operations, Progress
from cumulo.services.storage import StorageService
from cumulo.store.repo import Store

if TYPE_CHECKING:
    from cumulo.cluster.membership import Membership

log = logging.getLogger(__name__)
LogRecords = list[LogRecord]


@dataclass(frozen=True)
class CreateRequest:
    name: str
    image: str
    type: str = "container"
    limits: Limits = Limits()
    privileged: bool = False
    command: list[str] | None = None
    options: dict[str, str] = field(default_factory=dict)
    start: bool = False
    networks: tuple[NicRequest, ...] | None = None   # None: the network "default", if any
    pool: str | None = None          # storage pool of the root; None: the default pool
    copy: bool = False               # a full copy of the image instead of a clone
    disk: int | None = None          # root size cap in bytes
    ssh_keys: tuple[str, ...] = ()   # root's authorized_keys, checked by domain/ssh_keys.py
    user_data: str | None = None     # cloud-init user-data for the VM's NoCloud seed
    cloud_config: dict[str, Any] = field(default_factory=dict)   # merged into it
    ephemeral: bool = False          # stateless: recreated elsewhere if its member is lost
    process: ProcessOptions | None = None   # PID 1's env, cwd, user, stdio (Docker API)
    # host directories into a container: (host path, path inside, read-only) (Docker API)
    binds: tuple[tuple[str, str, bool], ...] = ()


@dataclass(frozen=True)
class ProcessOptions:
    """How PID 1 runs, beyond its command; kept in the instance's runtime config."""

    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "/"
    user: tuple[int, int] = (0, 0)
    terminal: bool = False
    stdin: bool = False


class InstanceService:
    """Keeps the store and the host in agreement about instances."""

    def __init__(self, store: Store, ops: Operations, drivers: dict[str, InstanceDriver],
                 host: HostInfo, state_dir: Path, image_root: Path,
                 networks: NetworkService, storage: StorageService | None = None,
                 cluster: Membership | None = None) -> None:
        self.store, self.ops, self.drivers, self.host = store, ops, drivers, host
        self.cluster = cluster   # in a cluster: this daemon drives only its own instances
        self.networks = networks
        self.storage = storage
        self.events = ops.events
        self.instances_dir = state_dir / "instances"
        self.instances_dir.mkdir(parents=True, exist_ok=True)
        self.image_root = image_root
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._owners: dict[str, int] = {}   # host id -> the thread whose operation holds it
        self._turns: defaultdict[str, int] = defaultdict(int)   # operations begun, by host id
        self._locks_guard = threading.Lock()
        self._exits = threading.Lock()
        # instances seen to stop on their own, not yet cleared up (services/watchdog.py)
        self.ended: set[tuple[str, str]] = set()
        # in a cluster: gets an image's files from another member (cluster/image_pull.py)
        self.fetch_image: Callable[[str, Progress], object] | None = None

    # helpers
    @contextmanager
    def _locked(self, inst: Instance) -> Iterator[None]:
        with self._locks_guard:
            lock = self._locks[inst.host_id]
        with lock:
            with self._locks_guard:
                self._owners[inst.host_id] = threading.get_ident()
                self._turns[inst.host_id] += 1
            try:
                yield
            finally:
                with self._locks_guard:
                    del self._owners[inst.host_id]

    def _forget_lock(self, inst: Instance) -> None:
        """A deleted instance's lock and count go (else one of each per name ever used:
        the NIC soak's heap grew by them), unless another operation holds or takes it."""
        with self._locks_guard:
            lock = self._locks.get(inst.host_id)
            if lock is not None and not lock.locked():
                del self._locks[inst.host_id]
                self._turns.pop(inst.host_id, None)

    def _quiet(self, inst: Instance) -> int | None:
        """None while an operation of another thread holds the instance (a stateful
        snapshot, a checkpoint, a migration, a stop): what the host shows meanwhile, such
        as the guest it paused, is that operation's to record, not a refresh's. Else how
        many operations it has seen begin: a look at the host was quiet if this is the
        same before and after it."""
        with self._locks_guard:
            lock = self._locks.get(inst.host_id)
            if (lock is not None and lock.locked()
                    and self._owners.get(inst.host_id) != threading.get_ident()):
                return None
            return self._turns.get(inst.host_id, 0)

    def _driver(self, type_: str) -> InstanceDriver:
        try:
            return self.drivers[type_]
        except KeyError:
            raise InvalidInputError(
                f"unknown instance type {type_!r}: this host offers "
                f"{', '.join(sorted(self.drivers))}") from None

    def driver_of(self, inst: Instance) -> InstanceDriver:
        return self._driver(inst.type)

    def _spec(self, inst: Instance, volumes: bool = True) -> InstanceSpec:
        """``volumes=False``: an instance being created, which has none (attaching
        waits until it is), so its volumes are not looked up."""
        return InstanceSpec(
            host_id=inst.host_id, hostname=inst.name,
            instance_dir=self.instances_dir / inst.host_id,
            rootfs=self.image_root / inst.image / "rootfs",
            command=list(inst.command), limits=inst.limits, privileged=inst.privileged,
            options=evacuation_mode.driver_options(inst.options),
            kernel=self.image_root / inst.options["kernel"] / kinds.BOOT
            if inst.options.get("kernel", kinds.GENERIC_KERNEL) != kinds.GENERIC_KERNEL else None,
            on_created=(lambda pid: self.networks.attach(inst, pid)) if inst.nics else None,
            nics=tuple((n.host_name, n.mac) for n in inst.nics),
            before_start=(lambda: self.networks.attach_taps(inst)) if inst.nics else None,
            resolv_conf=self.networks.resolv_conf(inst),
            root=self.storage.root_spec(inst) if self.storage else None,
            volumes=self.storage.container_mounts(inst)
            if volumes and self.storage and inst.type == "container" else (),
            disks=self.storage.vm_disks(inst) if volumes and self.storage and inst.type == "vm"
            else (),
            boot_disk=next((self.image_root / inst.image / name for name in kinds.DISKS
                            if (self.image_root / inst.image / name).is_file()), None),
        )

    def check_options(self, type_: str, options: dict[str, str]) -> dict[str, str]:
        """Only the options this type's driver offers, with their allowed values."""
        choices = {**self._driver(type_).option_choices, **evacuation_mode.CHOICES}
        for key, value in options.items():
            if key not in choices:
                offered = ", ".join(sorted(choices)) or "none"
                raise InvalidInputError(
                    f"option {key!r} does not apply to a {type_} (its options: {offered})")
            if choices[key] and value not in choices[key]:   # () takes any value
                raise InvalidInputError(
                    f"invalid {key} {value!r}: use one of {', '.join(choices[key])}")
        return dict(options)

    def _kernel(self, ref: str | None, network: bool, tpm: bool = False) -> str:
        """An app VM's kernel: the image asked for (a ``kernel`` image's fingerprint), or
        the newest app-profile kernel built here (with ``net`` if the VM has a NIC, ``tpm``
        if a vTPM), or ``generic`` (Debian's, from the host's kernel cache)."""
        if ref == kinds.GENERIC_KERNEL:
            return kinds.GENERIC_KERNEL
        if ref is not None:
            image = self.store.get_image(ref)
            if image.kind != kinds.KERNEL:
                raise InvalidInputError(f"image {ref!r} is a {image.kind} image, not a kernel"
                                        " (build one: cumulo image build kernel)")
            return image.fingerprint
        needs = {f for f, asked in (("net", network), ("tpm", tpm)) if asked}
        fit = [i for i in self.store.list_images() if i.kind == kinds.KERNEL
               and i.properties.get("profile") == "app"
               and needs <= set(i.properties.get("features", "").split(","))]
        newest = max(fit, key=lambda i: str(i.created_at), default=None)
        return newest.fingerprint if newest else kinds.GENERIC_KERNEL

    def check_memory_left(self, limits: Limits) -> None:
        """A start whose memory limit is more than the host has available now is refused
        before anything is made (a VM takes it all; a container may come to)."""
        if limits.memory is None:
            return
        left = probe.memory_available()
        if left and limits.memory > left:
            raise LimitExceedsHostError(
                "memory", format_size(limits.memory),
                f"{format_size(left)} available now of {format_size(self.host.memory_bytes)}")

    def check_limits(self, limits: Limits) -> Limits:
        validate_limits(limits, self.host.cpus, self.host.memory_bytes)
        if limits.io_weight is not None and not self.host.cgroup_io_weight:
            raise UnsupportedError(
                "io_weight cannot be enforced on this host: its block I/O cgroup has no weight"
                " file (needs the BFQ I/O scheduler on cgroup v1, or io.weight on cgroup v2)")
        return limits

    @property
    def member(self) -> str | None:
        """This daemon's member name, None when it is in no cluster."""
        return self.cluster.member if self.cluster is not None else None

    def local(self, inst: Instance) -> bool:
        """Whether this daemon drives the instance (in a cluster: it runs on this member)."""
        return self.local_at(inst.location)

    def local_at(self, location: str | None) -> bool:
        """Whether an instance at ``location`` runs here."""
        return self.cluster is None or self.cluster.is_local(location)

    # reads
    def get(self, project: str, name: str) -> Instance:
        return self.refresh(self.store.get_instance(project, name))

    def list(self, project: str | None) -> list[Instance]:
        return [self.refresh(i) for i in self.store.list_instances(project)]

    def _here(self, project: str, name: str) -> Instance:
        """The instance, which this daemon must drive: another member's is refused (the
        API forwards requests for it to that member before they get here)."""
        return self._mine(self.get(project, name))

    def _mine(self, inst: Instance) -> Instance:
        if not self.local(inst):
            raise ConflictError(f"instance {inst.name!r} runs on member {inst.location!r}:"
                                " ask that member (any member forwards it there)")
        return inst

    def refresh(self, inst: Instance) -> Instance:
        """Notice a PID 1 that exited on its own since we last looked, or a guest paused
        or resumed outside of our operations (while one holds the instance, the store
        keeps what it says: the operation records the outcome)."""
        if inst.state not in (State.RUNNING, State.PAUSED) or not self.local(inst):
            return inst
        before = self._quiet(inst)
        try:
            run = self._driver(inst.type).state(inst.host_id)
        except CumuloError as err:
            log.warning("cannot read state of %s: %s", inst.host_id, err)
            return inst
        if run.status in (RunStatus.RUNNING, RunStatus.PAUSED) and (
                before is None or self._quiet(inst) != before):
            return inst   # an operation's doing, seen while it was under way
        if run.status == RunStatus.RUNNING and inst.state != State.RUNNING:
            return self.store.update_instance(inst.project, inst.name, state=State.RUNNING)
        if run.status == RunStatus.PAUSED and inst.state != State.PAUSED:
            return self.store.update_instance(inst.project, inst.name, state=State.PAUSED)
        if run.status in (RunStatus.STOPPED, RunStatus.MISSING):
            with self._exits:   # one of several callers noticing the same exit says so
                now = self.store.get_instance(inst.project, inst.name)
                if now.state not in (State.RUNNING, State.PAUSED):
                    return now
                died = None
                with self._locks_guard:   # an operation under way (a stop, the watchdog's
                    held = self._locks.get(inst.host_id)   # own) records the end itself
                    busy = held is not None and held.locked()
                if busy or self._quiet(inst) != before:   # or one began during the look
                    return now   # (a recreate, a start): what was read is from before it
                self.ended.add((inst.project, inst.name))   # cleared by services/watchdog.py
                if run.exit_code is None:
                    died = "its process ended on its own with no exit status (killed?)"
                stopped = self.store.update_instance(
                    inst.project, inst.name, state=State.STOPPED, exit_code=run.exit_code,
                    **({"last_error": died} if died else {}))
            # it ended on its own: say so, as a stop does (Docker's "die")
            self.events.lifecycle("stopped", inst.project, inst.name, exit_code=run.exit_code,
                                  reason="exited")
            return stopped
        return inst

    def exit_code(self, inst: Instance) -> int | None:
        """A stopped instance's exit status, asking the driver again when the store has
        none (its monitor had not written it yet when the exit was noticed)."""
        if inst.state != State.STOPPED or inst.exit_code is not None:
            return inst.exit_code
        try:
            code = self._driver(inst.type).state(inst.host_id).exit_code
        except CumuloError:
            return None
        if code is not None:
            self.store.update_instance(inst.project, inst.name, exit_code=code)
        return code

    def usage(self, inst: Instance) -> Usage:
        if inst.state not in (State.RUNNING, State.PAUSED) or not self.local(inst):
            return Usage()
        try:
            return self._driver(inst.type).usage(inst.host_id)
        except CumuloError:
            return Usage()

    def guest_stats(self, inst: Instance) -> GuestStats | None:
        """A VM's per-vCPU and per-drive figures; None for other types, or when the
        guest does not answer in time (a scrape skips it)."""
        driver = self._driver(inst.type)
        if inst.state not in (State.RUNNING, State.PAUSED) or not isinstance(
                driver, MeasuresGuest):
            return None
        try:
            return driver.guest_stats(inst.host_id)
        except CumuloError as err:
            log.warning("cannot measure %s: %s", inst.host_id, err)
            return None

    def details(self, inst: Instance) -> dict[str, Any] | None:
        """Driver-specific live facts (a VM's footprint and balloon); None if it has none."""
        driver = self._driver(inst.type)
        if not isinstance(driver, Details) or not self.local(inst):
            return None
        try:
            return driver.details(inst.host_id)
        except CumuloError as err:
            log.warning("cannot read details of %s: %s", inst.host_id, err)
            return None

    def root_changes(self, project: str, name: str) -> Sequence[tuple[str, int]]:
        """What the instance changed in its root against its image (``docker diff``)."""
        inst = self._here(project, name)
        driver = self._driver(inst.type)
        if not isinstance(driver, RootChanges):
            raise UnsupportedError(f"a {inst.type} keeps its changes in its own disk: only"
                                   " a container's can be listed")
        return driver.root_changes(self._spec(inst))

    def pid(self, inst: Instance) -> int | None:
        if inst.state not in (State.RUNNING, State.PAUSED) or not self.local(inst):
            return None
        return self._driver(inst.type).state(inst.host_id).pid

    # create / delete
    def create(self, project: str, req: CreateRequest) -> Operation:
        """Validate everything first, then do the host work as an operation."""
        validate_name(req.name)
        driver = self._driver(req.type)
        image, proj, default_net = self.store.launch_reads(
            req.image, project, DEFAULT_NETWORK if req.networks is None else None)
        if req.type == "container" and image.kind not in kinds.ROOTFS_KINDS:
            raise InvalidInputError(
                f"image {req.image!r} is a {image.kind} image: a container needs a root "
                f"filesystem image ({', '.join(sorted(kinds.ROOTFS_KINDS))})")
        config = proj.config
        projects.check_instance(project, config, req.type, req.privileged, req.options)
        binds = self._check_binds(req.type, req.binds)
        projects.check_binds(project, config, [str(s) for s, _d, _ro in binds])
        cpu, memory, disk = projects.apply_defaults(config, req.limits.cpu, req.limits.memory,
                                                    req.disk)
        limits = self.check_limits(req.limits.merged(cpu=cpu, memory=memory))
        if req.start:
            self.check_memory_left(limits)
        options = self.check_options(req.type, req.options)
        if "kernel" in driver.option_choices:
            options["kernel"] = self._kernel(options.get("kernel"), bool(req.networks),
                                             options.get("tpm") == "on")
        if not req.privileged and not self.host.userns:
            raise UnsupportedError(
                "this host does not allow user namespaces (user.max_user_namespaces is 0),"
                " so root in a container would be root on the host: enable them, or launch"
                " with --privileged if that is what you want")
        root = self.storage.plan_root(req.pool, req.copy, disk) if self.storage else None
        command = list(req.command) if req.command else list(image.command)
        if req.type == "container" and not req.command:   # its image boots an init
            boot = system_image.boot_options(image.properties)
            if boot:
                command, options = [boot[system_image.INIT]], {**options, **boot}
        if image.kind == kinds.VM_DISK:
            if req.type != "vm":
                raise InvalidInputError(f"image {req.image!r} is a bootable disk: launch it"
                                        " with --type vm")
            if req.command:
                raise InvalidInputError("a VM booting its own disk runs its own init: no"
                                        " command (use cumulo exec once it runs)")
        elif not command:
            raise InvalidInputError(f"image {req.image!r} has no default command: give one")
        # a cloud-init seed: a VM booting its own disk (cidata ISO), a system container
        # (in its root); whether the image has cloud-init is the image's business
        seeded = image.kind == kinds.VM_DISK or (req.type == "container"
                                                 and bool(options.get(system_image.INIT)))
        if req.ssh_keys and not (seeded or getattr(driver, "takes_ssh_keys", False)):
            raise InvalidInputError(f"--ssh-key does not apply to this {req.type}: VMs and"
                                    " system containers (an image with an init, cloud-init"
                                    " in it, no command) take SSH keys")
        if seeded:
            if req.user_data is not None:
                cloud_init.check_user_data(req.user_data)
            cloud_init.user_data(req.user_data, req.cloud_config, req.ssh_keys)
        elif req.user_data is not None or req.cloud_config:
            raise InvalidInputError("--user-data and --cloud-config are for cloud-init in a VM"
                                    " booting its own disk (a vm-disk image, e.g. debian/12/vm"
                                    " with --type vm) or a system container (an image with an"
                                    " init, no command)")
        verb = "launch" if req.start else "create"
        op = self.ops.new(f"{verb} instance {req.name}", {"instances": [f"{project}/{req.name}"]})
        with self.networks.lock:
            nics = self.networks.plan_nics(project, default_host_id(project, req.name),
                                           list(req.networks) if req.networks is not None
                                           else [NicRequest(DEFAULT_NETWORK)] if default_net
                                           else [])
            inst = self.store.add_instance(Instance(   # and its operation: one commit
                project=project, name=req.name, type=req.type, image=image.fingerprint,
                state=State.CREATING, limits=limits, privileged=req.privileged,
                command=command, options=options, nics=nics, root=root,
                location=self.member,
                ephemeral=req.ephemeral), op)
            self.networks.nics_changed(project, [n.network for n in nics])

        def announce() -> None:
            self.events.lifecycle("created", project, inst.name, type=inst.type)
            if req.start:
                self.events.lifecycle("started", project, inst.name)

        def work(progress: Progress) -> dict[str, Any]:
            spec = replace(self._spec(inst, volumes=False), ssh_keys=req.ssh_keys,
                           binds=binds, user_data=req.user_data,
                           cloud_config=dict(req.cloud_config))
            if req.process is not None:
                p = req.process
                spec = replace(spec, env=dict(p.env), cwd=p.cwd, user=p.user,
                               terminal=p.terminal, stdin=p.stdin)
            try:
                with self._locked(inst):
                    faults.point("create.after_record")
                    if self.fetch_image is not None:   # the image follows its instance
                        self.fetch_image(inst.image, progress)
                    progress(0.2, "preparing root filesystem")
                    if req.start and isinstance(driver, Launches):
                        driver.launch(spec)
                    else:
                        driver.create(spec)
                        if req.start:   # CREATING until it runs: a dying daemon rolls it back
                            progress(0.7, "starting")
                            driver.start(spec)
                    faults.point("create.after_driver")
                    # its state and the operation's end in one commit
                    self.ops.succeed(self.store.state_write(
                        project, inst.name, State.RUNNING if req.start else State.STOPPED),
                        then=announce)
            except BaseException:
                self._undo_create(driver, inst)
                raise
            return {}

        return self.ops.run(op, work)

    @staticmethod
    def _check_binds(type_: str, binds: tuple[tuple[str, str, bool], ...]
                     ) -> tuple[tuple[Path, str, bool], ...]:
        """Host directories to bind: existing, absolute, symlinks resolved; containers only."""
        if binds and type_ != "container":
            raise UnsupportedError(f"a {type_} cannot bind host directories: only a container")
        out = []
        for source, path, ro in binds:
            if not source.startswith("/"):
                raise InvalidInputError(f"bind source {source!r} is not an absolute path")
            if not path.startswith("/") or path == "/" or ".." in path.split("/"):
                raise InvalidInputError(f"bind target {path!r}: an absolute path below /,"
                                        " without '..'")
            real = Path(source).resolve()
            if not real.exists():
                raise NotFoundError("bind source path", source)
            out.append((real, path, ro))
        return tuple(out)

    def rename(self, project: str, name: str, new: str) -> Instance:
        """Another name for the instance, running or not: on the host (runtime, cgroups,
        files) it keeps its host id; DNS answers the new name."""
        validate_name(new)
        inst = self._here(project, name)
        if inst.state == State.CREATING:
            raise ConflictError(f"instance {name!r} is still being created")
        if new == name:
            raise InvalidInputError(f"instance {name!r} already has that name")
        with self._locked(inst):
            renamed = self.store.rename_instance(project, name, new)
        self.networks.nics_changed(project, [n.network for n in inst.nics])
        self.events.lifecycle("renamed", project, new, old_name=name)
        return renamed

    def _undo_create(self, driver: InstanceDriver, inst: Instance) -> None:
        """A failed create or launch leaves nothing: not on the host, not in the store."""
        try:
            driver.delete(inst.host_id, self.instances_dir / inst.host_id)
        except CumuloError as err:
            log.error("cleanup of %s failed: %s", inst.host_id, err)
        try:
            self.networks.detach(inst)
        except CumuloError as err:
            log.error("network cleanup of %s failed: %s", inst.host_id, err)
        shutil.rmtree(self.instances_dir / inst.host_id, ignore_errors=True)
        with contextlib.suppress(NotFoundError):
            self.store.delete_instance(inst.project, inst.name)
        if self.cluster is not None:
            self.cluster.released(inst.project, inst.name)
        self.networks.nics_changed(inst.project, [n.network for n in inst.nics])

    def delete(self, project: str, name: str, force: bool = False) -> Operation:
        inst = self._here(project, name)
        if inst.state == State.CREATING:
            raise ConflictError(f"instance {name!r} is still being created")
        if not force:
            guard(name, inst.state, Action.DELETE)
        driver = self._driver(inst.type)

        def work(progress: Progress) -> None:
            with self._locked(inst):
                progress(0.3, "removing from host")
                driver.delete(inst.host_id, self.instances_dir / inst.host_id)
                faults.point("delete.after_driver")
                self.networks.detach(inst)
                shutil.rmtree(self.instances_dir / inst.host_id, ignore_errors=True)
                self.store.delete_instance(project, name)
                if self.cluster is not None:
                    self.cluster.released(project, name)
                self.events.lifecycle("deleted", project, name)
                self.networks.nics_changed(project, [n.network for n in inst.nics])
                if self.storage:
                    self.storage.release_unused_mounts(project)
            self._forget_lock(inst)

        return self.ops.submit(f"delete instance {name}", work,
                               {"instances": [f"{project}/{name}"]})

    # state changes
    def change_state(self, project: str, name: str, action: Action, timeout: float = 30.0,
                     force: bool = False) -> Operation:
        inst = self._here(project, name)
        guard(name, inst.state, action)
        driver = self._driver(inst.type)
        if action == Action.START:
            self.check_memory_left(inst.limits)

        def work(progress: Progress) -> None:
            with self._locked(inst):
                current = self.get(project, name)
                guard(name, current.state, action)
                spec = self._spec(current)
                if action in (Action.STOP, Action.RESTART) and current.state != State.STOPPED:
                    progress(0.2, "stopping")
                    run = driver.stop(inst.host_id, timeout, force)
                    faults.point("stop.after_driver")
                    self.store.update_instance(project, name, state=State.STOPPED,
                                               exit_code=run.exit_code)
                    self.events.lifecycle("stopped", project, name, exit_code=run.exit_code)
                    self.networks.detach(current)
                if action in (Action.START, Action.RESTART):
                    progress(0.6, "starting")
                    try:
                        driver.start(spec)
                    except CumuloError as err:
                        self.store.update_instance(project, name, state=State.STOPPED,
                                                   last_error=str(err))
                        with contextlib.suppress(CumuloError):
                            self.networks.detach(current)
                        raise
                    faults.point("start.after_driver")
                    self.store.update_instance(project, name, state=State.RUNNING,
                                               exit_code=None, last_error=None)
                    self.events.lifecycle("started", project, name)
                elif action == Action.PAUSE:
                    driver.pause(inst.host_id)
                    self.store.update_instance(project, name, state=State.PAUSED)
                    self.events.lifecycle("paused", project, name)
                elif action == Action.RESUME:
                    driver.resume(inst.host_id)
                    self.store.update_instance(project, name, state=State.RUNNING)
                    self.events.lifecycle("resumed", project, name)

        return self.ops.submit(f"{action.value} instance {name}", work,
                               {"instances": [f"{project}/{name}"]})

    def update_limits(self, project: str, name: str, changes: dict[str, Any]) -> Instance:
        """Change limits: at once on a running instance, at next start on a stopped one."""
        inst = self._here(project, name)
        guard(name, inst.state, Action.UPDATE)
        current = inst.limits.to_dict()
        for key, value in changes.items():
            if value is None:
                current.pop(key, None)
            else:
                current[key] = value
        limits = self.check_limits(Limits.from_dict(current))
        with self._locked(inst):
            self._driver(inst.type).update_limits(inst.host_id, limits)
            updated = self.store.update_instance(project, name, limits=limits)
        self.events.lifecycle("limits-changed", project, name, limits=limits.to_dict())
        return updated

    def update_options(self, project: str, name: str, changes: dict[str, str | None]
                       ) -> Instance:
        """Change the options that may change on an instance that exists: the cluster's
        (``cluster.evacuate``); a value None takes the default again."""
        inst = self._here(project, name)
        fixed = sorted(k for k in changes if not k.startswith(evacuation_mode.PREFIX))
        if fixed:
            raise InvalidInputError(f"option {fixed[0]!r} is fixed at creation: only"
                                    f" {', '.join(evacuation_mode.CHOICES)} can change")
        options = dict(inst.options)
        for key, value in changes.items():
            if value is None:
                options.pop(key, None)
            else:
                options[key] = value
        options = self.check_options(inst.type, options)
        with self._locked(inst):
            updated = self.store.update_instance(project, name, options=options)
        self.events.lifecycle("options-changed", project, name, options=options)
        return updated

    # exec and console
    def exec(self, project: str, name: str, request: ExecRequest) -> ExecSession:
        # the columns an exec needs; the whole instance only when it is not running here
        type_, host_id, state, location = self.store.exec_target(project, name)
        if state != State.RUNNING or not self.local_at(location):
            inst = self._mine(self.store.get_instance(project, name))
            # the store may lag the host: a guest paused and resumed outside of our
            # operations, say
            state = self.refresh(inst).state
        guard(name, state, Action.EXEC)
        if not request.command:
            raise InvalidInputError("exec needs a command")
        # the driver looks at the live state itself: not once more here (a refresh)
        # unless it refuses, so that the store learns why and the error names the instance
        try:
            return self._driver(type_).exec(host_id, request)
        except InvalidStateError as err:
            guard(name, self.get(project, name).state, Action.EXEC)
            # the store keeps its state while an operation holds the instance (a stateful
            # snapshot pausing it, say): the host's state, under the instance's name
            raise InvalidStateError(name, err.current, err.action) from None

    def console(self, project: str, name: str, offset: int) -> tuple[bytes, int, Instance]:
        inst = self._here(project, name)
        if inst.state == State.CREATING:
            return b"", offset, inst
        data, new_offset = self._driver(inst.type).read_console(inst.host_id, offset)
        return data, new_offset, inst

    def _attaching(self, project: str, name: str) -> tuple[Instance, Attaches]:
        inst = self.get(project, name)
        driver = self._driver(inst.type)
        if not isinstance(driver, Attaches):
            raise UnsupportedError(f"a {inst.type} has no stdin to attach to")
        return inst, driver

    def open_stdin(self, project: str, name: str) -> socket.socket:
        """A stream to PID 1's stdin (or pty), if it was created with one kept open."""
        inst, driver = self._attaching(project, name)
        guard(name, inst.state, Action.EXEC)
        return driver.open_stdin(inst.host_id)

    def resize(self, project: str, name: str, rows: int, cols: int) -> None:
        inst, driver = self._attaching(project, name)
        driver.resize(inst.host_id, rows, cols)

    def log_records(self, project: str, name: str, offset: int
                    ) -> tuple[LogRecords, int, Instance]:
        """PID 1's output as records (time, stream, partial, payload) from ``offset`` on;
        a driver without them gives its console as stdout records without a time."""
        inst = self.get(project, name)
        if inst.state == State.CREATING:
            return [], offset, inst
        driver = self._driver(inst.type)
        if isinstance(driver, Logs):
            records, new_offset = driver.read_records(inst.host_id, offset)
            return records, new_offset, inst
        data, new_offset = driver.read_console(inst.host_id, offset)
        return ([(b"", b"stdout", True, data)] if data else []), new_offset, inst

    def kill(self, project: str, name: str, sig: str) -> None:
        """Send a signal to PID 1 (``docker kill``); its end is noticed as any exit."""
        inst = self.get(project, name)
        driver = self._driver(inst.type)
        if inst.state not in (State.RUNNING, State.PAUSED):
            raise InvalidStateError(name, inst.state.value, "kill")
        if isinstance(driver, Logs):
            driver.signal(inst.host_id, sig)
        elif sig in ("KILL", "9", "SIGKILL"):
            self.change_state(project, name, Action.STOP, force=True)
        else:
            raise UnsupportedError(f"a {inst.type} takes no signal but KILL")

    def open_console(self, project: str, name: str) -> socket.socket:
        """A stream to the instance's interactive console (VMs: the serial port)."""
        inst = self._here(project, name)
        driver = self._driver(inst.type)
        if not isinstance(driver, InteractiveConsole):
            raise UnsupportedError(f"a {inst.type} has no interactive console: use"
                                   f" 'cumulo exec {name} -- sh' (and 'cumulo logs' for output)")
        return driver.open_console(inst.host_id)

    def recreate(self, project: str, name: str) -> Instance:
        """Run an instance that was just placed here anew from its image (an ephemeral one
        whose member was lost): its state there is gone."""
        inst = self.store.get_instance(project, name)
        driver = self._driver(inst.type)
        spec = self._spec(inst)
        with self._locked(inst):
            try:
                if self.fetch_image is not None:
                    self.fetch_image(inst.image, lambda _f, _m: None)
                if isinstance(driver, Launches):
                    driver.launch(spec)
                else:
                    driver.create(spec)
                    driver.start(spec)
            except CumuloError as err:
                self.store.update_instance(project, name, state=State.ERROR,
                                           last_error=f"recreating it here failed: {err}")
                raise
            inst = self.store.update_instance(project, name, state=State.RUNNING,
                                              exit_code=None, last_error=None)
        self.events.lifecycle("recreated", project, name, member=self.member)
        return inst

    # daemon start
    def reconcile(self) -> None:
        """Make the store agree with what really runs on the host (one pass over the
        store and the drivers' records; what it found and fixed is logged)."""
        known: set[tuple[str, str]] = set()
        fixed: list[str] = []
        seen = 0
        stored = self.store.list_instances()
        for inst in stored:
            driver = self.drivers.get(inst.type)
            if driver is None:
                continue
            if not self.local(inst):   # another member's (a copy here is a leftover)
                continue
            seen += 1
            known.add((inst.type, inst.host_id))
            if inst.state == State.CREATING:  # the daemon died mid-create: roll it back
                log.warning("removing half-created instance %s", inst.host_id)
                self._undo_create(driver, inst)
                fixed.append(f"{inst.name}: half-created, removed")
                continue
            run = driver.state(inst.host_id)
            want = {RunStatus.RUNNING: State.RUNNING, RunStatus.PAUSED: State.PAUSED,
                    RunStatus.MISSING: State.ERROR}.get(run.status, State.STOPPED)
            if run.status == RunStatus.STOPPED and (err := self._clear_stopped(driver, inst)):
                fixed.append(f"{inst.name}: cannot clear what its stop left: {err}")
            if want == inst.state:
                continue
            fixed.append(f"{inst.name}: {inst.state.value} -> {want.value}")
            if want == State.ERROR:
                self.store.update_instance(inst.project, inst.name, state=State.ERROR,
                                           last_error="its files are missing on this host")
            elif want == State.STOPPED:
                self.store.update_instance(inst.project, inst.name, state=State.STOPPED,
                                           exit_code=run.exit_code)
            else:
                self.store.update_instance(inst.project, inst.name, state=want)
        for type_, driver in self.drivers.items():
            for host_id in driver.list_host_ids():
                if (type_, host_id) not in known:  # on the host, unknown to the store
                    log.warning("removing orphaned %s %s", type_, host_id)
                    driver.delete(host_id, self.instances_dir / host_id)
                    fixed.append(f"{host_id}: orphaned {type_}, removed")
        for d in self.instances_dir.iterdir():   # files of no instance at all
            if d.is_dir() and d.name not in {i.host_id for i in stored}:
                shutil.rmtree(d, ignore_errors=True)
                fixed.append(f"{d.name}: stray files, removed")
        log.info("reconciled %d instance(s) with the host: %s", seen,
                 "; ".join(fixed) if fixed else "nothing to fix")

    def _clear_stopped(self, driver: InstanceDriver, inst: Instance) -> CumuloError | None:
        """What a stopped instance may have left (a runtime container never started, a
        dead QEMU's sockets, swtpm, cgroup, NICs): gone, as after a stop."""
        try:
            driver.stop(inst.host_id, 0, True)
            self.networks.detach(inst)
        except CumuloError as err:
            return err
        return None

    # publish (cumulo publish): copy a stopped container's root
    def copy_root(self, project: str, name: str, dest: Path) -> Instance:
        """Copy a stopped container's root, as it sees it, to ``dest``; it cannot start
        meanwhile (the instance lock is held). Returns the instance as it was."""
        inst = self._here(project, name)
        copy_root = getattr(self._driver(inst.type), "copy_root", None)
        if inst.type != "container" or copy_root is None:
            raise UnsupportedError(f"publishing a {inst.type} is not supported yet: "
                                   "only containers can be published")
        with self._locked(inst):
            inst = self.refresh(self.store.get_instance(project, name))
            if inst.state != State.STOPPED:
                raise InvalidStateError(name, inst.state.value, "publish")
            copy_root(self._spec(inst), dest)
        return inst
