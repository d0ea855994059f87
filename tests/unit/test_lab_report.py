"""Workload parsers and report conclusions, from known tool output and known samples."""

from __future__ import annotations

from pathlib import Path

import pytest

from cumulo.errors import DriverError, InvalidInputError
from cumulo.lab import report, workloads
from cumulo.lab.runner import make_plan, parse_list
from cumulo.lab.schema import PLATFORMS, Environment, Results, Settings

SYSBENCH_CPU = """CPU speed:
    events per second:  3378.51

General statistics:
    total time:                          2.0004s
"""
SYSBENCH_MEM = "Total operations: 174 (  173.05 per second)\n\n" \
               "11136.00 MiB transferred (11070.65 MiB/sec)\n"
HPCC = """This is the DARPA/DOE HPC Challenge Benchmark version 1.5.0 October 2012
T/V                N    NB     P     Q               Time                 Gflops
--------------------------------------------------------------------------------
WR11C2R4         200    80     1     1               0.00              1.807e+00
WR11C2R4         400    80     1     1               0.01              3.214e+00
STREAM_VectorSize=53333
SingleSTREAM_Copy=63.848
SingleSTREAM_Scale=51.2171
SingleSTREAM_Add=58.4712
SingleSTREAM_Triad=60.3514
"""


def test_parsers_read_the_tools_output() -> None:
    assert workloads.parse_sysbench_cpu(SYSBENCH_CPU) == 3378.51
    assert workloads.parse_sysbench_memory(SYSBENCH_MEM) == 11070.65
    h = workloads.parse_hpcc(HPCC)
    assert h.hpl_gflops == {200: 1.807, 400: 3.214}
    assert h.stream_gbs == {"Copy": 63.848, "Scale": 51.2171, "Add": 58.4712,
                            "Triad": 60.3514}
    assert (h.stream_vector, h.version) == (53333, "1.5.0")
    with pytest.raises(DriverError, match="no HPL result"):
        workloads.parse_hpcc("MPI_Init failed")
    with pytest.raises(DriverError, match="events per second"):
        workloads.parse_sysbench_cpu("sysbench: command not found")


def test_a_stream_rate_timed_by_a_clock_that_stepped_back_is_no_figure(
        tmp_path: Path) -> None:
    """Seen in a TCG microvm guest: hpcc's bytes over a negative best time."""
    text = HPCC.replace("SingleSTREAM_Copy=63.848", "SingleSTREAM_Copy=-0.00341333")
    h = workloads.parse_hpcc(text)
    assert h.stream_gbs == {"Scale": 51.2171, "Add": 58.4712, "Triad": 60.3514}
    assert h.stream_untimed == {"Copy": -0.00341333}
    # a results file that already holds such samples: no ratio, and the report is written
    r = known()
    r.add("native", "memory", "stream_copy", "GB/s", 60.0, x=213333, x_label="doubles")
    r.add("native", "memory", "stream_copy", "GB/s", 62.0, x=213333, x_label="doubles")
    for v in (-0.00341333, 1.3):
        r.add("appvm", "memory", "stream_copy", "GB/s", v, x=213333, x_label="doubles")
    r.add("container", "memory", "stream_copy", "GB/s", 59.0, x=213333, x_label="doubles")
    bad = r.find("appvm", "memory", "stream_copy", 213333)
    assert bad is not None and report.ratio_of(r, bad) is None
    plots = report.write_html(r, tmp_path / "rep.html")
    assert "rep-memory-ratio.png" in [p.name for p in plots]



def test_the_disk_suite_says_a_vm_disk_goes_through_the_host_page_cache() -> None:
    r = known()
    r.add("container", "disk", "rand_read_4k", "IOPS", 9000.0)
    assert "page cache" not in report.text(r)
    r.add("vm", "disk", "rand_read_4k", "IOPS", 2000.0)
    assert "goes through the host's page cache" in report.text(r)


def _fio_job(name: str, read: tuple[float, int], write: tuple[float, int]) -> str:
    return (f'{{"jobname":"{name}","error":0,"read":{{"iops":{read[0]},"bw_bytes":{read[1]}}},'
            f'"write":{{"iops":{write[0]},"bw_bytes":{write[1]}}}}}')


