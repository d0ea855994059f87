"""Containers on a standard OCI runtime (runc or crun), each supervised by conmon.

Nothing is kept in memory: the driver may be recreated after a daemon restart
and finds its instances from disk. A small record per instance lives under
``<state_dir>/container/``; the bundle (``config.json``, overlay rootfs, console
log, conmon's ``exit`` file) lives in the instance dir; pid files and the
runtime's state live under ``<runtime_dir>``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import time
from pathlib import Path
from typing import Any

from cumulo import faults
from cumulo.domain.limits import Limits
from cumulo.drivers.base import (
    ExecRequest,
    ExecSession,
    InstanceSpec,
    RunState,
    RunStatus,
    Usage,
    require,
)
from cumulo.drivers.container import (
    changes,
    checkpoint,
    monitor,
    restore_hook,
    rootfs,
    seed,
    system,
)
from cumulo.drivers.container.exec_session import RuntimeExecSession
from cumulo.drivers.container.oci_spec import (
    IDMAP_BASE,
    RESOLV_CONF,
    build_config,
    host_binds,
    mounts,
    resources,
    set_criu_conf,
    update_resources,
)
from cumulo.drivers.container.runtime import OciRuntime, choose, criu_error
from cumulo.drivers.records import Records
from cumulo.drivers.registry import DriverContext
from cumulo.errors import (
    ConflictError,
    CumuloError,
    DriverError,
    NotFoundError,
    RuntimeToolError,
    UnsupportedError,
)
from cumulo.host import cgroups, procs, space
from cumulo.host.criu import CONFIG_ANNOTATION
from cumulo.net import netlink
from cumulo.storage.base import RootSpec
from cumulo.storage.pools import pool_of
from cumulo.storage.tools import disk_usage

KILL_WAIT = 10.0
POLL = 0.02
EXIT_SETTLE = 0.5       # conmon writes PID 1's exit status within ms of reaping it
CONMON_EXIT_WAIT = 5.0
CGROUP_RELEASE_WAIT = 2.0  # a killed process leaves its cgroup last, after closing its files


def _loopback_up(pid: int) -> None:
    netlink.link_up("lo", Path(f"/proc/{pid}/ns/net"))


class ContainerDriver:
    """``InstanceDriver`` for OS-level containers."""

    kind = "container"
    option_choices: dict[str, tuple[str, ...]] = {}

    def __init__(self, ctx: DriverContext) -> None:
        self.ctx = ctx
        self.runtime: OciRuntime = choose(
            ctx.oci_runtime, ctx.host.oci_runtime_default, ctx.runtime_dir
        )
        self._records = Records(ctx.state_dir / "container")
        self._run = ctx.runtime_dir / "container"
        # CRIU's options for our containers (its network lock), named in each config.json
        self._criu_conf = ctx.state_dir / "container" / "criu.conf"

    # --- where things are -------------------------------------------------
    def _instance_dir(self, host_id: str) -> Path:
        rec = self._records.get(host_id)
        if rec is None:
            raise NotFoundError("instance", host_id)
        return Path(rec["instance_dir"])

    def _paths(self, host_id: str, instance_dir: Path) -> monitor.ConmonPaths:
        return monitor.ConmonPaths(
            run_dir=self._run / host_id,
            persist_dir=instance_dir / "conmon",
            log_path=instance_dir / "console.log",
        )

    def _cgroup(self, host_id: str) -> str:
        return f"/{self.ctx.cgroup_parent}/{host_id}"

    def _check_limits(self, limits: Limits) -> None:
        if limits.io_weight is not None and not self.ctx.host.cgroup_io_weight:
            raise UnsupportedError(
                "io_weight cannot be enforced on this host: no writable blkio/io weight file"
                " (needs the BFQ scheduler on v1, or io.weight on v2)"
            )

    # --- lifecycle --------------------------------------------------------
    def create(self, spec: InstanceSpec) -> None:
        self._create(spec, early=False)

    def _create(self, spec: InstanceSpec, early: bool) -> monitor.Pending | None:
        """``early``: conmon starts as soon as the instance dir is there and waits on its
        start pipe while the rest is made (returned, for ``_run_prepared``)."""
        self._check_limits(spec.limits)
        if self._records.get(spec.host_id) is not None:
            raise ConflictError(f"instance {spec.host_id!r} already exists on this host")
        if not spec.rootfs.is_dir():
            raise NotFoundError("root filesystem", str(spec.rootfs))
        pending = None
        try:
            spec.instance_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(spec.instance_dir, 0o711)
            if early:
                pending = self._conmon(spec.host_id, spec.instance_dir, spec.stdin,
                                       spec.terminal)
            self._records.put(spec.host_id, {"instance_dir": str(spec.instance_dir),
                                             "rootfs": str(spec.rootfs),
                                             "privileged": spec.privileged,
                                             "stdin": spec.stdin, "terminal": spec.terminal,
                                             "stop_signal": system.stop_signal(spec.options),
                                             "root": spec.root.to_dict() if spec.root else None,
                                             "binds": [[str(s), d, ro]
                                                       for s, d, ro in spec.binds]})
            self._prepare(spec)
            if system.is_system(spec.options):   # cloud-init's seed, as a VM's cidata disk
                seed.write(spec.instance_dir / "rootfs", seed.files(spec),
                           0 if spec.privileged else IDMAP_BASE)
            faults.point("create.after_rootfs")
        except BaseException as err:
            if pending is not None:
                pending.cancel()
            with contextlib.suppress(CumuloError):
                self.delete(spec.host_id, spec.instance_dir)
            if isinstance(err, OSError):
                raise DriverError(f"cannot create instance {spec.host_id!r}: {err}") from err
            raise
        return pending

    def _conmon(self, host_id: str, instance_dir: Path, stdin: bool, terminal: bool
                ) -> monitor.Pending:
        return monitor.Pending(self.runtime, host_id, instance_dir,
                               self._paths(host_id, instance_dir), stdio=(stdin, terminal))

    def _prepare(self, spec: InstanceSpec) -> None:
        """Mount the rootfs and write config.json unless already there (idempotent)."""
        rootfs.mount_root(spec)
        if spec.resolv_conf is not None:  # rewritten at each start: the network may change
            resolv = spec.instance_dir / RESOLV_CONF
            resolv.with_suffix(".tmp").write_text(spec.resolv_conf)
            os.chmod(resolv.with_suffix(".tmp"), 0o644)
            os.replace(resolv.with_suffix(".tmp"), resolv)
        config = spec.instance_dir / "config.json"
        binds = (self._records.get(spec.host_id) or {}).get("binds") or []
        want = mounts(spec) + host_binds([(str(s), str(d), bool(ro)) for s, d, ro in binds])
        if not config.exists():
            data = build_config(spec, self._cgroup(spec.host_id), criu_conf=self._criu_conf)
            data["mounts"] = want
        else:   # volumes may have been attached or detached since: refresh the mounts
            data = json.loads(config.read_text())
            stale_hook = restore_hook.drop(data)
            # (a config from before the CRIU options file gets it now)
            new_conf = set_criu_conf(data, self._criu_conf)
            if data.get("mounts") == want and not stale_hook and not new_conf:
                return
            data["mounts"] = want
        tmp = config.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))   # (json's C encoder: not with an indent)
        tmp.rename(config)

    def start(self, spec: InstanceSpec) -> RunState:
        host_id = spec.host_id
        require(self.state(host_id), host_id, "start", RunStatus.STOPPED)
        instance_dir = self._instance_dir(host_id)
        self.runtime.delete(host_id)
        try:
            self._prepare(spec)
        except OSError as err:
            raise DriverError(f"cannot prepare instance {host_id!r}: {err}") from err
        return self._run_prepared(spec, instance_dir)

    def launch(self, spec: InstanceSpec) -> RunState:
        """``create`` then ``start``, without start's state check, runtime clean-up and
        preparation again: the instance was prepared a moment ago and has never run."""
        pending = self._create(spec, early=True)
        return self._run_prepared(spec, spec.instance_dir, pending)

    def _run_prepared(self, spec: InstanceSpec, instance_dir: Path,
                      pending: monitor.Pending | None = None) -> RunState:
        """conmon (``runtime create``), the NICs, then ``runtime start``. ``pending``: a
        conmon started already, waiting to go."""
        host_id = spec.host_id
        paths = self._paths(host_id, instance_dir)
        try:
            for stale in (paths.exit_file, paths.exit_dir / host_id, self._started(host_id)):
                stale.unlink(missing_ok=True)
            if pending is None:
                rec = self._records.get(host_id) or {}
                pending = self._conmon(host_id, instance_dir, bool(rec.get("stdin")),
                                       bool(rec.get("terminal")))
            pid = pending.go()
            if system.is_system(spec.options):   # its init makes its own sub-cgroups
                owner = 0 if spec.privileged else IDMAP_BASE
                system.delegate(self._cgroup(host_id), owner, owner)
            if spec.on_created is not None:
                spec.on_created(pid)
            faults.point("start.after_conmon")   # created, NICs in, PID 1 not started
            self.runtime.start(host_id, pid)
            self._started(host_id).touch()
        except BaseException:
            if pending is not None:   # (one that never went)
                pending.cancel()
            with contextlib.suppress(CumuloError):
                self.runtime.delete(host_id)
            raise
        return RunState(RunStatus.RUNNING, pid=pid)

    def _exit_code(self, paths: monitor.ConmonPaths, settle: bool = False) -> int | None:
        """PID 1's exit status. With ``settle`` (PID 1 is gone) and conmon still alive,
        conmon is about to write it: wait (bounded) rather than report no status."""
        end = time.monotonic() + (EXIT_SETTLE if settle else 0)
        while True:
            try:
                return int(paths.exit_file.read_text().strip())
            except (OSError, ValueError):
                if time.monotonic() >= end or monitor.conmon_pid(paths) is None:
                    return None
            time.sleep(POLL)

    def _started(self, host_id: str) -> Path:
        """Marker written once ``runtime start`` returned: PID 1 runs the user's command."""
        return self._run / host_id / "started"

    def state(self, host_id: str) -> RunState:
        """From our own files and /proc when they are clear: forking the runtime for every
        ``cumulo info`` or ``list`` row costs ~5-10 ms each."""
        rec = self._records.get(host_id)
        if rec is None:
            return RunState(RunStatus.MISSING)
        instance_dir = Path(rec["instance_dir"])
        pid = monitor.container_pid(instance_dir)
        if pid is None or not cgroups.holds(pid, self._cgroup(host_id)):
            paths = self._paths(host_id, instance_dir)
            return RunState(RunStatus.STOPPED, exit_code=self._exit_code(paths, settle=True))
        if self._started(host_id).exists():
            paused = cgroups.frozen(self._cgroup(host_id))
            return RunState(RunStatus.PAUSED if paused else RunStatus.RUNNING, pid=pid)
        data = self.runtime.state_json(host_id)   # created but maybe never started: ask
        status = None if data is None else data.get("status")
        pid = None if data is None else data.get("pid")
        if status == "running":
            return RunState(RunStatus.RUNNING, pid=pid)
        if status == "paused":
            return RunState(RunStatus.PAUSED, pid=pid)
        paths = self._paths(host_id, Path(rec["instance_dir"]))
        return RunState(RunStatus.STOPPED, exit_code=self._exit_code(paths))

    def lost_helpers(self, host_id: str) -> list[str]:
        """conmon, if it died while PID 1 runs on (``Supervised``)."""
        if self.state(host_id).status not in (RunStatus.RUNNING, RunStatus.PAUSED):
            return []
        paths = self._paths(host_id, self._instance_dir(host_id))
        return ["conmon"] if monitor.conmon_pid(paths) is None else []

    def _wait_stopped(self, host_id: str, paths: monitor.ConmonPaths, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if paths.exit_file.exists():
                return True
            if self.runtime.state(host_id) not in ("running", "paused", "created"):
                # PID 1 is gone; give conmon a moment to record the exit code
                end = time.monotonic() + 2.0
                while not paths.exit_file.exists() and time.monotonic() < end:
                    if monitor.conmon_pid(paths) is None:
                        break
                    time.sleep(POLL)
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL)

    def stop(self, host_id: str, timeout: float, force: bool) -> RunState:
        current = require(self.state(host_id), host_id, "stop")
        paths = self._paths(host_id, self._instance_dir(host_id))
        if current.status in (RunStatus.RUNNING, RunStatus.PAUSED):
            if current.status == RunStatus.PAUSED:
                self.runtime.resume(host_id)  # frozen tasks cannot act on signals
            # an init is asked to power off (systemd: SIGRTMIN+3), a program to end
            polite = str((self._records.get(host_id) or {}).get("stop_signal", "TERM"))
            self.runtime.kill(host_id, "KILL" if force else polite)
            if not self._wait_stopped(host_id, paths, 0 if force else timeout):
                self.runtime.kill(host_id, "KILL")
                if not self._wait_stopped(host_id, paths, KILL_WAIT):
                    raise DriverError(f"instance {host_id!r} did not die after SIGKILL")
        self.runtime.delete(host_id)
        # the runtime leaves the cgroup when conmon was gone (nobody reaped PID 1 at once)
        cgroups.remove(self._cgroup(host_id), wait=CGROUP_RELEASE_WAIT)
        return RunState(RunStatus.STOPPED, exit_code=self._exit_code(paths))

    def copy_root(self, spec: InstanceSpec, dest: Path) -> None:
        """``cumulo publish``: the root as the (stopped) container sees it, copied to
        ``dest`` with the ids inside it (shifted back down if unprivileged)."""
        rootfs.copy_out(spec, dest)

    def pause(self, host_id: str) -> None:
        require(self.state(host_id), host_id, "pause", RunStatus.RUNNING)
        self.runtime.pause(host_id)

    def resume(self, host_id: str) -> None:
        require(self.state(host_id), host_id, "resume", RunStatus.PAUSED)
        self.runtime.resume(host_id)

    def delete(self, host_id: str, instance_dir: Path) -> None:
        rec = self._records.get(host_id)
        dirs = {instance_dir} | ({Path(rec["instance_dir"])} if rec else set())
        if rec is not None and self.state(host_id).status in (RunStatus.RUNNING,
                                                              RunStatus.PAUSED):
            self.stop(host_id, 0, force=True)  # faster than runc's own kill-and-poll
        self.runtime.delete(host_id)
        for d in dirs:
            self._reap_conmon(self._paths(host_id, d))
        left = cgroups.remove(self._cgroup(host_id), self.ctx.cgroup_parent,
                              wait=CGROUP_RELEASE_WAIT)
        if left:
            who = ", ".join(cgroups.holders(left)) or "still exiting"
            raise DriverError(f"cannot delete {host_id!r}: its cgroups still hold processes"
                              f" after its PID 1 was killed ({who}): {', '.join(left)}")
        try:
            if rec is not None and rec.get("root"):
                pool_of(RootSpec.from_dict(rec["root"])).delete_root(host_id)
            for d in dirs:
                rootfs.unmount(d)
                if d.exists():
                    shutil.rmtree(d)
            shutil.rmtree(self._run / host_id, ignore_errors=True)
            self._records.remove(host_id)
        except OSError as err:
            raise DriverError(f"cannot remove instance {host_id!r}: {err}") from err

    def _reap_conmon(self, paths: monitor.ConmonPaths) -> None:
        """conmon exits once PID 1 is gone; make sure it has before removing its files."""
        pid = monitor.conmon_pid(paths)
        if pid is not None and not procs.wait_dead(pid, CONMON_EXIT_WAIT):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    # --- limits and usage ---------------------------------------------------
    def update_limits(self, host_id: str, limits: Limits) -> None:
        self._check_limits(limits)
        current = require(self.state(host_id), host_id, "update_limits")
        instance_dir = self._instance_dir(host_id)
        res = resources(limits)
        if current.status in (RunStatus.RUNNING, RunStatus.PAUSED):
            run_dir = self._run / host_id
            run_dir.mkdir(parents=True, exist_ok=True)
            res_file = run_dir / "resources.json"
            res_file.write_text(json.dumps(update_resources(limits, self.ctx.host.cpus)))
            self.runtime.update(host_id, res_file)
        config = instance_dir / "config.json"
        try:
            data = json.loads(config.read_text())
            old = data["linux"].get("resources", {})
            data["linux"]["resources"] = {"devices": old.get("devices", []), **res}
            tmp = config.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=1))
            tmp.rename(config)
        except (OSError, ValueError, KeyError) as err:
            raise DriverError(f"cannot rewrite config of {host_id!r}: {err}") from err

    def usage(self, host_id: str) -> Usage:
        if self._records.get(host_id) is None:
            raise NotFoundError("instance", host_id)
        u = cgroups.read_usage(self._cgroup(host_id))
        return Usage(u.cpu_time_ns, u.memory_bytes, u.memory_peak_bytes, u.pids,
                     u.io_read_bytes, u.io_write_bytes)

    # --- processes and console ----------------------------------------------
    def exec(self, host_id: str, request: ExecRequest) -> ExecSession:
        require(self.state(host_id), host_id, "exec", RunStatus.RUNNING)
        work = self._run / host_id
        work.mkdir(parents=True, exist_ok=True)

        def argv(pid_file: Path, tty: bool) -> list[str]:
            return self.runtime.exec_argv(
                host_id, request.command, request.env, request.cwd, pid_file, tty, request.user
            )

        return RuntimeExecSession(argv, work, request.tty, request.rows, request.cols)

    def open_stdin(self, host_id: str) -> socket.socket:
        """conmon's attach socket (in the bundle): what is written there reaches PID 1."""
        path = self._instance_dir(host_id) / "attach"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.connect(str(path))
        except OSError as err:
            sock.close()
            raise DriverError(f"cannot attach to {host_id!r}: {err}") from err
        return sock

    def resize(self, host_id: str, rows: int, cols: int) -> None:
        """Through conmon's control fifo: message 1 is a window resize."""
        ctl = self._instance_dir(host_id) / "ctl"
        try:
            fd = os.open(ctl, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            return   # not running, or no pty: nothing to resize
        try:
            os.write(fd, f"1 {rows} {cols}\n".encode())
        except OSError as err:
            raise DriverError(f"cannot resize {host_id!r}: {err}") from err
        finally:
            os.close(fd)

    def read_records(self, host_id: str, offset: int) -> tuple[list[monitor.LogRecord], int]:
        paths = self._paths(host_id, self._instance_dir(host_id))
        return monitor.read_records(paths.log_path, offset)

    def signal(self, host_id: str, sig: str) -> None:
        """Send ``sig`` (a name like TERM or a number) to PID 1."""
        require(self.state(host_id), host_id, "signal", RunStatus.RUNNING, RunStatus.PAUSED)
        self.runtime.kill(host_id, sig)

    def read_console(self, host_id: str, offset: int) -> tuple[bytes, int]:
        paths = self._paths(host_id, self._instance_dir(host_id))
        return monitor.read_log(paths.log_path, offset)

    def list_host_ids(self) -> list[str]:
        return self._records.ids()

    def root_changes(self, spec: InstanceSpec) -> list[tuple[str, int]]:
        """What the container changed in its root against its image (``RootChanges``):
        its overlay's upper dir, or its full copy compared with the image tree."""
        require(self.state(spec.host_id), spec.host_id, "list the changes of")
        lower = spec.rootfs if spec.privileged else rootfs.shifted_path(spec.rootfs)
        data = self._root_data(spec.host_id)
        try:
            if data.name == "upper":
                return changes.overlay_changes(data, lower)
            return changes.tree_changes(data, lower)
        except OSError as err:
            raise DriverError(f"cannot compare the root of {spec.host_id!r} with its image:"
                              f" {err}") from err

    # --- checkpoint/restore with CRIU (through the runtime) ------------------------
    def _criu_dir(self, host_id: str) -> Path:
        return self._instance_dir(host_id) / "criu"

    def _criu(self, running: str | None = None) -> str:
        """The CRIU to use (refused at once if this host cannot checkpoint), with our
        options file in place; ``running``: the container to dump, which must have been
        started with that file named (one started by an older cumulod was not)."""
        criu = checkpoint.require_criu(self.ctx.host)
        try:
            checkpoint.write_criu_conf(self._criu_conf, self.ctx.host)
        except OSError as err:
            raise DriverError(f"cannot write {self._criu_conf}: {err}") from err
        if running is not None:
            data = self.runtime.state_json(running) or {}
            if (data.get("annotations") or {}).get(CONFIG_ANNOTATION) != str(self._criu_conf):
                raise UnsupportedError(f"instance {running!r} was started without Cumulo's"
                                       " CRIU options (by an older cumulod): restart it once,"
                                       " then checkpoint it")
        return criu

    def _root_data(self, host_id: str) -> Path:
        """The dir with the root's own files: the overlay upper dir (or a pool's)."""
        rec = self._records.get(host_id) or {}
        if rec.get("root"):
            return pool_of(RootSpec.from_dict(rec["root"])).container_root_data(host_id)
        return self._instance_dir(host_id) / "upper"

    def _replace_root_data(self, spec: InstanceSpec, archive: Path) -> None:
        """The root's own files become those carried in ``archive``; mounted again."""
        rootfs.unmount(spec.instance_dir)
        checkpoint.unpack_upper(archive, self._root_data(spec.host_id))
        self._prepare(spec)

    def checkpoint(self, host_id: str, path: Path) -> dict[str, Any]:
        """Dump PID 1's whole tree to ``path`` (a state archive); the container stops."""
        return self._dump(host_id, path, with_root=False)

    def export_state(self, host_id: str, path: Path, parent: Path | None = None
                     ) -> dict[str, Any]:
        """Like ``checkpoint``, with the root's changes, to run on another host; with
        ``parent`` (from ``pre_dump``) only memory changed since is saved."""
        return self._dump(host_id, path, with_root=True, parent=parent)

    def _dump(self, host_id: str, path: Path, with_root: bool,
              parent: Path | None = None) -> dict[str, Any]:
        require(self.state(host_id), host_id, "checkpoint", RunStatus.RUNNING,
                RunStatus.PAUSED)
        criu = self._criu(running=host_id)
        instance_dir = self._instance_dir(host_id)
        paths = self._paths(host_id, instance_dir)
        work = self._criu_dir(host_id)
        self._require_space(host_id, path, with_root)
        checkpoint.reset(work)
        rel_parent = None
        if parent is not None:   # CRIU wants the parent relative to the image dir
            os.symlink(parent, work / checkpoint.PARENT)
            rel_parent = f"../{checkpoint.PARENT}"
        t0 = time.monotonic()
        try:
            self.runtime.checkpoint(host_id, criu, work / checkpoint.IMAGES, work,
                                    parent=rel_parent)
            dumped = time.monotonic()
            self._wait_stopped(host_id, paths, KILL_WAIT)
            self.runtime.delete(host_id)
            self._reap_conmon(paths)
            size = checkpoint.pack(path, work, self._root_data(host_id) if with_root else None)
        except OSError as err:
            raise DriverError(f"cannot save the state of {host_id!r}: {err}") from err
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return {"total_time_ms": round((time.monotonic() - t0) * 1000),
                "freeze_ms": round((dumped - t0) * 1000), "transferred": size}

    def _require_space(self, host_id: str, path: Path, with_root: bool) -> None:
        """The dump is written twice (CRIU's images, then the archive) after the container
        was stopped: refuse it while it still runs if the space for that is not there."""
        need = 2 * (cgroups.read_usage(self._cgroup(host_id)).memory_bytes or 0) + (1 << 20)
        if with_root:
            need += disk_usage(self._root_data(host_id))
        for where in {path.parent, self._criu_dir(host_id).parent}:
            space.require("the checkpoint's directory", where, need,
                          f"save the state of {host_id!r}")

    def pre_dump(self, host_id: str, images: Path, archive: Path) -> dict[str, Any]:
        """Save the memory of the running container to ``images`` (kept: the final dump's
        parent) and to ``archive`` (to send); the container keeps running."""
        require(self.state(host_id), host_id, "pre-dump", RunStatus.RUNNING)
        criu = self._criu(running=host_id)
        checkpoint.require_mem_tracking(criu)
        work = self._criu_dir(host_id)
        checkpoint.reset(work)
        checkpoint.reset(images)
        t0 = time.monotonic()
        try:
            self.runtime.checkpoint(host_id, criu, images, work, pre_dump=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        took = round((time.monotonic() - t0) * 1000)
        if images.name != checkpoint.IMAGES:
            raise DriverError(f"pre-dump images must be in a dir named {checkpoint.IMAGES!r}")
        return {"pre_dump_ms": took, "pre_dump_bytes": checkpoint.pack(archive, images.parent,
                                                                         None)}

    def restore(self, spec: InstanceSpec, path: Path, parent: Path | None = None) -> RunState:
        """Run the container again from a state archive, where it was (PID 1 included),
        under a new conmon. An archive with the root's changes (from another host)
        replaces this instance's upper dir first; ``parent`` is the archive of the
        pre-dump the state builds on."""
        host_id = spec.host_id
        require(self.state(host_id), host_id, "restore", RunStatus.STOPPED)
        criu = self._criu()
        instance_dir = self._instance_dir(host_id)
        paths = self._paths(host_id, instance_dir)
        work = self._criu_dir(host_id)
        try:
            checkpoint.reset(work)
            checkpoint.unpack(path, work)
            if parent is not None:
                checkpoint.unpack(parent, work / "pre", images=False)
                os.symlink(work / "pre" / checkpoint.IMAGES, work / checkpoint.PARENT)
            checkpoint.make_searchable(work)
            self.runtime.delete(host_id)
            if checkpoint.has_upper(path):
                self._replace_root_data(spec, path)
            self._prepare(spec)
            # lo up and NICs wired before CRIU restores sockets
            restore_hook.set_hook(instance_dir / "config.json", instance_dir)
        except OSError as err:
            shutil.rmtree(work, ignore_errors=True)
            raise DriverError(f"cannot prepare the restore of {host_id!r}: {err}") from err
        for stale in (paths.exit_file, paths.exit_dir / host_id, self._started(host_id),
                      instance_dir / "restore.log"):
            stale.unlink(missing_ok=True)
        # CRIU gives PID 1 a new netns holding only lo, down: the service wires its NICs
        # into it again, as at a start (same MAC and IP, host end on the bridge), from
        # runc's hook; without NICs the hook brings lo up, as runc does at a start
        plug = restore_hook.Plugger(instance_dir, spec.on_created or _loopback_up)
        try:
            with plug:
                pid = monitor.start_conmon(self.runtime, host_id, instance_dir, paths,
                                           restore=work / checkpoint.IMAGES,
                                           runtime_args=tuple(self.runtime.criu_args(criu)))
            if not plug.wired:   # runc ran no hook: wire them now
                plug.wire(pid)
            plug.unlock()
            self._started(host_id).touch()
        except RuntimeToolError as err:
            with contextlib.suppress(CumuloError):
                self.runtime.delete(host_id)
            self._reap_conmon(paths)
            if plug.error is not None:
                raise DriverError(f"cannot restore {host_id!r}: its NICs: {plug.error}"
                                  ) from err
            log = instance_dir / "restore.log"   # conmon's runtime works in the bundle
            raise DriverError(f"cannot restore {host_id!r}: "
                              f"{criu_error(err.stderr, log)}") from err
        except BaseException:
            with contextlib.suppress(CumuloError):
                self.runtime.delete(host_id)
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
            with contextlib.suppress(OSError, ValueError):
                restore_hook.set_hook(instance_dir / "config.json", None)
        return RunState(RunStatus.RUNNING, pid=pid)

    def export_root(self, host_id: str, path: Path) -> dict[str, Any]:
        """The stopped container's own root files (changes over the image) to ``path``."""
        require(self.state(host_id), host_id, "export the root of", RunStatus.STOPPED)
        try:
            return {"transferred": checkpoint.pack(path, None, self._root_data(host_id))}
        except OSError as err:
            raise DriverError(f"cannot export the root of {host_id!r}: {err}") from err

    def import_root(self, spec: InstanceSpec, path: Path) -> None:
        """Replace the stopped container's own root files with those in ``path``."""
        require(self.state(spec.host_id), spec.host_id, "import the root of",
                RunStatus.STOPPED)
        if not checkpoint.has_upper(path):
            raise DriverError(f"{path} holds no root files")
        try:
            self._replace_root_data(spec, path)
        except OSError as err:
            raise DriverError(f"cannot import the root of {spec.host_id!r}: {err}") from err

    def signature(self, host_id: str) -> str:
        """What both ends of a migration must share for the images to load."""
        self._instance_dir(host_id)
        checkpoint.require_criu(self.ctx.host)
        self.runtime.criu_args("criu")   # this runtime can drive CRIU
        # (the restore unlocks the network the way the dump locked it)
        return (f"container/{self.runtime.name}/criu-{self.ctx.host.criu}"
                f"/lock-{self.ctx.host.criu_network_lock}")
