"""An ExecSession over a local child process, with pipes or a pseudo-terminal."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import signal
import struct
import subprocess
import termios

from cumulo.errors import DriverError


def set_winsize(fd: int, rows: int, cols: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def exit_status(returncode: int) -> int:
    """Shell convention: 128+N for a process killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


class ProcessSession:
    """Runs ``argv`` as a child; owns its fds until ``kill``."""

    def __init__(self, argv: list[str], *, tty: bool = False, rows: int = 24, cols: int = 80,
                 env: dict[str, str] | None = None, cwd: str | None = None) -> None:
        self._fds: set[int] = set()
        child_fds: list[int] = []
        try:
            if tty:
                master, slave = pty.openpty()
                self._fds.add(master)
                child_fds.append(slave)
                set_winsize(master, rows, cols)
                self.stdin_fd: int | None = master
                self.stdout_fd, self.stderr_fd = master, None
                stdio: tuple[int, int, int] = (slave, slave, slave)
            else:
                (in_r, in_w), (out_r, out_w), (err_r, err_w) = os.pipe(), os.pipe(), os.pipe()
                self._fds.update((in_w, out_r, err_r))
                child_fds += [in_r, out_w, err_w]
                self.stdin_fd, self.stdout_fd = in_w, out_r
                self.stderr_fd = err_r
                stdio = (in_r, out_w, err_w)
            self._tty = tty
            self.proc = subprocess.Popen(
                argv, stdin=stdio[0], stdout=stdio[1], stderr=stdio[2], env=env, cwd=cwd,
                start_new_session=True, close_fds=True)
        except OSError as err:
            self._close_all()
            raise DriverError(f"cannot run {argv[0]}: {err.strerror}") from err
        finally:
            for fd in child_fds:
                os.close(fd)

    def _close(self, fd: int | None) -> None:
        if fd is not None and fd in self._fds:
            self._fds.discard(fd)
            with contextlib.suppress(OSError):
                os.close(fd)

    def _close_all(self) -> None:
        for fd in list(self._fds):
            self._close(fd)

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return exit_status(self.proc.wait(timeout))
        except subprocess.TimeoutExpired:
            return None

    def close_stdin(self) -> None:
        if self._tty:
            if self.stdin_fd in self._fds:
                with contextlib.suppress(OSError):
                    os.write(self.stdin_fd, b"\x04")
        else:
            self._close(self.stdin_fd)

    def resize(self, rows: int, cols: int) -> None:
        if self._tty:
            set_winsize(self.stdout_fd, rows, cols)

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        self._close_all()
