"""The workloads of the lab: the command lines it runs and the parsers of their output.

Every workload is one ``sh -c`` script, the same text on the host and in an instance
(dash on the host, busybox sh in the bench image), so the only difference between
platforms is where it runs. Parsers are pure: tool output in, numbers out.

- sysbench cpu: one thread, primes up to 10000, events per second for a fixed time.
- sysbench memory: one thread, sequential writes of a 64 MiB block (twice the 32 MiB L3
  of the reference host: main memory, not cache), MiB/s.
- network (iperf3, qperf): a server in one place, the client in another: on the host both
  on loopback; for instances, instance to instance over a Cumulo network, and instance to
  host (the client in the instance, the server on the network's gateway address, on the
  bridge the lab made). iperf3 TCP throughput (Gbit/s, one stream); iperf3 UDP throughput
  received (Gbit/s) and the datagrams lost (%); qperf tcp_lat and udp_lat (one-way latency
  of a request/response ping-pong, microseconds).
- disk (fio, O_DIRECT, psync, one file): random 4 KiB reads and writes (IOPS),
  sequential 1 MiB reads and writes (MiB/s), in a fresh directory on the instance's root
  disk: /var/tmp on the host, /tmp in a container (its root on the storage pool), /var/tmp
  in a VM (its ext4 root disk, a qcow2 in the pool).
- hpcc: HPL (LINPACK) at several problem sizes N, GFLOPS per N; the same run gives
  STREAM copy/scale/add/triad (single process) in GB/s, with arrays hpcc sizes from the
  largest N (STREAM_VectorSize doubles each, recorded with the figures).
"""

from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass, field

from cumulo.errors import DriverError

# hpcc is an MPI program run as one process: allow root, and keep the singleton alone
# (no orted daemon forked, so the bench image needs no Open MPI launcher).
HPCC_ENV = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_ess_singleton_isolated": "1", "OMPI_MCA_btl": "self",
}
HPL_SIZES = {True: [200, 400, 800], False: [500, 1000, 2000]}   # quick -> N values
STREAM_KERNELS = ("Copy", "Scale", "Add", "Triad")
MEMORY_BLOCK = "64M"


def seconds(quick: bool) -> int:
    return 1 if quick else 5


def sysbench_cpu(quick: bool) -> str:
    return (f"sysbench cpu --threads=1 --cpu-max-prime=10000 --time={seconds(quick)} "
            "--events=0 run")


def sysbench_memory(quick: bool) -> str:
    return (f"sysbench memory --threads=1 --memory-block-size={MEMORY_BLOCK} "
            f"--memory-total-size=1000T --memory-oper=write --time={seconds(quick)} run")


def hpcc_script() -> str:
    """Reads hpccinf.txt on stdin, runs hpcc in a fresh temp dir, prints hpccoutf.txt."""
    return ('d=$(mktemp -d) && cd "$d" && cat > hpccinf.txt && hpcc >/dev/null 2>&1; '
            'rc=$?; cat hpccoutf.txt 2>/dev/null; cd / && rm -rf "$d"; exit $rc')


def hpcc_input(sizes: list[int], nb: int = 80) -> str:
    """An hpccinf.txt: HPL at each N on a 1x1 grid (one process), PTRANS kept small."""
    ns = " ".join(str(n) for n in sizes)
    return f"""HPLinpack benchmark input file
Innovative Computing Laboratory, University of Tennessee
HPL.out      output file name (if any)
8            device out (6=stdout,7=stderr,file)
{len(sizes)}            # of problems sizes (N)
{ns}      Ns
1            # of NBs
{nb}           NBs
0            PMAP process mapping (0=Row-,1=Column-major)
1            # of process grids (P x Q)
1            Ps
1            Qs
16.0         threshold
1            # of panel fact
2            PFACTs (0=left, 1=Crout, 2=Right)
1            # of recursive stopping criterium
4            NBMINs (>= 1)
1            # of panels in recursion
2            NDIVs
1            # of recursive panel fact.
1            RFACTs (0=left, 1=Crout, 2=Right)
1            # of broadcast
1            BCASTs (0=1rg,1=1rM,2=2rg,3=2rM,4=Lng,5=LnM)
1            # of lookahead depth
1            DEPTHs (>=0)
2            SWAP (0=bin-exch,1=long,2=mix)
64           swapping threshold
0            L1 in (0=transposed,1=no-transposed) form
0            U  in (0=transposed,1=no-transposed) form
1            Equilibration (0=no,1=yes)
8            memory alignment in double (> 0)
##### This line (no. 32) is ignored (it serves as a separator). ######
0                               Number of additional problem sizes for PTRANS
1200 10000 30000                values of N
0                               number of additional blocking sizes for PTRANS
40 9 8 13 13 20 16 32 64        values of NB
"""


