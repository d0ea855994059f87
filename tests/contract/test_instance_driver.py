"""The instance-driver contract: what every driver kind must do, as a user would see it.

Commands are POSIX/busybox ones (``sh``, ``cat``, ``echo``, ``sleep``), since the
fake driver runs them on the host.
"""

from __future__ import annotations

import errno
import os
import select
import time
import uuid
from pathlib import Path

import pytest

from cumulo.drivers.base import ExecRequest, InstanceDriver, InstanceSpec, RunStatus
from cumulo.errors import DriverError, InvalidStateError

# PID 1 ignores SIGTERM, like a shell without a handler in a real container
STUBBORN = ["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 1; done"]


def make_spec(tmp_path: Path, rootfs: Path, command: list[str] | None = None) -> InstanceSpec:
    host_id = f"c-{uuid.uuid4().hex[:8]}"
    return InstanceSpec(
        host_id=host_id, hostname="web1", instance_dir=tmp_path / "instances" / host_id,
        rootfs=rootfs, command=command or STUBBORN,
    )


def read_until_eof(fd: int, timeout: float = 10.0) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError as err:  # a pty master reports EIO once the slave side is gone
            if err.errno == errno.EIO:
                break
            raise
        if not chunk:
            break
        out += chunk
    return out


def console_until(driver: InstanceDriver, host_id: str, marker: bytes, timeout: float = 10.0
                  ) -> tuple[bytes, int]:
    data, offset = b"", 0
    deadline = time.monotonic() + timeout
    while marker not in data and time.monotonic() < deadline:
        chunk, offset = driver.read_console(host_id, offset)
        data += chunk
        time.sleep(0.05)
    return data, offset


def started(driver: InstanceDriver, spec: InstanceSpec) -> InstanceSpec:
    driver.create(spec)
    state = driver.start(spec)
    assert state.status == RunStatus.RUNNING
    return spec


def test_unknown_instance_is_missing(driver: InstanceDriver) -> None:
    assert driver.state("no-such-instance").status == RunStatus.MISSING


def test_start_runs_pid1(driver: InstanceDriver, tmp_path: Path, busybox_rootfs: Path) -> None:
    spec = make_spec(tmp_path, busybox_rootfs)
    driver.create(spec)
    assert driver.state(spec.host_id).status == RunStatus.STOPPED
    assert spec.host_id in driver.list_host_ids()
    state = driver.start(spec)
    assert state.status == RunStatus.RUNNING and state.pid and state.pid > 0
    again = driver.state(spec.host_id)
    assert again.status == RunStatus.RUNNING and again.pid == state.pid
    assert os.path.exists(f"/proc/{state.pid}")


def test_exec_output_and_exit_code(driver: InstanceDriver, tmp_path: Path,
                                   busybox_rootfs: Path) -> None:
    spec = started(driver, make_spec(tmp_path, busybox_rootfs))
    session = driver.exec(spec.host_id, ExecRequest(command=["echo", "hello", "world"]))
    try:
        assert read_until_eof(session.stdout_fd) == b"hello world\n"
        assert session.wait(10) == 0
    finally:
        session.kill()
    session = driver.exec(spec.host_id, ExecRequest(command=["sh", "-c", "echo oops >&2; exit 7"]))
    try:
        assert session.stderr_fd is not None
        assert read_until_eof(session.stderr_fd) == b"oops\n"
        assert session.wait(10) == 7
    finally:
        session.kill()
        session.kill()  # safe twice


def test_exec_env_and_cwd(driver: InstanceDriver, tmp_path: Path, busybox_rootfs: Path) -> None:
    spec = started(driver, make_spec(tmp_path, busybox_rootfs))
    request = ExecRequest(command=["sh", "-c", 'echo "$GREETING"'], env={"GREETING": "hi there"})
    session = driver.exec(spec.host_id, request)
    try:
        assert read_until_eof(session.stdout_fd) == b"hi there\n"
        assert session.wait(10) == 0
    finally:
        session.kill()


