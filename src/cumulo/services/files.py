"""``cumulo file push|pull``: copy one file into or out of a running instance.

A driver that reaches the guest's files itself (`FileTransfer`: a VM's agent) does
it; otherwise the file goes through an exec of the instance's own ``/bin/sh`` and
``cat`` (containers), so the path is resolved inside the instance, symlinks and
mounts included, and the file belongs to the instance's root.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import time

from cumulo.domain.lifecycle import Action, guard
from cumulo.drivers.base import ExecRequest, ExecSession, FileTransfer, InstanceDriver
from cumulo.errors import DriverError, InvalidInputError
from cumulo.services.instances import InstanceService

MAX_SIZE = 256 * 1024 * 1024     # bytes held in the daemon's memory for one copy
TIMEOUT = 300.0
_MODE_RE = re.compile(r"^0?[0-7]{3,4}$")
PUSH = 'cat > "$1" && chmod "$2" "$1"'


def check_path(path: str) -> str:
    if not path.startswith("/") or "\0" in path:
        raise InvalidInputError(f"{path!r} is not an absolute path inside the instance")
    return path


def check_mode(mode: str) -> str:
    if not _MODE_RE.match(mode):
        raise InvalidInputError(f"invalid mode {mode!r}: give octal digits, e.g. 0644")
    return mode


def push(instances: InstanceService, project: str, name: str, path: str, data: bytes,
         mode: str = "0644") -> None:
    """Write ``data`` to ``path`` in the instance (created or replaced, with ``mode``)."""
    check_path(path)
    check_mode(mode)
    if len(data) > MAX_SIZE:
        raise InvalidInputError(f"file push copies at most {MAX_SIZE // 2**20} MiB")
    driver, host_id = _target(instances, project, name)
    try:
        if isinstance(driver, FileTransfer) and driver.write_file(host_id, path, data,
                                                                  int(mode, 8)):
            return
    except InvalidInputError as said:
        raise InvalidInputError(f"cannot write {path} in {name}: {said}") from None
    code, _, err = _collect(driver.exec(host_id, ExecRequest(
        ["/bin/sh", "-c", PUSH, "sh", path, mode])), data)
    if code != 0:
        raise InvalidInputError(f"cannot write {path} in {name}: {_last_line(err, code)}")


def pull(instances: InstanceService, project: str, name: str, path: str) -> bytes:
    """The bytes of ``path`` in the instance."""
    check_path(path)
    driver, host_id = _target(instances, project, name)
    if isinstance(driver, FileTransfer):
        try:
            got = driver.read_file(host_id, path, MAX_SIZE)
        except InvalidInputError as said:
            raise InvalidInputError(f"cannot read {path} in {name}: {said}") from None
        if got is not None:
            return got
    code, out, err = _collect(driver.exec(host_id, ExecRequest(["cat", path])), b"")
    if code != 0:
        raise InvalidInputError(f"cannot read {path} in {name}: {_last_line(err, code)}")
    return out


def _target(instances: InstanceService, project: str, name: str
            ) -> tuple[InstanceDriver, str]:
    inst = instances.get(project, name)
    guard(name, inst.state, Action.EXEC)
    return instances.driver_of(inst), inst.host_id


def _last_line(err: bytes, code: int) -> str:
    lines = [ln for ln in err.decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit status {code}"


def _collect(session: ExecSession, data: bytes) -> tuple[int, bytes, bytes]:
    """Feed all of ``data`` to stdin while gathering stdout and stderr (bounded)."""
    out, err = bytearray(), bytearray()
    deadline = time.monotonic() + TIMEOUT
    view = memoryview(data)
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(session.stdout_fd, selectors.EVENT_READ, out)
            if session.stderr_fd is not None:
                sel.register(session.stderr_fd, selectors.EVENT_READ, err)
            if session.stdin_fd is not None and view:
                os.set_blocking(session.stdin_fd, False)
                sel.register(session.stdin_fd, selectors.EVENT_WRITE, None)
            elif session.stdin_fd is not None:
                session.close_stdin()
            while sel.get_map():
                if time.monotonic() > deadline:
                    raise DriverError(f"the copy took longer than {TIMEOUT:.0f}s")
                for key, _ in sel.select(0.2):
                    if key.data is None:      # stdin ready: write what fits
                        try:
                            view = view[os.write(key.fd, view[:65536]):]
                        except BlockingIOError:
                            continue
                        except OSError:      # the command closed its stdin early
                            view = view[:0]
                        if not view:
                            sel.unregister(key.fd)
                            session.close_stdin()
                        continue
                    try:
                        chunk = os.read(key.fd, 65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        chunk = b""
                    if chunk:
                        key.data.extend(chunk)
                        if len(out) > MAX_SIZE:
                            raise InvalidInputError(
                                f"file pull copies at most {MAX_SIZE // 2**20} MiB")
                    else:
                        sel.unregister(key.fd)
        code = session.wait(max(0.1, deadline - time.monotonic()))
        if code is None:
            raise DriverError(f"the copy took longer than {TIMEOUT:.0f}s")
        return code, bytes(out), bytes(err)
    finally:
        with contextlib.suppress(DriverError):
            session.kill()