def _number(pattern: str, text: str, what: str) -> float:
    m = re.search(pattern, text, re.MULTILINE)
    if not m:
        raise DriverError(f"cannot find {what} in the output: {text.strip()[-300:]!r}")
    return float(m.group(1))


def parse_sysbench_cpu(text: str) -> float:
    """events per second."""
    return _number(r"events per second:\s*([0-9.]+)", text, "sysbench events per second")


def parse_sysbench_memory(text: str) -> float:
    """MiB/s, from "11136.00 MiB transferred (11070.65 MiB/sec)"."""
    return _number(r"MiB transferred \(([0-9.]+) MiB/sec\)", text, "sysbench MiB/sec")


@dataclass
class Hpcc:
    hpl_gflops: dict[int, float] = field(default_factory=dict)   # N -> GFLOPS
    stream_gbs: dict[str, float] = field(default_factory=dict)   # Copy.. -> GB/s
    stream_vector: int = 0                                        # doubles per array
    version: str = ""
    stream_untimed: dict[str, float] = field(default_factory=dict)   # not a figure: why below


def parse_hpcc(text: str) -> Hpcc:
    """hpccoutf.txt: the HPL result lines (WR...) and the summary's SingleSTREAM_*.

    A STREAM rate that is not positive is no measurement: hpcc divides the bytes by the
    best time of gettimeofday() differences, and a guest clock that steps back (seen in
    TCG microvm guests) makes it negative; such kernels go to ``stream_untimed``."""
    out = Hpcc()
    for row in re.finditer(r"^W[RC]\S+\s+(\d+)\s+\d+\s+\d+\s+\d+\s+[0-9.]+\s+([0-9.eE+-]+)\s*$",
                         text, re.MULTILINE):
        out.hpl_gflops[int(row.group(1))] = float(row.group(2))
    for kernel in STREAM_KERNELS:
        m = re.search(rf"^SingleSTREAM_{kernel}=([0-9.eE+-]+)", text, re.MULTILINE)
        if m and float(m.group(1)) > 0:
            out.stream_gbs[kernel] = float(m.group(1))
        elif m:   # bytes / a negative time: the clock stepped back during the kernel
            out.stream_untimed[kernel] = float(m.group(1))
    m = re.search(r"^STREAM_VectorSize=(\d+)", text, re.MULTILINE)
    out.stream_vector = int(m.group(1)) if m else 0
    m = re.search(r"HPC Challenge Benchmark version (\S+)", text)
    out.version = m.group(1) if m else ""
    if not out.hpl_gflops:
        raise DriverError(f"hpcc printed no HPL result: {text.strip()[-300:]!r}")
    return out


IPERF_PORT, QPERF_PORT = 5201, 19765   # their defaults; in an instance's own netns


# A server that nobody reaches ends on its own: iperf3 after this many idle seconds, and a
# host-side qperf under timeout(1) (the host has coreutils; the bench image only busybox).
SERVER_IDLE = 120


def iperf3_server(bind: str, port: int = IPERF_PORT) -> str:
    """Starts a one-shot iperf3 server in the background; prints its pid."""
    return (f"iperf3 -s -1 --idle-timeout {SERVER_IDLE} -B {bind} -p {port} >/dev/null 2>&1 "
            "& echo $!")


def qperf_server(port: int = QPERF_PORT, bounded: bool = False) -> str:
    bound = f"timeout {SERVER_IDLE * 5} " if bounded else ""
    return f"{bound}qperf -lp {port} >/dev/null 2>&1 & echo $!"


def stop_server(pid: int) -> str:
    return f"kill {pid} 2>/dev/null; true"


def _retry(cmd: str) -> str:
    """The server may need a moment to listen: try up to 20 times, 0.25 s apart."""
    return (f"i=0; while [ $i -lt 20 ]; do {cmd} && exit 0; i=$((i + 1)); sleep 0.25; done; "
            "exit 1")


# UDP: unlimited rate (-b 0), so the figure is what the receiver takes in when the sender
# sends as fast as it can, not a rate we chose; the loss % says how far the sender outran
# it (on loopback about half the datagrams are dropped at the receiving socket). 1400-byte
# datagrams (-l) fit a 1500-byte MTU with the IP and UDP headers, so a veth, tap or bridge
# never fragments them, and the same size runs on loopback (MTU 64 KiB), so the platforms
# send the same datagrams; iperf3's own default follows the path's MTU and would differ.
UDP_LENGTH = 1400


def iperf3_client(ip: str, quick: bool, port: int = IPERF_PORT, udp: bool = False) -> str:
    """iperf3 -J, retried while it reports an error: iperf3 3.12 with -J exits 0 even when
    it could not connect, so its JSON's ``error`` key, not the exit code, says it failed."""
    mode = f" -u -b 0 -l {UDP_LENGTH}" if udp else ""
    run = f"out=$(iperf3 -c {ip} -p {port}{mode} -t {seconds(quick)} -J 2>/dev/null)"
    return _retry(f"{run}; case \"$out\" in ''|*'\"error\":'*) echo \"$out\" >&2; false;;"
                  " *) echo \"$out\";; esac")