def test_exec_stdin_reaches_process(driver: InstanceDriver, tmp_path: Path,
                                    busybox_rootfs: Path) -> None:
    spec = started(driver, make_spec(tmp_path, busybox_rootfs))
    session = driver.exec(spec.host_id, ExecRequest(command=["cat"]))
    try:
        assert session.stdin_fd is not None
        os.write(session.stdin_fd, b"through stdin\n")
        session.close_stdin()
        assert read_until_eof(session.stdout_fd) == b"through stdin\n"
        assert session.wait(10) == 0
    finally:
        session.kill()


def test_exec_with_tty(driver: InstanceDriver, tmp_path: Path, busybox_rootfs: Path) -> None:
    spec = started(driver, make_spec(tmp_path, busybox_rootfs))
    # the size reaches the inner tty just after start, hence the short sleep
    command = ["sh", "-c", "sleep 0.5; stty size; read line; stty size; exit 2"]
    session = driver.exec(spec.host_id, ExecRequest(command=command, tty=True, rows=30, cols=100))
    try:
        assert session.stderr_fd is None and session.stdin_fd is not None
        first = b""
        deadline = time.monotonic() + 10
        while b"30 100" not in first and time.monotonic() < deadline:
            if select.select([session.stdout_fd], [], [], 0.2)[0]:
                first += os.read(session.stdout_fd, 1024)
        assert b"30 100" in first
        session.resize(40, 120)
        time.sleep(0.2)
        os.write(session.stdin_fd, b"go\n")
        assert b"40 120" in read_until_eof(session.stdout_fd)
        assert session.wait(10) == 2
    finally:
        session.kill()


def test_console_output_of_pid1(driver: InstanceDriver, tmp_path: Path,
                                busybox_rootfs: Path) -> None:
    command = ["sh", "-c", "echo first line; echo second line; while :; do sleep 1; done"]
    spec = started(driver, make_spec(tmp_path, busybox_rootfs, command))
    data, offset = console_until(driver, spec.host_id, b"second line\n")
    assert data == b"first line\nsecond line\n"
    assert offset > 0
    assert driver.read_console(spec.host_id, offset) == (b"", offset)


def test_pause_and_resume(driver: InstanceDriver, tmp_path: Path, busybox_rootfs: Path) -> None:
    spec = started(driver, make_spec(tmp_path, busybox_rootfs))
    driver.pause(spec.host_id)
    assert driver.state(spec.host_id).status == RunStatus.PAUSED
    with pytest.raises(InvalidStateError):
        driver.pause(spec.host_id)
    driver.resume(spec.host_id)
    assert driver.state(spec.host_id).status == RunStatus.RUNNING
    session = driver.exec(spec.host_id, ExecRequest(command=["true"]))
    try:
        assert session.wait(10) == 0
    finally:
        session.kill()


def test_stop_escalates_to_kill(driver: InstanceDriver, tmp_path: Path,
                                busybox_rootfs: Path) -> None:
    spec = started(driver, make_spec(tmp_path, busybox_rootfs))
    console_until(driver, spec.host_id, b"ready")  # the TERM trap is in place
    began = time.monotonic()
    state = driver.stop(spec.host_id, timeout=1.0, force=False)
    took = time.monotonic() - began
    assert 0.9 <= took < 6.0
    assert state.status == RunStatus.STOPPED
    assert state.exit_code == 128 + 9
    after = driver.state(spec.host_id)
    assert after.status == RunStatus.STOPPED and after.exit_code == 137


def test_stop_graceful_keeps_exit_code(driver: InstanceDriver, tmp_path: Path,
                                       busybox_rootfs: Path) -> None:
    command = ["sh", "-c", "trap 'exit 3' TERM; echo ready; while :; do sleep 0.1; done"]
    spec = started(driver, make_spec(tmp_path, busybox_rootfs, command))
    console_until(driver, spec.host_id, b"ready")
    began = time.monotonic()
    state = driver.stop(spec.host_id, timeout=10.0, force=False)
    assert time.monotonic() - began < 5.0
    assert state.status == RunStatus.STOPPED and state.exit_code == 3


