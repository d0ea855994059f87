"""The default seccomp profile for containers.

It follows LXC's denylist approach rather than Docker's allowlist: every system
call is allowed except a short list that could reach or reconfigure the host
kernel (module loading, kexec, keyrings, bpf, clock setting, mounts, ptrace...).
A denied call fails with EPERM, so programs see an ordinary permission error.
"""

from __future__ import annotations

from typing import Any

DENIED_SYSCALLS: tuple[str, ...] = (
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "open_by_handle_at", "name_to_handle_at", "bpf", "perf_event_open",
    "keyctl", "add_key", "request_key", "reboot", "swapon", "swapoff", "acct",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "iopl", "ioperm",
    "lookup_dcookie", "userfaultfd", "quotactl", "mount", "umount2", "pivot_root",
    "syslog", "vm86", "vm86old", "uselib", "kcmp", "process_vm_readv",
    "process_vm_writev", "ptrace",
)

ARCHITECTURES: tuple[str, ...] = ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32")

EPERM = 1


def default_profile() -> dict[str, Any]:
    """The OCI ``linux.seccomp`` section: allow by default, EPERM for the denylist."""
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": list(ARCHITECTURES),
        "syscalls": [
            {
                "names": list(DENIED_SYSCALLS),
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": EPERM,
            }
        ],
    }
