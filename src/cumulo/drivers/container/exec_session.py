"""A process started with ``<runtime> exec``: on pipes, or on a pty.

Without a tty the caller gets pipe ends. With a tty the caller gets the master of
a pty whose slave is the runtime's stdio; the runtime relays it to the pty inside
the container. The runtime stays in the foreground and exits with the process's
exit code (128+signal), which ``wait`` returns.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import struct
import subprocess
import termios
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from cumulo.errors import DriverError

ArgvBuilder = Callable[[Path, bool], list[str]]
PID_FILE_WAIT = 5.0  # seconds the runtime may take to write the pid file of a started process


def _set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class RuntimeExecSession:
    """One exec'd process; implements ``cumulo.drivers.base.ExecSession``."""

    stdin_fd: int | None
    stdout_fd: int
    stderr_fd: int | None

    def __init__(
        self, build_argv: ArgvBuilder, work_dir: Path, tty: bool, rows: int, cols: int
    ) -> None:
        """``build_argv(pid_file, tty)`` gives the runtime's exec command."""
        self._build = build_argv
        # the runtime's pid file, alone in ``work_dir`` (a file, not a dir: cheaper to clean)
        self._pidfile = work_dir / f"exec-{uuid.uuid4().hex}.pid"
        self._owned: dict[int, int] = {}   # fd -> inode, to never close a reused number
        self._proc: subprocess.Popen[bytes] | None = None
        self._code: int | None = None
        try:
            if tty:
                self._start_tty(rows, cols)
            else:
                self._start_pipes()
        except BaseException:
            self.kill()
            raise

    def _own(self, fd: int) -> int:
        self._owned[fd] = os.fstat(fd).st_ino
        return fd

    def _start_pipes(self) -> None:
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            # its own process group (no terminal signals from the daemon's), not its own
            # session: as a session leader ``runc exec`` takes ~3x as long (~50 vs ~16 ms)
            self._proc = subprocess.Popen(
                self._build(self._pidfile, False), stdin=in_r, stdout=out_w, stderr=err_w,
                process_group=0,
            )
        except OSError as err:
            for fd in (in_r, in_w, out_r, out_w, err_r, err_w):
                os.close(fd)
            raise DriverError(f"exec failed: {err}") from err
        finally:
            for fd in (in_r, out_w, err_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.stdin_fd, self.stdout_fd, self.stderr_fd = (
            self._own(in_w), self._own(out_r), self._own(err_r)
        )

    def _start_tty(self, rows: int, cols: int) -> None:
        # runc only hands a pty over --console-socket when detached, which would
        # lose the exit code; so it runs in the foreground on a pty of ours and
        # relays to the container's pty (it puts ours in raw mode).
        master, slave = os.openpty()
        self._own(master)
        try:
            _set_winsize(master, rows, cols)
            self._proc = subprocess.Popen(
                self._build(self._pidfile, True), stdin=slave, stdout=slave,
                stderr=subprocess.PIPE, start_new_session=True,
            )
        except OSError as err:
            raise DriverError(f"exec with a tty failed: {err}") from err
        finally:
            os.close(slave)
        self.stdin_fd, self.stdout_fd, self.stderr_fd = master, master, None

    def _stderr(self) -> str:
        if self._proc is None or self._proc.stderr is None:
            return ""
        if self._proc.poll() is None:
            return ""
        return self._proc.stderr.read().decode(errors="replace").strip()

    def wait(self, timeout: float | None = None) -> int | None:
        if self._code is not None:
            return self._code
        if self._proc is None:
            return None
        try:
            rc = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._code = 128 - rc if rc < 0 else rc
        if self._proc.stderr is not None:
            self._proc.stderr.close()
        return self._code

    def close_stdin(self) -> None:
        fd = self.stdin_fd
        if fd is None or fd not in self._owned:
            return
        if self.stderr_fd is None:  # tty: end of input is ^D
            with contextlib.suppress(OSError):
                os.write(fd, b"\x04")
            return
        with contextlib.suppress(OSError):
            os.close(fd)
        del self._owned[fd]
        self.stdin_fd = None

    def resize(self, rows: int, cols: int) -> None:
        if self.stderr_fd is None and self.stdout_fd in self._owned:
            try:
                _set_winsize(self.stdout_fd, rows, cols)
                if self._proc is not None and self._proc.poll() is None:
                    self._proc.send_signal(signal.SIGWINCH)  # runc relays the new size
            except OSError as err:
                raise DriverError(f"cannot resize the exec tty: {err}") from err

    def _exec_pid(self, timeout: float) -> int | None:
        """The process's host pid from the runtime's pid file. The runtime writes it only
        after the process has started, so its first output can come before the file:
        wait (bounded) while the runtime runs."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError, ValueError):
                return int(self._pidfile.read_text().strip())
            if (self._proc is not None and self._proc.poll() is not None
                    or time.monotonic() > deadline):
                return None
            time.sleep(0.01)

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            # the runtime cannot pass SIGKILL on: kill the process in the instance
            if (pid := self._exec_pid(PID_FILE_WAIT)) is not None:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc is not None:
            self.wait(0)
        for fd, ino in list(self._owned.items()):
            with contextlib.suppress(OSError):
                if os.fstat(fd).st_ino == ino:
                    os.close(fd)
            del self._owned[fd]
        self._pidfile.unlink(missing_ok=True)
