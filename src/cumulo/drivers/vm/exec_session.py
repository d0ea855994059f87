"""What a VM's exec sessions share (qga.QgaSession, qga_tty.TtySession): the guest's sh
script for a request, stdin read to its end, and the pipes the caller reads and writes."""

from __future__ import annotations

import contextlib
import os
import shlex

from cumulo.drivers.base import ExecRequest
from cumulo.errors import DriverError, InvalidInputError

KILLED = 137
MAX_STDIN = 1024 * 1024         # stdin travels in one message


def read_stdin(fd: int) -> bytes:
    """All of an exec's stdin (until the client closes it), at most MAX_STDIN bytes: a VM's
    agent takes it in one message."""
    stdin = bytearray()
    while chunk := os.read(fd, 65536):
        stdin += chunk
        if len(stdin) > MAX_STDIN:
            raise DriverError(f"stdin for exec into a VM is limited to {MAX_STDIN} bytes")
    return bytes(stdin)


def check_env(env: dict[str, str]) -> None:
    """Names a guest's sh can export, or InvalidInputError."""
    for key in env:
        if not key or not key.replace("_", "a").isalnum() or key[0].isdigit():
            raise InvalidInputError(f"invalid environment variable name {key!r}")


def guest_script(request: ExecRequest) -> str:
    """The sh script the guest runs for ``request``: cwd, environment, then exec argv."""
    check_env(request.env)
    lines = [f"cd {shlex.quote(request.cwd or '/')} || exit 126"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in request.env.items()]
    if request.tty:  # no pty in the guest: one stream, in the order it was written
        lines.append("exec 2>&1")
    lines.append("exec " + shlex.join(request.command))
    return "\n".join(lines) + "\n"


class OwnedFds:
    """The fds an exec session owns (``_fds``): each is closed once."""

    _fds: set[int]
    stdin_fd: int | None
    stdout_fd: int
    stderr_fd: int | None

    def _open_pipes(self, merge: bool) -> int:
        """The session's pipes, owned: the caller's ends ``stdin_fd`` (also ``_in_w``),
        ``stdout_fd``, ``stderr_fd`` (None with ``merge``) and the writing ends ``_out_w``,
        ``_err_w`` (the same with ``merge``); returns the read end of stdin."""
        in_r, self._in_w = os.pipe()
        out_r, self._out_w = os.pipe()
        self._fds.update((in_r, self._in_w, out_r, self._out_w))
        self.stdin_fd, self.stdout_fd, self.stderr_fd = self._in_w, out_r, None
        self._err_w = self._out_w
        if not merge:
            err_r, self._err_w = os.pipe()
            self._fds.update((err_r, self._err_w))
            self.stderr_fd = err_r
        return in_r

    def _close(self, fd: int) -> None:
        if fd in self._fds:
            self._fds.discard(fd)
            with contextlib.suppress(OSError):
                os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
