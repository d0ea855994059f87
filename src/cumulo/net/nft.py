"""Isolation between networks with nftables: one ``inet cumulo_<tag>`` table per daemon.

The table is rebuilt in one atomic transaction from the list of bridges each
time the set of networks changes, fed to ``nft -j -f -`` as structured JSON
(never a string-built shell pipeline). Only our own table is ever touched:
the global ruleset is never flushed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

from cumulo.errors import DriverError, UnsupportedError

FAMILY = "inet"
CHAIN = "forward"  # "fwd" is a reserved word in nft
TIMEOUT = 10.0


def table_name(tag: str) -> str:
    return f"cumulo_{tag}"


def _nft(payload: dict[str, Any] | None, *args: str) -> str:
    nft = shutil.which("nft", path="/usr/sbin:/usr/bin:/sbin:/bin")
    if nft is None:
        raise UnsupportedError("networks need nftables: install the nftables package")
    cmd = [nft, "-j", *args] if payload is None else [nft, "-j", "-f", "-"]
    try:
        r = subprocess.run(cmd, input=None if payload is None else json.dumps(payload),
                           capture_output=True, text=True, timeout=TIMEOUT)
    except (OSError, subprocess.SubprocessError) as err:
        raise DriverError(f"nft failed: {err}") from err
    if r.returncode != 0:
        lines = r.stderr.strip().splitlines()
        raise DriverError(f"nft failed: {lines[0] if lines else f'exit status {r.returncode}'}")
    return r.stdout


def _match(key: str, right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": {"meta": {"key": key}}, "right": right}}


def isolation_ruleset(tag: str, bridges: list[str]) -> dict[str, Any]:
    """The whole table: traffic routed from one of our bridges to another is dropped.

    Within one bridge frames are switched, not routed, so they never reach this chain.
    """
    table = {"family": FAMILY, "name": table_name(tag)}
    cmds: list[dict[str, Any]] = [
        {"add": {"table": table}},       # so that the delete below cannot fail
        {"delete": {"table": table}},
        {"add": {"table": table}},
        {"add": {"chain": {"family": FAMILY, "table": table["name"], "name": CHAIN,
                           "type": "filter", "hook": "forward", "prio": 0,
                           "policy": "accept"}}},
    ]
    for br in sorted(bridges):
        others = sorted(b for b in bridges if b != br)
        if not others:
            continue
        cmds.append({"add": {"rule": {
            "family": FAMILY, "table": table["name"], "chain": CHAIN,
            "comment": f"isolate {br}",
            "expr": [_match("iifname", br), _match("oifname", {"set": others}),
                     {"counter": None}, {"drop": None}],
        }}})
    return {"nftables": [{"metainfo": {"json_schema_version": 1}}, *cmds]}


def apply_isolation(tag: str, bridges: list[str]) -> None:
    """Make ``inet cumulo_<tag>`` isolate ``bridges``; no bridges removes the table."""
    if not bridges:
        delete_table(tag)
        return
    _nft(isolation_ruleset(tag, bridges))


def table_exists(tag: str) -> bool:
    out = json.loads(_nft(None, "list", "tables") or '{"nftables": []}')
    return any(item.get("table", {}).get("name") == table_name(tag)
               for item in out.get("nftables", []))


def delete_table(tag: str) -> None:
    if shutil.which("nft", path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
        return
    table = {"family": FAMILY, "name": table_name(tag)}
    _nft({"nftables": [{"add": {"table": table}}, {"delete": {"table": table}}]})


def list_tables(prefix: str = "cumulo_") -> list[str]:
    out = json.loads(_nft(None, "list", "tables") or '{"nftables": []}')
    names = [item["table"]["name"] for item in out.get("nftables", []) if "table" in item]
    return sorted(n for n in names if n.startswith(prefix))
