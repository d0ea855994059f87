"""Every link's traffic counters in one read of ``/proc/self/net/dev``.

For scrapes of many instances: one file for all NICs instead of a netlink round trip
each (~2 ms apiece). It shows the reading process's own network namespace, where
``/sys/class/net`` would show the namespace sysfs was mounted in.
"""

from __future__ import annotations

from pathlib import Path

NET_DEV = Path("/proc/self/net/dev")


def read_all(path: Path = NET_DEV) -> dict[str, dict[str, int]]:
    """Counters by link name, as the kernel counts them on that link (rx = received)."""
    try:
        lines = path.read_text().splitlines()[2:]
    except OSError:
        return {}
    out: dict[str, dict[str, int]] = {}
    for line in lines:
        name, _, rest = line.partition(":")
        f = rest.split()
        if len(f) < 12:
            continue
        out[name.strip()] = {"rx_bytes": int(f[0]), "rx_packets": int(f[1]),
                             "rx_dropped": int(f[3]), "tx_bytes": int(f[8]),
                             "tx_packets": int(f[9]), "tx_dropped": int(f[11])}
    return out
