"""Container-to-container TCP throughput and round trips over our bridge against the same
topology by hand, and what 100 security-group rules cost.

Everything runs inside a network namespace made for the benchmark
(``cu-bench-<hex>``): the daemon (its bridge, veth pairs and nftables table)
and the hand-wired pair (two ``ip netns`` namespaces, veth pairs, a bridge). The
same host ``iperf3`` runs in the containers' network namespaces (nsenter) and
in the hand-made ones, interleaved, so the ratio is what our wiring costs. qperf's
tcp_lat and udp_lat give the request/response round trip (transactions per second =
1 / latency). Then the server joins a security group of 100 rules (the last one
allows the benchmark's ports) and both are measured again. With ``--shared-subnet``
another project's network has the benchmark network's subnet first, so the benchmark's
has its own namespace and its security group is matched by port in the bridge table.

    .venv/bin/python -m bench.network [--repeat 3] [--seconds 3] [--shared-subnet]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench.daemon import bench_daemon
from cumulo.client import Client


def sh(*args: str) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, check=True,
                          timeout=60).stdout


def iperf(server_ns: str, client_ns: str, ip: str, seconds: int) -> float:
    """Gbit/s received from one TCP stream; ``*_ns`` are netns paths."""
    server = subprocess.Popen(["nsenter", f"--net={server_ns}", "iperf3", "-s", "-1", "-B", ip],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        out = sh("nsenter", f"--net={client_ns}", "timeout", str(seconds + 20), "iperf3",
                 "-c", ip, "-t", str(seconds), "-O", "1", "-J")
        return float(json.loads(out)["end"]["sum_received"]["bits_per_second"]) / 1e9
    finally:
        server.kill()
        server.wait(10)


def qperf(server_ns: str, client_ns: str, ip: str, seconds: int) -> dict[str, float]:
    """Round trips per second of one TCP and one UDP request/response stream (qperf)."""
    server = subprocess.Popen(["nsenter", f"--net={server_ns}", "qperf", "-lp", "19765"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        out = sh("nsenter", f"--net={client_ns}", "timeout", str(4 * seconds + 20), "qperf",
                 "-lp", "19765", "-ip", "19766", "-t", str(seconds), "-vu", ip,
                 "tcp_lat", "udp_lat")
    finally:
        server.kill()
        server.wait(10)
    rates: dict[str, float] = {}
    test = ""
    for line in out.splitlines():
        if line.rstrip().endswith(":") and not line.startswith(" "):
            test = line.strip().rstrip(":")
        elif "latency" in line and "=" in line:
            value, unit = line.split("=")[1].split()[:2]
            usec = float(value) * {"ns": 1e-3, "us": 1.0, "ms": 1e3, "sec": 1e6}[unit]
            rates[test] = 1e6 / usec  # one transaction per round trip
    return rates


def sg_rules(c: Client) -> None:
    """A group of 100 rules; only the last lets the benchmark in (iperf3 and qperf)."""
    c.create_group("bench100")
    for i in range(99):
        c.add_rule("bench100", {"protocol": "tcp", "ports": str(20000 + i),
                                "cidr": f"192.0.2.{i}/32"})
    c.add_rule("bench100", {"protocol": "any", "cidr": "10.99.0.0/24"})
    c.attach_group("bench100", "srv")


def hand_wired(bench: str, tag: str) -> tuple[list[str], str]:
    """Two namespaces on a bridge inside ``bench``, like our wiring; (netns names, server IP)."""
    names = [f"cu-bench-r1{tag}", f"cu-bench-r2{tag}"]
    br = f"cu-rb{tag}"
    sh("ip", "-n", bench, "link", "add", br, "type", "bridge")
    sh("ip", "-n", bench, "link", "set", br, "up")
    for i, ns in enumerate(names, start=1):
        sh("ip", "netns", "add", ns)
        host = f"cu-r{i}{tag}"
        sh("ip", "-n", bench, "link", "add", host, "type", "veth", "peer", "name", "eth0",
           "netns", ns)
        sh("ip", "-n", bench, "link", "set", host, "master", br, "up")
        sh("ip", "-n", ns, "addr", "add", f"10.99.1.{i + 1}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    return names, "10.99.1.2"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--shared-subnet", action="store_true",
                    help="another project's network has the subnet too")
    args = ap.parse_args()
    tag = uuid.uuid4().hex[:6]
    bench = f"cu-bench-{tag}"
    raw_ns: list[str] = []
    ours: list[float] = []
    raw: list[float] = []
    sg: list[float] = []
    rr: dict[str, list[dict[str, float]]] = {"raw": [], "cumulo": [], "cumulo_sg100": []}
    sh("ip", "netns", "add", bench)
    try:
        with bench_daemon(["nsenter", f"--net=/run/netns/{bench}"]) as (c, _state, _parent):
            c.build_image("busybox")
            if args.shared_subnet:
                c.create_project("other")
                c.create_network("first", "10.99.0.0/24", project="other")
            try:
                net = c.create_network("bench", "10.99.0.0/24")
                print(f"network bench: own namespace {net.get('own_netns', False)}")
                for name in ("srv", "cli"):
                    c.create(name, "busybox", start=True, networks=[{"network": "bench"}])
                srv, cli = c.instance("srv"), c.instance("cli")
                srv_ns, cli_ns = f"/proc/{srv['pid']}/ns/net", f"/proc/{cli['pid']}/ns/net"
                raw_ns, raw_ip = hand_wired(bench, tag)
                raw_pair = (f"/run/netns/{raw_ns[0]}", f"/run/netns/{raw_ns[1]}", raw_ip)
                ip = srv["nics"][0]["ip"]
                for _ in range(args.repeat):  # interleaved, so drift hits both sides alike
                    ours.append(iperf(srv_ns, cli_ns, ip, args.seconds))
                    raw.append(iperf(*raw_pair, args.seconds))
                    rr["cumulo"].append(qperf(srv_ns, cli_ns, ip, args.seconds))
                    rr["raw"].append(qperf(*raw_pair, args.seconds))
                sg_rules(c)
                for _ in range(args.repeat):
                    sg.append(iperf(srv_ns, cli_ns, ip, args.seconds))
                    rr["cumulo_sg100"].append(qperf(srv_ns, cli_ns, ip, args.seconds))
            finally:   # (the daemon's clean-up knows its own project only)
                if args.shared_subnet:
                    c.delete_network("first", project="other")
    finally:
        for ns in [*raw_ns, bench]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
    med_ours, med_raw = statistics.median(ours), statistics.median(raw)
    print(f"TCP, one stream, {args.seconds}s x {args.repeat} (median Gbit/s):")
    print(f"  by hand (ip netns, veth, bridge) : {med_raw:.2f}  {[round(x, 2) for x in raw]}")
    print(f"  cumulo network                    : {med_ours:.2f}  {[round(x, 2) for x in ours]}"
          f"  ratio {med_ours / med_raw:.2f}x")
    med_sg = statistics.median(sg)
    print(f"  cumulo + 100 security-group rules : {med_sg:.2f}  {[round(x, 2) for x in sg]}"
          f"  ratio {med_sg / med_raw:.2f}x")
    print("request/response, transactions per second (median of 1/latency):")
    for test in ("tcp_lat", "udp_lat"):
        med = {k: statistics.median(s[test] for s in v) for k, v in rr.items()}
        print(f"  {test}: by hand {med['raw']:.0f}, cumulo {med['cumulo']:.0f}"
              f" ({med['cumulo'] / med['raw']:.2f}x), with 100 rules {med['cumulo_sg100']:.0f}"
              f" ({med['cumulo_sg100'] / med['raw']:.2f}x)")
    out = Path("bench/results/network.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"gbit_s": {"raw": raw, "cumulo": ours, "cumulo_sg100": sg},
                               "rr_per_s": rr}, indent=1))
    print(f"raw samples in {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
