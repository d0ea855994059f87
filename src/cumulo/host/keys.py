"""The kernel's key quotas, and the one-line error when a container hits them.

runc gives every container a session keyring owned by the container's root as the
host sees it: uid 0 for a privileged container, the id-map base for an unprivileged
one, which all unprivileged containers share. The kernel caps the keys and bytes of
each uid (``kernel.keys.maxkeys``/``maxbytes``, 200 keys by default; root has
``root_maxkeys``/``root_maxbytes``), so about 200 unprivileged containers is where
runc stops with "unable to create session key: disk quota exceeded".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

KEY_USERS = Path("/proc/key-users")
SYSCTL_DIR = Path("/proc/sys/kernel/keys")
# what runc (and crun) say when the keyring cannot be made: EDQUOT
QUOTA_MESSAGES = ("disk quota exceeded",)


@dataclass(frozen=True)
class KeyUsage:
    """One uid's use of its key quota (a line of /proc/key-users)."""

    keys: int
    max_keys: int
    bytes: int
    max_bytes: int


def usage(uid: int, key_users: Path = KEY_USERS) -> KeyUsage | None:
    """``uid``'s keys and bytes against its quota; None if it holds no key."""
    try:
        lines = key_users.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        owner, _, rest = line.partition(":")
        if owner.strip() != str(uid):
            continue
        try:   # "usage nkeys/nikeys qnkeys/maxkeys qnbytes/maxbytes"
            _, _, keys, nbytes = rest.split()
            k, mk = (int(x) for x in keys.split("/"))
            b, mb = (int(x) for x in nbytes.split("/"))
        except ValueError:
            return None
        return KeyUsage(k, mk, b, mb)
    return None


def sysctls(uid: int) -> tuple[str, str]:
    """The sysctls that set ``uid``'s key and byte quota."""
    prefix = "kernel.keys.root_" if uid == 0 else "kernel.keys."
    return f"{prefix}maxkeys", f"{prefix}maxbytes"


def is_quota_error(message: str) -> bool:
    """Whether a runtime's message says the container's session keyring hit the quota."""
    low = message.lower()
    return "session key" in low and any(m in low for m in QUOTA_MESSAGES)


def quota_message(uid: int, key_users: Path = KEY_USERS) -> str:
    """One line: which quota is full, how full, and how to raise it."""
    keys_ctl, bytes_ctl = sysctls(uid)
    now = usage(uid, key_users)
    held, more = "", f"{keys_ctl}=N {bytes_ctl}=M"
    if now is not None:
        held = f" ({now.keys}/{now.max_keys} keys, {now.bytes}/{now.max_bytes} bytes)"
        more = f"{keys_ctl}={now.max_keys * 10} {bytes_ctl}={now.max_bytes * 10}"
    who = "root (privileged containers)" if uid == 0 else \
        f"uid {uid} (root of every unprivileged container)"
    return (f"the kernel's key quota of {who} is full{held}: each running container holds"
            f" a session keyring; raise it with 'sysctl -w {more}' or stop some containers")