def qperf_client(ip: str, quick: bool, port: int = QPERF_PORT) -> str:
    return _retry(f"qperf -lp {port} -t {seconds(quick)} {ip} tcp_lat udp_lat")


def free_port() -> int:
    """A TCP port free on the host's loopback now (native runs share the host's ports)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _iperf3_received(text: str) -> dict[str, float]:
    """``end.sum_received`` of iperf3 -J (the retry loop may print failed attempts first)."""
    start = text.rfind('{\n\t"start"')
    try:
        data = json.loads(text[start if start >= 0 else 0:])
        got = data["end"]["sum_received"]
        return {k: float(got[k]) for k in ("bits_per_second", "lost_percent") if k in got}
    except (ValueError, KeyError, TypeError) as err:
        raise DriverError(f"cannot read iperf3 JSON: {text.strip()[-300:]!r}") from err


def parse_iperf3(text: str) -> float:
    """Gbit/s received, from iperf3 -J."""
    return _iperf3_received(text)["bits_per_second"] / 1e9


def parse_iperf3_udp(text: str) -> tuple[float, float]:
    """(Gbit/s received, % of datagrams lost), from iperf3 -u -J: the receiver's side,
    ``end.sum_received`` (``end.sum_sent`` is what the sender pushed, lost or not)."""
    got = _iperf3_received(text)
    if "lost_percent" not in got:
        raise DriverError(f"iperf3 printed no UDP loss (not a -u run?): {text.strip()[-300:]!r}")
    return got["bits_per_second"] / 1e9, got["lost_percent"]


_UNITS = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "sec": 1e6, "s": 1e6}


def parse_qperf(text: str) -> dict[str, float]:
    """{"tcp_lat": us, "udp_lat": us} from qperf's "latency  =  24.9 us" blocks."""
    out = {}
    for m in re.finditer(r"^(\w+):\s*\n\s*latency\s*=\s*([0-9.]+)\s*(ns|us|ms|sec|s)\b", text,
                         re.MULTILINE):
        out[m.group(1)] = float(m.group(2)) * _UNITS[m.group(3)]
    if not out:
        raise DriverError(f"cannot read qperf latencies: {text.strip()[-300:]!r}")
    return out


FIO_JOBS = {  # job name (also the metric) -> (fio rw mode, block size, unit)
    "rand_read_4k": ("randread", "4k", "IOPS"),
    "rand_write_4k": ("randwrite", "4k", "IOPS"),
    "seq_read_1m": ("read", "1M", "MiB/s"),
    "seq_write_1m": ("write", "1M", "MiB/s"),
}
FIO_DIR = "cumulo-bench-fio"


def fio(base: str, quick: bool) -> str:
    """The four fio jobs one after another (``--stonewall``) on one file in a fresh
    directory under ``base``, O_DIRECT through plain pread/pwrite (psync: no queue depth,
    the same engine on every platform), JSON squeezed of its whitespace: the output of a
    VM's exec comes back through the guest agent, so it is kept small (~10 KB)."""
    size = "64M" if quick else "512M"
    jobs = " ".join(f"--name={name} --rw={rw} --bs={bs} --stonewall"
                    for name, (rw, bs, _unit) in FIO_JOBS.items())
    return (f"d=$(mktemp -d {base}/{FIO_DIR}.XXXXXX) || exit 1; "
            f'fio --output-format=json --directory="$d" --filename=data --size={size} '
            f"--direct=1 --ioengine=psync --time_based --runtime={seconds(quick)} {jobs} "
            f"> \"$d/out\"; rc=$?; tr -d ' \\t\\n' < \"$d/out\"; rm -rf \"$d\"; exit $rc")


def parse_fio(text: str) -> dict[str, tuple[float, str]]:
    """metric -> (value, unit): IOPS of the 4 KiB random jobs, MiB/s of the 1 MiB
    sequential ones, from fio's JSON (``jobs[].read|write.iops|bw_bytes``)."""
    start = text.find("{")
    try:
        jobs = {j["jobname"]: j for j in json.loads(text[start:])["jobs"]}
    except (ValueError, KeyError, TypeError) as err:
        raise DriverError(f"cannot read fio JSON: {text.strip()[-300:]!r}") from err
    out = {}
    for name, (rw, _bs, unit) in FIO_JOBS.items():
        job = jobs.get(name)
        if job is None:
            raise DriverError(f"fio printed no {name} job: {sorted(jobs)}")
        if job.get("error"):
            raise DriverError(f"fio job {name} failed with error {job['error']}")
        side = job["write" if "write" in rw else "read"]
        value = float(side["iops"]) if unit == "IOPS" else float(side["bw_bytes"]) / 2**20
        out[name] = (value, unit)
    return out
