"""The guest agent contract: what the host's one client (drivers/vm/qga.py) needs from a
guest's agent, asked the same way of Debian's qemu-guest-agent (a disk VM) and of our
busybox sh agent (an initramfs VM, or that script run on the host over a pty)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cumulo.drivers.vm import qga
from cumulo.errors import InvalidInputError

SUBSET = {"guest-sync", "guest-ping", "guest-info", "guest-exec", "guest-exec-status",
          "guest-file-open", "guest-file-read", "guest-file-write", "guest-file-close"}
WORD = "a 'b' \"c\" \\d $(e) é\tf\n"     # quotes, a backslash, non-ASCII, control bytes


def check_agent(run_dir: Path, name: str, path: str = "/tmp/qga-contract") -> None:
    with qga.connect(run_dir, name, 60) as agent:
        assert agent.call("guest-ping") == {}
        info = agent.call("guest-info")
        enabled = {c["name"] for c in info["supported_commands"] if c.get("enabled")}
        assert info["version"] and enabled >= SUBSET, info
        # exec: argv verbatim, stdin, stdout, stderr and the exit code, bytes kept
        code, out, err = agent.run(
            ["/bin/sh", "-c", 'cat; printf "%s" "$1" >&2; exit 3', "-", WORD],
            b"in\x00\xff\n")
        assert (code, out, err) == (3, b"in\x00\xff\n", WORD.encode())
        code, out, _ = agent.run(["sh", "-c", "echo $A", "-"], b"", env=["A=x y"])
        assert (code, out) == (0, b"x y\n")
        # a command does not ignore SIGINT or SIGQUIT (^C on exec -t's terminal works)
        code, out, _ = agent.run(["grep", "SigIgn", "/proc/self/status"], b"")
        assert code == 0 and int(out.split()[1], 16) & 0b110 == 0, out
        # files: binary, over several guest-file-read/write chunks, then the mode
        data = bytes(range(256)) * 400
        agent.write_file(path, data, 0o640)
        assert agent.read_file(path, 1 << 20) == data
        assert agent.run(["stat", "-c", "%a %s", path], b"")[:2] == (0, b"640 102400\n")
        agent.write_file(path, b"", 0o600)
        assert agent.read_file(path, 1 << 20) == b""
        assert agent.run(["rm", path], b"")[0] == 0
        # what the agent refuses: a clear message each
        with pytest.raises(InvalidInputError, match="/nonexistent/x"):
            agent.call("guest-file-open", path="/nonexistent/x", mode="r")
        with pytest.raises(InvalidInputError, match="not been found|not found"):
            agent.call("guest-no-such-command")
        with pytest.raises(InvalidInputError):
            agent.call("guest-exec-status", pid=999999)
        # still in step after the errors
        assert agent.call("guest-ping") == {}
