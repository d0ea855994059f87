"""What the host holds for one daemon, by kind: the kernel objects and processes a
daemon makes, found from outside it (for the soak and the fault-point tests).

A daemon here is its state dir, its cgroup parent and the network namespace it runs in
(``/run/netns/NAME``). Each kind is a set of names, so a caller can count or compare.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import psutil

KINDS = ("cgroups", "mounts", "instance dirs", "container records", "conmon", "qemu",
         "swtpm", "dnsmasq", "bridges", "veth", "legs", "tap", "netns", "network netns",
         "qdiscs", "nft tables", "nft rules", "nft sets", "nft elements", "loop")


def _run(*args: str) -> str:
    return subprocess.run(list(args), check=True, capture_output=True, text=True,
                          timeout=30).stdout


def procs(name: str, state: Path, parent: str) -> list[psutil.Process]:
    """Processes called ``name`` whose command line names the state dir or cgroup parent."""
    out = []
    for p in psutil.process_iter(["name", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if p.info["name"] == name and (str(state) in cmd or parent in cmd):
            out.append(p)
    return out


def _netns(state: Path, parent: str, ns: str) -> set[str]:
    """Network namespaces other than the daemon's: held by a process in one of its cgroups
    (an instance's own) or bound to a file under its state dir."""
    own = os.stat(f"/run/netns/{ns}").st_ino
    found: set[str] = set()
    for procs_file in Path("/sys/fs/cgroup").glob(f"*/{parent}/*/cgroup.procs"):
        try:
            pids = procs_file.read_text().split()
        except OSError:
            continue
        for pid in pids:
            try:
                ino = os.stat(f"/proc/{pid}/ns/net").st_ino
            except OSError:
                continue
            if ino != own:
                found.add(f"net:[{ino}]")
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[3].startswith("net:[") and str(state) in fields[4]:
                found.add(fields[3])
    return found


def _nft(ns: str) -> dict[str, set[str]]:
    out = _run("nsenter", f"--net=/run/netns/{ns}", "nft", "-j", "list", "ruleset")
    kinds: dict[str, set[str]] = {"nft tables": set(), "nft rules": set(), "nft sets": set(),
                                  "nft elements": set()}
    for item in json.loads(out or '{"nftables": []}')["nftables"]:
        for kind, obj in item.items():
            table = obj.get("table", obj.get("name", "")) if kind != "table" else obj["name"]
            if not str(table).startswith("cumulo_"):
                continue
            if kind == "table":
                kinds["nft tables"].add(f"{obj['family']} {table}")
            elif kind == "rule":
                kinds["nft rules"].add(f"{table}/{obj['chain']}/{obj['handle']}")
            elif kind in ("set", "map"):
                kinds["nft sets"].add(f"{table}/{obj['name']}")
                kinds["nft elements"].update(f"{table}/{obj['name']}/{json.dumps(e)}"
                                             for e in obj.get("elem", []))
    return kinds


def host_objects(state: Path, parent: str, ns: str) -> dict[str, set[str]]:
    """Every kind in ``KINDS`` -> the names found of it."""
    found: dict[str, set[str]] = {}
    found["cgroups"] = {p.name for p in Path("/sys/fs/cgroup").glob(f"*/{parent}/*")
                        if p.is_dir()}
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f]
    found["mounts"] = {m for m in mounts if str(state / "instances") in m}
    found["instance dirs"] = {p.name for p in (state / "instances").glob("*")}
    found["container records"] = {p.stem for p in (state / "container").glob("*.json")}
    for name, proc in (("conmon", "conmon"), ("qemu", "qemu-system-x86_64"),
                       ("swtpm", "swtpm"), ("dnsmasq", "dnsmasq")):
        found[name] = {str(p.pid) for p in procs(proc, state, parent)}
    links = _run("ip", "-n", ns, "-o", "link")
    found["bridges"] = set(re.findall(r"^\d+: (cu-b[0-9a-f]+)[:@]", links, re.M))
    for kind, type_ in (("veth", "veth"), ("tap", "tun")):
        found[kind] = set(re.findall(r"^\d+: (cu-[^:@]+)[:@]",
                                     _run("ip", "-n", ns, "-o", "link", "show", "type", type_),
                                     re.M))
    # a network with a namespace of its own (its subnet shared with another project's):
    # the namespace, and its two legs (gateway, uplink) that are veths too
    found["legs"] = {v for v in found["veth"] if re.match(r"cu-[gu]", v)}
    found["veth"] -= found["legs"]
    tag = hashlib.sha256(str(state.resolve()).encode()).hexdigest()[:8]
    found["network netns"] = {n for n in _run("ip", "netns", "list").split()
                              if n.startswith(f"cumulo-{tag}-")}
    found["netns"] = _netns(state, parent, ns)
    # qdiscs a link gets by default (noqueue on veth and bridges, pfifo_fast on a tap:
    # handle 0:) are not ours
    found["qdiscs"] = {line for line in _run("tc", "-n", ns, "qdisc", "show").splitlines()
                       if re.match(r"qdisc \S+ (?!0: )", line)
                       and not line.startswith("qdisc noqueue")}
    found.update(_nft(ns))
    found["loop"] = {line.split(":")[0] for line in _run("losetup", "-a").splitlines()
                     if str(state) in line}
    return found