def test_fio_json_is_read_per_job() -> None:
    jobs = [_fio_job("rand_read_4k", (100.5, 411648), (0, 0)),
            _fio_job("rand_write_4k", (0, 0), (50.0, 204800)),
            _fio_job("seq_read_1m", (9.0, 900 * 2**20), (0, 0)),
            _fio_job("seq_write_1m", (0, 0), (8.0, 800 * 2**20))]
    text = 'note: a warning first\n{"fioversion":"fio-3.33","jobs":[' + ",".join(jobs) + "]}"
    assert workloads.parse_fio(text) == {
        "rand_read_4k": (100.5, "IOPS"), "rand_write_4k": (50.0, "IOPS"),
        "seq_read_1m": (900.0, "MiB/s"), "seq_write_1m": (800.0, "MiB/s")}
    with pytest.raises(DriverError, match="no seq_write_1m job"):
        workloads.parse_fio('{"jobs":[' + ",".join(jobs[:3]) + "]}")
    with pytest.raises(DriverError, match="cannot read fio JSON"):
        workloads.parse_fio("fio: command not found")
    failed = jobs[0].replace('"error":0', '"error":5')
    with pytest.raises(DriverError, match="rand_read_4k failed with error 5"):
        workloads.parse_fio('{"jobs":[' + ",".join([failed, *jobs[1:]]) + "]}")


def test_fio_script_uses_a_fresh_directory_and_the_quick_size() -> None:
    script = workloads.fio("/var/tmp", quick=True)
    assert "mktemp -d /var/tmp/cumulo-bench-fio.XXXXXX" in script and "--size=64M" in script
    assert "--direct=1" in script and 'rm -rf "$d"' in script
    assert all(f"--name={job}" in script for job in workloads.FIO_JOBS)
    assert "--size=512M" in workloads.fio("/tmp", quick=False)


def test_hpcc_input_lists_the_sizes() -> None:
    lines = workloads.hpcc_input([200, 400, 800]).splitlines()
    assert lines[4].split()[0] == "3" and lines[5].split()[:3] == ["200", "400", "800"]
    assert len(lines) == 36   # HPL's 31 lines, the separator, PTRANS's 4


def known() -> Results:
    r = Results(created="2026-11-23T11:00:00Z",
                settings=Settings(platforms=["native", "container", "vm"],
                                  suites=["cpu", "footprint"], repeat=3),
                environment=Environment(accel="tcg"))
    for v in (100, 100, 100):
        r.add("native", "cpu", "sysbench_cpu", "events/s", v)
    for v in (90, 95, 100):
        r.add("container", "cpu", "sysbench_cpu", "events/s", v)
    for v in (10, 10, 10):
        r.add("vm", "cpu", "sysbench_cpu", "events/s", v)
    for v in (2, 2, 2):
        r.add("native", "cpu", "hpl", "GFLOPS", v, x=200, x_label="N")
    for v in (2, 2, 2):
        r.add("container", "cpu", "hpl", "GFLOPS", v, x=200, x_label="N")
    r.add("container", "footprint", "pss", "bytes", 2 * 2**20, higher_is_better=False)
    r.add("vm", "footprint", "pss", "bytes", 200 * 2**20, higher_is_better=False)
    return r


def test_standings_and_conclusions_come_from_the_samples() -> None:
    r = known()
    cont = r.find("container", "cpu", "sysbench_cpu")
    assert cont is not None
    assert report.ratio_text(report.ratio_of(r, cont)) == "0.950 [0.925-0.975]"
    st = report.standings(r, "cpu")
    assert [s.platform for s in st] == ["container", "vm"]
    assert st[0].performance == pytest.approx((0.95 * 1.0) ** 0.5)
    assert st[1].performance == pytest.approx(0.1) and st[1].metrics == 1
    text = "\n".join(report.conclusions(r))
    assert "cpu: container is closest to native, 2.5% slower than native" in text
    assert "vm (TCG emulation, no usable KVM) 90.0% slower than native" in text
    assert "vm needs 100x what container needs" in text
    claims = "\n".join(report.published(r))
    assert "Containers close to native in cpu: AGREES" in claims
    assert "NOT COMPARABLE here - vm runs on TCG" in claims
    assert "Containers have a smaller footprint than VMs: AGREES" in claims
    assert "network round trips: not measured" in claims
    assert "Containers close to native in network: not measured in this run." in claims


