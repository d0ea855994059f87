"""The network suite's iperf3 UDP and instance-to-host figures: parsers, ratios, report."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from cumulo.errors import DriverError
from cumulo.lab import report, workloads
from cumulo.lab.runner import TO_HOST, network_text
from cumulo.lab.schema import Environment, Results, Settings


def iperf3_udp_json(received_bps: float, lost: float) -> str:
    """The shape of `iperf3 -u -b 0 -l 1400 -J` (iperf 3.12), trimmed; from a loopback run."""
    def side(bps: float, lost_pct: float, sender: bool) -> dict[str, object]:
        return {"start": 0, "end": 1.0036, "seconds": 1.0036, "bytes": 94487400,
                "bits_per_second": bps, "jitter_ms": 0.0078, "lost_packets": 67155,
                "packets": 134646, "lost_percent": lost_pct, "sender": sender}
    return json.dumps({"start": {"test_start": {"protocol": "UDP", "blksize": 1400}},
                       "end": {"sum": side(received_bps, lost, False),
                               "sum_sent": side(1510910410.8, 0, True),
                               "sum_received": side(received_bps, lost, False)}},
                      indent="\t")


def test_udp_parser_reads_the_receiver_side() -> None:
    # a failed first attempt of the retry loop, then the run
    text = "iperf3: error - unable to connect\n" + iperf3_udp_json(753189225.2, 49.78)
    gbits, lost = workloads.parse_iperf3_udp(text)
    assert gbits == pytest.approx(0.7531892252) and lost == 49.78
    assert workloads.parse_iperf3(text) == pytest.approx(0.7531892252)
    tcp = json.dumps({"end": {"sum_received": {"bits_per_second": 2e10}}}, indent="\t")
    assert workloads.parse_iperf3(tcp) == 20.0
    with pytest.raises(DriverError, match="no UDP loss"):
        workloads.parse_iperf3_udp(tcp)
    with pytest.raises(DriverError, match="cannot read iperf3 JSON"):
        workloads.parse_iperf3_udp("iperf3: error - unable to connect")


def test_udp_client_and_bounded_servers() -> None:
    cmd = workloads.iperf3_client("10.0.0.1", True, 5300, udp=True)
    assert "-u -b 0 -l 1400" in cmd and "-t 1" in cmd and "-c 10.0.0.1 -p 5300" in cmd
    assert "-u" not in workloads.iperf3_client("10.0.0.1", True, 5300)
    assert "--idle-timeout" in workloads.iperf3_server("10.0.0.1", 5300)
    assert workloads.qperf_server(5301, bounded=True).startswith("timeout ")
    assert not workloads.qperf_server(5301).startswith("timeout ")


def known() -> Results:
    r = Results(created="2026-11-23T11:00:00Z",
                settings=Settings(platforms=["native", "container"], suites=["network"],
                                  repeat=3),
                environment=Environment(accel="tcg"))
    for native, cont, cont_host in ((0.8, 0.4, 0.6), (1.0, 0.5, 0.8), (1.2, 0.6, 1.0)):
        r.add("native", "network", "iperf3_udp", "Gbit/s", native)
        r.add("container", "network", "iperf3_udp", "Gbit/s", cont)
        r.add("container", "network", "iperf3_udp" + TO_HOST, "Gbit/s", cont_host)
    for native, cont in ((50, 10), (50, 20), (50, 30)):
        r.add("native", "network", "iperf3_udp_loss", "%", native, higher_is_better=False)
        r.add("container", "network", "iperf3_udp_loss", "%", cont, higher_is_better=False)
    for native, cont_host in ((10, 20), (10, 20), (10, 20)):
        r.add("native", "network", "tcp_lat", "us", native, higher_is_better=False)
        r.add("container", "network", "tcp_lat" + TO_HOST, "us", cont_host,
              higher_is_better=False)
    return r


def test_ratios_of_udp_and_instance_to_host_figures(tmp_path: Path) -> None:
    r = known()
    udp, loss = r.find("container", "network", "iperf3_udp"), \
        r.find("container", "network", "iperf3_udp_loss")
    to_host = r.find("container", "network", "iperf3_udp" + TO_HOST)
    lat = r.find("container", "network", "tcp_lat" + TO_HOST)
    assert udp and loss and to_host and lat
    assert report.ratio_text(report.ratio_of(r, udp)) == "0.500 [0.409-0.611]"
    assert report.ratio_text(report.ratio_of(r, loss)) == "0.400 [0.300-0.500]"
    # instance to host against native's loopback figure
    assert report.ratio_text(report.ratio_of(r, to_host)) == "0.800 [0.636-1.000]"
    assert report.ratio_text(report.ratio_of(r, lat)) == "2.000 [2.000-2.000]"
    # the loss is no standing of its own: geometric mean of 0.5, 0.8 and 1/2.0
    (st,) = report.standings(r, "network")
    assert st.metrics == 3 and st.performance == pytest.approx((0.5 * 0.8 * 0.5) ** (1 / 3))
    text = report.text(r)
    assert "iperf3_udp_to_host" in text and "0.800 [0.636-1.000]" in text
    assert "iperf3_udp_loss" in text and "_to_host have the client in the instance" in text
    made = report.plots(r, tmp_path, "net")
    assert any(p.name == "net-network-ratio.png" for p, _ in made)
    b = known()
    b.series[0].samples = [1.6, 2.0, 2.4]   # native UDP twice as fast in run B
    cmp = report.compare_text(r, b)
    assert "iperf3_udp_to_host" in cmp and "2.000" in cmp


def test_progress_line() -> None:
    got = {"iperf3_tcp": 20.5, "iperf3_udp": 0.75, "iperf3_udp_loss": 49.8,
           "tcp_lat": 12.3, "udp_lat": 11.0}
    assert network_text(got) == ("iperf3 TCP 20.50 Gbit/s, UDP 0.75 Gbit/s received (49.8% "
                                 "lost); qperf tcp_lat 12.3 us, udp_lat 11.0 us")


def test_iperf3_client_retries_a_json_error_that_exits_0(tmp_path: Path) -> None:
    """iperf3 3.12 -J exits 0 when the server is not listening yet: the client script
    must look at the JSON's error key, retry, and print only the run that worked."""
    fake = tmp_path / "iperf3"
    fake.write_text(f"""#!/bin/sh
n=$(cat {tmp_path}/n 2>/dev/null || echo 0); echo $((n + 1)) > {tmp_path}/n
if [ "$n" -lt 2 ]; then
  printf '{{\\n\\t"start":\\t{{}},\\n\\t"error":\\t"unable to connect to server"\\n}}\\n'
else
  cat {tmp_path}/ok.json
fi
exit 0
""")
    fake.chmod(0o755)
    (tmp_path / "ok.json").write_text(iperf3_udp_json(0.5e9, 2.0) + "\n")
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    script = workloads.iperf3_client("127.0.0.1", True, 5999, udp=True)
    r = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0 and (tmp_path / "n").read_text().strip() == "3"
    assert "error" not in r.stdout and r.stderr.count("unable to connect") == 2
    assert workloads.parse_iperf3_udp(r.stdout) == (0.5, 2.0)

    (tmp_path / "n").write_text("-100")   # never listening: 20 tries, then a failure
    r = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1 and "unable to connect" in r.stderr
