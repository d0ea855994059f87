"""Running nft: one ``inet cumulo_<tag>`` table per daemon (see net/firewall.py).

The table is rebuilt in one atomic transaction each time networks, security
groups or forwards change, fed to ``nft -j -f -`` as structured JSON (never a
string-built shell pipeline). Only our own table is ever touched: the global
ruleset is never flushed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from cumulo.errors import DriverError, UnsupportedError
from cumulo.net.firewall import (
    FAMILY,
    Firewall,
    FwInside,
    bridge_rules,
    inside_ruleset,
    ruleset,
)

TIMEOUT = 10.0


def table_name(tag: str) -> str:
    return f"cumulo_{tag}"


def _nft(payload: dict[str, Any] | None, *args: str, netns: Path | None = None) -> str:
    nft = shutil.which("nft", path="/usr/sbin:/usr/bin:/sbin:/bin")
    if nft is None:
        raise UnsupportedError("networks need nftables: install the nftables package")
    cmd = [nft, "-j", *args] if payload is None else [nft, "-j", *args, "-f", "-"]
    if netns is not None:
        cmd = ["nsenter", f"--net={netns}", *cmd]
    try:
        r = subprocess.run(cmd, input=None if payload is None else json.dumps(payload),
                           capture_output=True, text=True, timeout=TIMEOUT)
    except (OSError, subprocess.SubprocessError) as err:
        raise DriverError(f"nft failed: {err}") from err
    if r.returncode != 0:
        lines = r.stderr.strip().splitlines()
        raise DriverError(f"nft failed: {lines[0] if lines else f'exit status {r.returncode}'}")
    return r.stdout


def apply(tag: str, fw: Firewall) -> None:
    """Make ``inet cumulo_<tag>`` enforce ``fw`` in one transaction; nothing left removes it."""
    if fw.empty():
        delete_table(tag)
        return
    _nft(ruleset(tag, fw))


def apply_inside(netns: Path, gateway_link: str, uplink: str, inside: FwInside) -> None:
    """The table of a network's own namespace (net/l3ns.py): NAT out, forwards in."""
    _nft(inside_ruleset(gateway_link, uplink, inside), netns=netns)


def check(tag: str, fw: Firewall) -> None:
    """Let nft parse and check ``fw``'s ruleset without applying it (``nft -c``)."""
    _nft(ruleset(tag, fw), "-c")


def table_exists(tag: str) -> bool:
    out = json.loads(_nft(None, "list", "tables") or '{"nftables": []}')
    return any(item.get("table", {}).get("name") == table_name(tag)
               for item in out.get("nftables", []))


def delete_table(tag: str) -> None:
    if shutil.which("nft", path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
        return
    table = {"family": FAMILY, "name": table_name(tag)}
    _nft({"nftables": [{"add": {"table": table}}, {"delete": {"table": table}},
                       *bridge_rules(table_name(tag))]})


def list_tables(prefix: str = "cumulo_") -> list[str]:
    out = json.loads(_nft(None, "list", "tables") or '{"nftables": []}')
    names = [item["table"]["name"] for item in out.get("nftables", []) if "table" in item]
    return sorted(n for n in names if n.startswith(prefix))


RESTORE_LOCK = {"family": "inet", "name": "cumulo_restore_lock"}


def lock_input(netns: Path) -> None:
    """Drop every packet that comes into ``netns`` but over ``lo``: a restored container's
    NICs are wired before CRIU has put its TCP sockets back, and a segment arriving in
    between would be answered with a reset (CRIU locks only the netns it dumps)."""
    table = RESTORE_LOCK
    chain = {"family": table["family"], "table": table["name"], "name": "input",
             "type": "filter", "hook": "input", "prio": -300, "policy": "drop"}
    lo = {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "lo"}}
    _nft({"nftables": [{"add": {"table": table}}, {"add": {"chain": chain}},
                       {"add": {"rule": {"family": table["family"], "table": table["name"],
                                         "chain": "input", "expr": [lo, {"accept": None}]}}}]},
         netns=netns)


def unlock_input(netns: Path) -> None:
    """Remove ``lock_input``'s table (the peers' retransmissions then reach the sockets)."""
    _nft({"nftables": [{"delete": {"table": RESTORE_LOCK}}]}, netns=netns)