def test_reports_write_their_plots(tmp_path: Path) -> None:
    r = known()
    plots = report.write_markdown(r, tmp_path / "rep.md")
    names = sorted(p.name for p in plots)
    assert names == ["rep-cpu-ratio.png", "rep-footprint.png", "rep-hpl.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in plots)
    md = (tmp_path / "rep.md").read_text()
    assert "![HPL GFLOPS against problem size N, per platform](rep-hpl.png)" in md
    assert "| sysbench_cpu | container | events/s | 95 |" in md
    html = report.write_html(r, tmp_path / "rep.html")
    assert len(html) == 3 and "<h1>Cumulo benchmark lab</h1>" in (tmp_path / "rep.html").read_text()
    with pytest.raises(InvalidInputError, match="cannot write the report"):
        report.write_html(r, tmp_path / "no-such-dir" / "x.html")


def test_a_report_name_with_dashes_keeps_its_plots(tmp_path: Path) -> None:
    r = known()
    plots = report.write_html(r, tmp_path / "my-lab-run.html")
    html = (tmp_path / "my-lab-run.html").read_text()
    assert len(plots) == 3
    for p in plots:   # every plot written is shown, under its suite
        assert f'src="{p.name}"' in html, p.name


def test_compare_puts_two_runs_side_by_side() -> None:
    a, b = known(), known()
    for s in b.series:
        s.samples = [v * 2 for v in s.samples]
    text = report.compare_text(a, b)
    row = next(ln for ln in text.splitlines() if ln.startswith("cpu") and "vm" in ln)
    assert "10" in row and "20" in row and "2.000" in row
    bad = b.find("vm", "cpu", "sysbench_cpu")
    assert bad is not None
    bad.samples = [-0.5]
    row = next(ln for ln in report.compare_text(a, b).splitlines()
               if ln.startswith("cpu") and "vm" in ln and "sysbench" in ln)
    assert "-0.5" in row and "-0.050" not in row   # B/A left empty


def test_plan_validation(tmp_path: Path) -> None:
    assert parse_list("native, container,native", PLATFORMS, "platforms") == \
        ["native", "container"]
    with pytest.raises(InvalidInputError, match="unknown platform 'kvm'"):
        parse_list("kvm", PLATFORMS, "platforms")
    with pytest.raises(InvalidInputError, match="no platforms given"):
        parse_list(" , ", PLATFORMS, "platforms")
    with pytest.raises(InvalidInputError, match="is a directory"):
        make_plan("native", "cpu", 1, True, tmp_path)
    plan = make_plan("native", "cpu,memory", 2, True, tmp_path / "r.json")
    assert (plan.platforms, plan.suites, plan.repeat) == (["native"], ["cpu", "memory"], 2)
    assert list(tmp_path.iterdir()) == []   # the write check left nothing


def test_round_trips_and_measured_density_come_from_the_samples(tmp_path: Path) -> None:
    r = known()
    for p, us in [("native", 10.0), ("container", 20.0), ("vm", 200.0)]:
        for test in ("tcp_lat", "udp_lat"):
            for v in (us, us, us):
                r.add(p, "network", test, "us", v, higher_is_better=False)
    for n, total in [(1, 3 * 2**20), (2, 4 * 2**20)]:
        r.add("container", "density", "total_pss", "bytes", total, higher_is_better=False,
              x=n, x_label="instances")
    r.add("vm", "density", "total_pss", "bytes", 256 * 2**20, higher_is_better=False,
          x=1, x_label="instances")
    for v in (512.0, 512.0):
        r.add("container", "density", "idle_per_gib", "instances/GiB", v)
    r.add("vm", "density", "idle_per_gib", "instances/GiB", 4.0)
    claims = "\n".join(report.published(r))
    assert ("NOT COMPARABLE here - vm round trips (qperf tcp_lat, udp_lat) take 20.0x "
            "native's [spread 20.0-20.0]; 10.0x the container's") in claims
    text = "\n".join(report.conclusions(r))
    assert ("density (measured): idle instances per GiB of host memory container 512.0 "
            "(2 launched), vm (TCG emulation, no usable KVM) 4.0 (1 launched); container "
            "fits 128x as many as vm") in text
    r.environment.accel = "kvm"
    assert "round trips: AGREES - vm" in "\n".join(report.published(r))
    plots = report.write_markdown(r, tmp_path / "rep.md")
    assert "rep-density.png" in [p.name for p in plots]


def with_app_vms(app_pss: list[float], generic_pss: list[float] | None = None) -> Results:
    """known() plus app VM footprints (vm: 200 MiB PSS, container: 2 MiB)."""
    r = known()
    for v in app_pss:
        r.add("appvm-app", "footprint", "pss", "bytes", v * 2**20, higher_is_better=False)
    for v in generic_pss or []:
        r.add("appvm-generic", "footprint", "pss", "bytes", v * 2**20,
              higher_is_better=False)
    return r


def test_single_purpose_vms_much_lighter_from_the_specialised_app_vm() -> None:
    r = with_app_vms([60, 60, 64], [160])
    r.add("vm", "boot", "launch_to_ready", "s", 15.0, higher_is_better=False)
    r.add("appvm-app", "boot", "launch_to_ready", "s", 1.5, higher_is_better=False)
    r.add("vm", "footprint", "image_bytes", "bytes", 80 * 2**20, higher_is_better=False)
    r.add("appvm-app", "footprint", "image_bytes", "bytes", 2 * 2**20, higher_is_better=False)
    r.add("vm", "density", "idle_per_gib", "instances/GiB", 4.0)
    r.add("appvm-app", "density", "idle_per_gib", "instances/GiB", 16.0)
    claim = report.lighter(r)
    assert claim.startswith("Single-purpose VMs are much lighter than full VMs: AGREES - "
                            "appvm-app needs 60.0 MiB of host memory (PSS), 0.30x vm's "
                            "200.0 MiB [spread 0.30-0.31]"), claim
    assert "launch to ready 1.50s vs 15.00s (0.10x)" in claim
    assert "boots from 2.0 MiB vs 80.0 MiB (0.03x)" in claim
    assert "idle per GiB 16.0 vs 4.0 (4.00x)" in claim
    assert ("on Debian's kernel (appvm-generic) 160.0 MiB, 0.80x vm's: the kernel built for "
            "app VMs takes 0.38x") in claim
    assert "still 30x the container's 2.0 MiB" in claim and "on TCG" in claim
    assert claim in report.published(r)
    assert "appvm-app (TCG emulation, no usable KVM)" in report.text(r)


def test_single_purpose_vms_verdict_follows_the_spread() -> None:
    # the generic app VM alone stands in when the specialised one did not run
    claim = report.lighter(with_app_vms([], [170, 175, 180]))
    assert "DISAGREES - appvm-generic needs 175.0 MiB" in claim and "0.88x vm's" in claim
    assert "Debian's kernel" not in claim
    claim = report.lighter(with_app_vms([90, 100, 110]))   # 0.45-0.55 of the VM's
    assert "INCONCLUSIVE (the spread reaches 0.5x) - appvm-app" in claim
    r = known()
    assert "lighter than full VMs: not measured" in report.lighter(r)
    r = with_app_vms([60])
    r.series = [s for s in r.series if s.platform != "vm"]
    assert "lighter than full VMs: not measured" in report.lighter(r)


def test_a_lab_vm_still_booting_is_waited_for_not_taken_for_a_dead_daemon() -> None:
    """wait_ready's exec must outlast the daemon's own wait for a booting guest's agent:
    its HTTP bound was 40 s against the agent's 60 (now 90: qga), so a VM booting slowly on a loaded
    host failed the whole platform with "cannot reach cumulod: timed out"."""
    from cumulo.drivers.vm import qga as agent
    from cumulo.lab import platforms

    asked: list[float] = []

    class Booting:
        def exec(self, name: str, command: list[str], timeout: float) -> dict[str, int]:
            asked.append(timeout + 10)          # what the client gives the request
            return {"exit_code": 0}

    p = platforms.InstancePlatform("vm", Booting(), "lab-vm", [])  # type: ignore[arg-type]
    p.wait_ready()
    assert asked and asked[0] > agent.READY_TIMEOUT + 10, asked
    assert platforms.AGENT_WAIT == agent.READY_TIMEOUT