def test_stop_and_delete_a_paused_instance(driver: InstanceDriver, tmp_path: Path,
                                           busybox_rootfs: Path) -> None:
    spec = started(driver, make_spec(tmp_path, busybox_rootfs))
    driver.pause(spec.host_id)
    state = driver.stop(spec.host_id, timeout=0.5, force=False)
    assert state.status == RunStatus.STOPPED
    other = started(driver, make_spec(tmp_path, busybox_rootfs))
    driver.pause(other.host_id)
    driver.delete(other.host_id, other.instance_dir)
    assert driver.state(other.host_id).status == RunStatus.MISSING


def test_force_stop_is_immediate(driver: InstanceDriver, tmp_path: Path,
                                 busybox_rootfs: Path) -> None:
    spec = started(driver, make_spec(tmp_path, busybox_rootfs))
    began = time.monotonic()
    state = driver.stop(spec.host_id, timeout=30.0, force=True)
    assert time.monotonic() - began < 5.0
    assert state.status == RunStatus.STOPPED and state.exit_code == 137


def test_pid1_exit_is_seen(driver: InstanceDriver, tmp_path: Path, busybox_rootfs: Path) -> None:
    spec = started(driver, make_spec(tmp_path, busybox_rootfs, ["sh", "-c", "exit 5"]))
    deadline = time.monotonic() + 10
    while driver.state(spec.host_id).status != RunStatus.STOPPED and time.monotonic() < deadline:
        time.sleep(0.05)
    state = driver.state(spec.host_id)
    assert state.status == RunStatus.STOPPED and state.exit_code == 5


def test_restart_after_stop(driver: InstanceDriver, tmp_path: Path, busybox_rootfs: Path) -> None:
    spec = started(driver, make_spec(tmp_path, busybox_rootfs))
    first = driver.state(spec.host_id).pid
    driver.stop(spec.host_id, timeout=0.5, force=False)
    state = driver.start(spec)
    assert state.status == RunStatus.RUNNING and state.pid != first
    session = driver.exec(spec.host_id, ExecRequest(command=["echo", "again"]))
    try:
        assert read_until_eof(session.stdout_fd) == b"again\n"
        assert session.wait(10) == 0
    finally:
        session.kill()


def test_start_of_a_missing_program_fails_cleanly(driver: InstanceDriver, tmp_path: Path,
                                                  busybox_rootfs: Path) -> None:
    spec = make_spec(tmp_path, busybox_rootfs, ["/no/such/program"])
    driver.create(spec)
    with pytest.raises(DriverError):
        driver.start(spec)
    assert driver.state(spec.host_id).status == RunStatus.STOPPED
    driver.delete(spec.host_id, spec.instance_dir)
    assert driver.state(spec.host_id).status == RunStatus.MISSING


def test_start_while_running_is_refused(driver: InstanceDriver, tmp_path: Path,
                                        busybox_rootfs: Path) -> None:
    spec = started(driver, make_spec(tmp_path, busybox_rootfs))
    with pytest.raises(InvalidStateError):
        driver.start(spec)


def test_exec_on_stopped_instance_fails(driver: InstanceDriver, tmp_path: Path,
                                        busybox_rootfs: Path) -> None:
    spec = make_spec(tmp_path, busybox_rootfs)
    driver.create(spec)
    with pytest.raises((InvalidStateError, DriverError)):
        driver.exec(spec.host_id, ExecRequest(command=["true"]))


def test_delete_is_idempotent(driver: InstanceDriver, tmp_path: Path,
                              busybox_rootfs: Path) -> None:
    spec = started(driver, make_spec(tmp_path, busybox_rootfs))
    driver.delete(spec.host_id, spec.instance_dir)  # running: killed first
    assert spec.host_id not in driver.list_host_ids()
    assert driver.state(spec.host_id).status == RunStatus.MISSING
    assert not spec.instance_dir.exists()
    driver.delete(spec.host_id, spec.instance_dir)
    assert driver.state(spec.host_id).status == RunStatus.MISSING


def test_usage_reports_a_running_instance(driver: InstanceDriver, tmp_path: Path,
                                          busybox_rootfs: Path) -> None:
    spec = started(driver, make_spec(tmp_path, busybox_rootfs))
    usage = driver.usage(spec.host_id)
    assert usage.pids is None or usage.pids >= 1
    assert usage.memory_bytes is None or usage.memory_bytes > 0
