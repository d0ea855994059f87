"""Reports of a results file: tables, matplotlib plots, conclusions computed from the data.

One small document model (headings, paragraphs, tables, images) renders to plain text
(the terminal), Markdown and HTML, so the three always say the same thing. Every figure
comes from the raw samples through stats.py; nothing is written in advance except the
published findings we compare against (issue 7), each checked against this run's data.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cumulo.errors import InvalidInputError
from cumulo.lab import stats
from cumulo.lab.schema import PLATFORMS, SUITES, Results, Series

NATIVE = "native"
VM_PLATFORMS = ("vm", "appvm", "vm-emulated-io", "appvm-app", "appvm-generic")
APP_VMS = ("appvm-app", "appvm-generic")   # single-purpose VMs: the app as PID 1, no exec
FULL_VMS = ("vm", "vm-emulated-io", "appvm")   # a whole guest (init, agent, tools)
MUCH = 0.5   # "much lighter": at most this fraction of a full VM's host memory
# Within this fraction of native counts as "close to native" when checking the claims.
CLOSE = 0.05
SLIGHTLY = 0.15   # "slightly slower": less than this fraction below native


@dataclass(frozen=True)
class H:
    level: int
    text: str


@dataclass(frozen=True)
class P:
    text: str


@dataclass(frozen=True)
class UL:
    items: list[str]


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Img:
    path: str
    alt: str


Block = H | P | UL | Table | Img


@dataclass
class Doc:
    blocks: list[Block] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(H(level, text))

    def p(self, text: str) -> None:
        self.blocks.append(P(text))

    def bullets(self, items: Sequence[str]) -> None:
        self.blocks.append(UL(list(items)))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(Table(header, rows))

    def image(self, path: str, alt: str) -> None:
        self.blocks.append(Img(path, alt))


# figures
def fmt(v: float) -> str:
    a = abs(v)
    if a >= 1e9:
        return f"{v / 2**30:.2f} Gi"
    if a >= 1e6:
        return f"{v / 2**20:.1f} Mi"
    if a >= 100 or v == int(v):
        return f"{v:.0f}"
    return f"{v:.3g}"


def label(s: Series) -> str:
    x = f" ({s.x_label}={s.x:g})" if s.x is not None and s.x_label else ""
    return f"{s.metric}{x}"


def platform_heading(platform: str, accel: str) -> str:
    if platform in VM_PLATFORMS and accel != "kvm":
        return f"{platform} (TCG emulation, no usable KVM)"
    return platform


def ordered(results: Results) -> list[str]:
    seen = {s.platform for s in results.series}
    return [p for p in PLATFORMS if p in seen]


TO_HOST = "_to_host"   # network metrics of the instance-to-host path
# Not in a suite's standing: the UDP loss with an unlimited sender (iperf3 -b 0) is how far
# the sender outran the receiver, a by-product of the UDP throughput figure already there.
NOT_STANDING = ("iperf3_udp_loss", "iperf3_udp_loss" + TO_HOST)


def native_of(results: Results, s: Series) -> Series | None:
    """Native's series of the same figure. Native has no instance: its host-to-host path
    is the loopback, so an instance-to-host figure compares with native's loopback one."""
    if s.platform == NATIVE:
        return None
    return results.find(NATIVE, s.suite, s.metric, s.x) or \
        results.find(NATIVE, s.suite, s.metric.removesuffix(TO_HOST), s.x)


def ratio_of(results: Results, s: Series) -> stats.Ratio | None:
    n = native_of(results, s)
    if n is None or not n.samples or not s.samples:
        return None
    try:
        return stats.ratio(s.samples, n.samples)
    except ValueError:
        return None


def ratio_text(r: stats.Ratio | None) -> str:
    return f"{r.value:.3f} [{r.low:.3f}-{r.high:.3f}]" if r else ""


@dataclass(frozen=True)
class Standing:
    """How one platform does against native over one suite's metrics."""
    platform: str
    suite: str
    performance: float     # geometric mean of (native-relative) performance, 1.0 = native
    metrics: int
    low: float             # the same geometric mean over the pessimistic ends of the spreads
    high: float            # ... and over the optimistic ends


def standings(results: Results, suite: str) -> list[Standing]:
    """Per platform: the geometric mean over the suite's metrics of performance relative
    to native (ratio for higher-is-better metrics, its inverse otherwise), closest first."""
    out = []
    for platform in ordered(results):
        if platform == NATIVE:
            continue
        logs: list[tuple[float, float, float]] = []
        for s in results.series:
            if s.platform != platform or s.suite != suite or s.metric in NOT_STANDING:
                continue
            r = ratio_of(results, s)
            if r and r.value > 0 and r.low > 0:
                v = (r.value, r.low, r.high) if s.higher_is_better else \
                    (1 / r.value, 1 / r.high, 1 / r.low)
                logs.append((math.log(v[0]), math.log(v[1]), math.log(v[2])))
        if logs:
            mean = [math.exp(sum(t[i] for t in logs) / len(logs)) for i in range(3)]
            out.append(Standing(platform, suite, mean[0], len(logs), mean[1], mean[2]))
    return sorted(out, key=lambda st: abs(math.log(st.performance)))


def pct(perf: float) -> str:
    d = (perf - 1) * 100
    return f"{abs(d):.1f}% {'faster' if d > 0 else 'slower'} than native" if abs(d) >= 0.05 \
        else "the same as native"


def conclusions(results: Results) -> list[str]:
    lines = []
    accel = results.environment.accel
    for suite in SUITES:
        st = standings(results, suite)
        if st:
            best = st[0]
            rest = "; ".join(f"{platform_heading(s.platform, accel)} {pct(s.performance)}"
                             for s in st[1:])
            lines.append(f"{suite}: {platform_heading(best.platform, accel)} is closest to "
                         f"native, {pct(best.performance)} (geometric mean of {best.metrics} "
                         f"metrics)" + (f"; then {rest}" if rest else ""))
    pss = _medians(results, "footprint", "pss")
    if pss:
        order = sorted(pss, key=lambda p: pss[p])
        parts = [f"{p} {pss[p] / 2**20:.1f} MiB" for p in order]
        lines.append("footprint: host memory (PSS) of an idle instance: " + ", ".join(parts)
                     + (f"; {order[-1]} needs {pss[order[-1]] / pss[order[0]]:.0f}x "
                        f"what {order[0]} needs" if len(order) > 1 and pss[order[0]] else ""))
    boot = _medians(results, "boot", "launch_to_ready")
    if boot:
        fastest = sorted(boot, key=lambda q: boot[q])
        lines.append("boot: launch to ready " + ", ".join(
            f"{platform_heading(p, accel)} {boot[p]:.2f}s" for p in fastest))
    dens = _medians(results, "density", "idle_per_gib")
    if dens:
        most = sorted(dens, key=lambda q: -dens[q])
        counts = {s.platform: int(s.x or 0) for s in results.series
                  if s.suite == "density" and s.metric == "total_pss"}
        lines.append("density (measured): idle instances per GiB of host memory " + ", ".join(
            f"{platform_heading(p, accel)} {dens[p]:.1f} ({counts.get(p, 0)} launched)"
            for p in most)
            + (f"; {most[0]} fits {dens[most[0]] / dens[most[-1]]:.0f}x as many as "
               f"{most[-1]}" if len(most) > 1 and dens[most[-1]] else ""))
    return lines


def round_trips(results: Results) -> list[str]:
    """The claim "hypervisors clearly slower in network round trips", from the qperf
    latencies: per VM platform, the geometric mean of its latency ratios to native (and
    to the container, when the run has one)."""
    lat = ("tcp_lat", "udp_lat")
    accel = results.environment.accel

    def slowdown(p: str, ref: str) -> tuple[float, float, float] | None:
        logs = []
        for m in lat:
            a, b = results.find(p, "network", m), results.find(ref, "network", m)
            if a and b and a.samples and b.samples:
                try:
                    r = stats.ratio(a.samples, b.samples)
                except ValueError:
                    continue
                if r.low > 0:
                    logs.append((math.log(r.value), math.log(r.low), math.log(r.high)))
        if not logs:
            return None
        v, lo, hi = (math.exp(sum(t[i] for t in logs) / len(logs)) for i in range(3))
        return v, lo, hi

    out = []
    for p in VM_PLATFORMS:
        vs_native = slowdown(p, NATIVE)
        if vs_native is None:
            continue
        v, lo, _hi = vs_native
        ct = slowdown(p, "container")
        extra = f"; {ct[0]:.1f}x the container's" if ct else ""
        figures = (f"{p} round trips (qperf tcp_lat, udp_lat) take {v:.1f}x native's "
                   f"[spread {lo:.1f}-{_hi:.1f}]{extra}")
        if accel != "kvm":
            out.append(f"Hypervisors clearly slower in network round trips: NOT COMPARABLE "
                       f"here - {figures}, on TCG (emulation, no usable KVM); the study "
                       f"measured KVM.")
        else:
            clearly = lo > 1 + CLOSE and (ct is None or ct[1] > 1 + CLOSE)
            out.append(f"Hypervisors clearly slower in network round trips: "
                       f"{'AGREES' if clearly else 'DISAGREES'} - {figures} (clearly = "
                       f"even the spread's fast end more than {CLOSE:.0%} slower).")
    return out or ["Hypervisors clearly slower in network round trips: not measured (no VM "
                   "platform ran the network suite)."]


def lighter(results: Results) -> str:
    """The claim "single-purpose VMs are much lighter" (than full VMs): the app VM on the
    kernel built for app VMs (else on Debian's) against a full VM, from host memory (PSS)
    with its spread; boot, what each boots, threads, density and the container beside."""
    claim = "Single-purpose VMs are much lighter than full VMs"
    pss = _medians(results, "footprint", "pss")
    app = next((p for p in APP_VMS if p in pss), None)
    full = next((p for p in FULL_VMS if p in pss), None)
    a = results.find(app, "footprint", "pss") if app else None
    f = results.find(full, "footprint", "pss") if full else None
    if app is None or full is None or a is None or f is None:
        return (f"{claim}: not measured (needs the footprint suite on an app VM, appvm-app "
                "or appvm-generic, and on a full VM, vm).")
    r = stats.ratio(a.samples, f.samples)
    if r.high <= MUCH:
        verdict = "AGREES"
    elif r.low > MUCH:
        verdict = "DISAGREES"
    else:
        verdict = f"INCONCLUSIVE (the spread reaches {MUCH:g}x)"
    mib = {p: f"{v / 2**20:.1f} MiB" for p, v in pss.items()}
    parts = [f"{app} needs {mib[app]} of host memory (PSS), {r.value:.2f}x {full}'s "
             f"{mib[full]} [spread {r.low:.2f}-{r.high:.2f}]"]
    for suite, metric, what, show in (
            ("boot", "launch_to_ready", "launch to ready", "{:.2f}s"),
            ("footprint", "image_bytes", "boots from", "bytes"),
            ("footprint", "threads", "threads", "{:.0f}"),
            ("density", "idle_per_gib", "idle per GiB", "{:.1f}")):
        m = _medians(results, suite, metric)
        if app in m and full in m and m[full]:
            x, y = ((f"{fmt(m[q])}B" if show == "bytes" else show.format(m[q]))
                    for q in (app, full))
            parts.append(f"{what} {x} vs {y} ({m[app] / m[full]:.2f}x)")
    if app == APP_VMS[0] and APP_VMS[1] in pss and pss[APP_VMS[1]]:
        parts.append(f"on Debian's kernel ({APP_VMS[1]}) {mib[APP_VMS[1]]}, "
                     f"{pss[APP_VMS[1]] / pss[full]:.2f}x {full}'s: the kernel built for app "
                     f"VMs takes {pss[app] / pss[APP_VMS[1]]:.2f}x")
    if pss.get("container"):
        parts.append(f"still {pss[app] / pss['container']:.0f}x the container's "
                     f"{mib['container']}")
    tcg = ("; on TCG, where QEMU's translated-code buffer counts in every VM's memory"
           if results.environment.accel != "kvm" else "")
    return (f"{claim}: {verdict} - " + "; ".join(parts)
            + f" (much = at most {MUCH:g}x the full VM's host memory{tcg}).")


def _medians(results: Results, suite: str, metric: str) -> dict[str, float]:
    return {s.platform: stats.summarize(s.samples).median for s in results.series
            if s.suite == suite and s.metric == metric and s.samples}


def verdict(st: Standing) -> str:
    """AGREES when the median is within CLOSE of native; DISAGREES when even the
    optimistic end of the spread is not; INCONCLUSIVE when the spread straddles the line."""
    def close(x: float) -> bool:
        return abs(x - 1) <= CLOSE

    if close(st.performance):
        return "AGREES"
    if st.low <= 1 + CLOSE and st.high >= 1 - CLOSE:
        return f"INCONCLUSIVE (the spread reaches within {CLOSE:.0%} of native)"
    return "DISAGREES"


def published(results: Results) -> list[str]:
    """The findings quoted in issue 7, each checked against this run."""
    perf = {(s.platform, s.suite): s for suite in SUITES for s in standings(results, suite)}
    accel = results.environment.accel
    out = []
    for suite in ("cpu", "memory", "network", "disk"):
        c = perf.get(("container", suite))
        if c is None:
            out.append(f"Containers close to native in {suite}: not measured in this run.")
        else:
            out.append(f"Containers close to native in {suite}: {verdict(c)} - container "
                       f"{pct(c.performance)}, spread {c.low:.3f}-{c.high:.3f} of native "
                       f"(close = within {CLOSE:.0%}).")
    vm = [(p, perf[(p, "cpu")]) for p in VM_PLATFORMS if (p, "cpu") in perf]
    if not vm:
        out.append("Hypervisors slightly slower than native in CPU: not measured (no VM "
                   "platform in this run).")
    for p, v in vm:
        if accel != "kvm":
            out.append(f"Hypervisors slightly slower than native in CPU: NOT COMPARABLE here - "
                       f"{p} runs on TCG (emulation, no usable KVM) and is "
                       f"{pct(v.performance)}; the study measured hardware-assisted KVM.")
        else:
            agree = 1 - SLIGHTLY <= v.performance < 1
            out.append(f"Hypervisors slightly slower than native in CPU: "
                       f"{'AGREES' if agree else 'DISAGREES'} - {p} {pct(v.performance)} "
                       f"(slightly = less than {SLIGHTLY:.0%}).")
    out += round_trips(results)
    pss = _medians(results, "footprint", "pss")
    vms = [p for p in VM_PLATFORMS if p in pss]
    if "container" in pss and vms:
        smaller = all(pss["container"] < pss[p] for p in vms)
        out.append(f"Containers have a smaller footprint than VMs: "
                   f"{'AGREES' if smaller else 'DISAGREES'} - container "
                   f"{pss['container'] / 2**20:.1f} MiB PSS vs " + ", ".join(
                       f"{p} {pss[p] / 2**20:.1f} MiB" for p in vms) + ".")
    out.append(lighter(results))
    return out


# plots
def plots(results: Results, outdir: Path, stem: str) -> list[tuple[Path, str]]:
    """PNG files (Agg backend, no display) next to the report; returns (path, caption)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir.mkdir(parents=True, exist_ok=True)
    made: list[tuple[Path, str]] = []
    accel = results.environment.accel
    plats = ordered(results)

    def save(fig: object, name: str, caption: str) -> None:
        path = outdir / f"{stem}-{name}.png"
        fig.savefig(path, dpi=90)  # type: ignore[attr-defined]
        plt.close(fig)  # type: ignore[arg-type]
        made.append((path, caption))

    hpl = [s for s in results.series if s.suite == "cpu" and s.metric == "hpl"]
    if hpl:
        fig, ax = plt.subplots(figsize=(7, 4))
        for p in plats:
            ss = sorted((s for s in hpl if s.platform == p), key=lambda s: s.x or 0)
            if not ss:
                continue
            sm = [stats.summarize(s.samples) for s in ss]
            xs = [s.x or 0 for s in ss]
            ax.errorbar(xs, [m.median for m in sm],
                        yerr=[[m.median - m.q1 for m in sm], [m.q3 - m.median for m in sm]],
                        marker="o", capsize=3, label=platform_heading(p, accel))
        ax.set_xlabel("problem size N")
        ax.set_ylabel("GFLOPS (median, IQR)")
        ax.set_title("HPL (LINPACK, hpcc): GFLOPS against problem size")
        ax.legend()
        ax.grid(alpha=0.3)
        save(fig, "hpl", "HPL GFLOPS against problem size N, per platform")

    stream = [s for s in results.series if s.suite == "memory" and s.metric.startswith("stream")]
    if stream:
        kernels = ["stream_copy", "stream_scale", "stream_add", "stream_triad"]
        fig, ax = plt.subplots(figsize=(7, 4))
        width = 0.8 / max(1, len(plats))
        for i, p in enumerate(plats):
            meds, errs = [], []
            for k in kernels:
                s = next((s for s in stream if s.platform == p and s.metric == k), None)
                m = stats.summarize(s.samples) if s and s.samples else None
                meds.append(m.median if m else 0)
                errs.append(m.iqr / 2 if m else 0)
            ax.bar([j + i * width for j in range(len(kernels))], meds, width, yerr=errs,
                   capsize=2, label=platform_heading(p, accel))
        ax.set_xticks([j + width * (len(plats) - 1) / 2 for j in range(len(kernels))],
                      [k.split("_")[1] for k in kernels])
        ax.set_ylabel("GB/s (median)")
        ax.set_title("STREAM (hpcc, one process)")
        ax.legend()
        save(fig, "stream", "STREAM copy/scale/add/triad per platform")

    others = [p for p in plats if p != NATIVE]
    for suite in SUITES:
        rows = [(s, r) for s in results.series if s.suite == suite and s.platform in others
                and (r := ratio_of(results, s)) is not None]
        if not rows:
            continue
        metrics = list(dict.fromkeys(label(s) for s, _ in rows))
        fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(metrics) + 2) + 3, 4))
        width = 0.8 / max(1, len(others))
        for i, p in enumerate(others):
            vals = {label(s): r for s, r in rows if s.platform == p}
            xs = [j + i * width for j, m in enumerate(metrics) if m in vals]
            rs = [vals[m] for m in metrics if m in vals]
            if rs:
                ax.bar(xs, [r.value for r in rs], width,
                       yerr=[[r.value - r.low for r in rs], [r.high - r.value for r in rs]],
                       capsize=2, label=platform_heading(p, accel))
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks([j + width * (len(others) - 1) / 2 for j in range(len(metrics))],
                      metrics, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("ratio to native (1 = native)")
        ax.set_title(f"{suite}: ratio to native, median with quartile range")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))   # off the bars
        fig.tight_layout()
        save(fig, f"{suite}-ratio", f"{suite}: every figure as a ratio to native")

    pss = _medians(results, "footprint", "pss")
    if pss:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        names = list(pss)
        ax.bar([platform_heading(p, accel) for p in names], [pss[p] / 2**20 for p in names])
        ax.set_ylabel("MiB (PSS, median)")
        ax.set_title("Host memory of an idle instance")
        fig.tight_layout()
        save(fig, "footprint", "host memory (PSS) of an idle instance")

    total = [s for s in results.series if s.suite == "density" and s.metric == "total_pss"]
    if total:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for p in plats:
            ss = sorted((s for s in total if s.platform == p), key=lambda s: s.x or 0)
            if ss:
                ax.plot([s.x or 0 for s in ss],
                        [stats.summarize(s.samples).median / 2**20 for s in ss],
                        marker="o", label=platform_heading(p, accel))
        ax.set_xlabel("idle instances running")
        ax.set_ylabel("MiB (PSS of all of them)")
        ax.set_yscale("log")
        ax.set_title("Density: host memory of idle instances, measured")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        save(fig, "density", "host memory (PSS) against the number of idle instances")
    return made


# the document
def document(results: Results, images: Sequence[tuple[str, str]] = ()) -> Doc:
    d = Doc()
    env, accel = results.environment, results.environment.accel
    d.h(1, "Cumulo benchmark lab")
    host = env.host
    d.p(f"Run {results.created}: platforms {', '.join(results.settings.platforms)}; suites "
        f"{', '.join(results.settings.suites)}; {results.settings.repeat} repetitions"
        f"{' (quick)' if results.settings.quick else ''}. Host: kernel {host.get('kernel')}, "
        f"{host.get('cpus')} CPUs, {fmt(float(host.get('memory_bytes') or 0))}B memory, "
        f"accelerator for VMs: {accel}. Tools: "
        + ", ".join(f"{k} {v}" for k, v in env.tools.items()) + ".")
    if accel != "kvm" and any(p in VM_PLATFORMS for p in ordered(results)):
        d.p("VM figures on this host are TCG emulation figures (no usable KVM): they measure "
            "QEMU's binary translation, not a hardware-assisted hypervisor.")
    d.h(2, "Conclusions (computed from the data)")
    d.bullets(conclusions(results) or ["no figures to compare"])
    d.h(2, "Against the published findings")
    d.p("Published studies of hypervisors versus lightweight virtualization (native, KVM, "
        "LXC, Docker, OSv) concluded that containers are close to native, hypervisors "
        "slightly slower in CPU and clearly slower in network round trips, and that "
        "single-purpose VMs (OSv) are much lighter than full VMs.")
    d.bullets(published(results))
    for suite in SUITES:
        ss = [s for s in results.series if s.suite == suite]
        if not ss:
            continue
        d.h(2, f"Suite {suite}")
        rows = []
        for s in sorted(ss, key=lambda s: (s.metric, s.x or 0, PLATFORMS.index(s.platform)
                                           if s.platform in PLATFORMS else 99)):
            m = stats.summarize(s.samples)
            rows.append([label(s), platform_heading(s.platform, accel), s.unit, fmt(m.median),
                         f"{fmt(m.q1)}-{fmt(m.q3)}", f"{fmt(m.min)}-{fmt(m.max)}", str(m.n),
                         ratio_text(ratio_of(results, s))])
        d.table(["metric", "platform", "unit", "median", "IQR", "min-max", "n",
                 "ratio to native [spread]"], rows)
        if suite == "network":
            d.p("Native network figures are the host's loopback (no NIC at all). For an "
                "instance the server runs in it and the client in a container on the same "
                "Cumulo network (a container's path: two veth pairs and a bridge; a VM's: "
                "its emulated or virtio NIC, a tap, the bridge, a veth). Their ratio is "
                "what the virtual network path costs against no network path, not against "
                "a physical NIC as in the published study. Metrics ending in _to_host "
                "have the client in the instance and the server on the host side of the "
                "network (its gateway address on the bridge); their ratio is to native's "
                "loopback figure. UDP: iperf3 -u -b 0 with 1400-byte datagrams, the "
                "throughput the receiver took in and the % of datagrams lost.")
        if suite == "disk" and any(s.platform in VM_PLATFORMS for s in ss):
            d.p("fio opens its file with O_DIRECT everywhere, but a VM's root disk is a qcow2 "
                "file QEMU opens with its default cache mode (writeback): the guest's direct "
                "I/O still goes through the host's page cache, which native and container "
                "runs bypass. VM disk figures are the guest's I/O path on top of cached "
                "host files, not the disk itself.")
        for path, caption in images:
            if _plot_name(Path(path).stem).startswith(_plot_prefix(suite)):
                d.image(path, caption)
    if results.notes:
        d.h(2, "Notes")
        d.bullets([f"{n.platform} / {n.suite}: {n.message}" for n in results.notes])
    d.p("Ratios are median(platform) / median(native); the spread runs from q1(platform) / "
        "q3(native) to q3(platform) / q1(native). Lower is better for footprint, boot, "
        "network latencies and UDP loss.")
    return d


PLOT_NAMES = ("hpl", "stream", "footprint", "density", *(f"{s}-ratio" for s in SUITES))


def _plot_name(stem: str) -> str:
    """The plot a PNG is, from its file stem ``<report stem>-<plot>``: the report's own
    stem may hold dashes too (``my-lab-hpl``), so match the known plot names at the end."""
    return next((n for n in PLOT_NAMES if stem == n or stem.endswith(f"-{n}")), "")


def _plot_prefix(suite: str) -> tuple[str, ...]:
    return {"cpu": ("hpl", "cpu"), "memory": ("stream", "memory"), "network": ("network",),
            "footprint": ("footprint",)}.get(suite, (suite,))


def render_text(d: Doc) -> str:
    out: list[str] = []
    for b in d.blocks:
        if isinstance(b, H):
            out += ["", b.text, ("=" if b.level == 1 else "-") * len(b.text)]
        elif isinstance(b, P):
            out.append(b.text)
        elif isinstance(b, UL):
            out += [f"- {item}" for item in b.items]
        elif isinstance(b, Table):
            widths = [max(len(c) for c in col) for col in zip(b.header, *b.rows, strict=True)]
            for row in [b.header, *b.rows]:
                out.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
                           .rstrip())
        else:
            out.append(f"[plot: {b.path}]")
    return "\n".join(out).strip() + "\n"


def render_markdown(d: Doc) -> str:
    out: list[str] = []
    for b in d.blocks:
        if isinstance(b, H):
            out += [f"{'#' * b.level} {b.text}", ""]
        elif isinstance(b, P):
            out += [b.text, ""]
        elif isinstance(b, UL):
            out += [f"- {item}" for item in b.items] + [""]
        elif isinstance(b, Table):
            out.append("| " + " | ".join(b.header) + " |")
            out.append("|" + "---|" * len(b.header))
            out += ["| " + " | ".join(row) + " |" for row in b.rows]
            out.append("")
        else:
            out += [f"![{b.alt}]({b.path})", ""]
    return "\n".join(out)


def render_html(d: Doc) -> str:
    e = html.escape
    out = ["<!doctype html><meta charset=utf-8><title>Cumulo benchmark lab</title>",
           "<style>body{font-family:sans-serif;max-width:60em;margin:auto}"
           "td,th{border:1px solid #ccc;padding:2px 6px}table{border-collapse:collapse}"
           "</style>"]
    for b in d.blocks:
        if isinstance(b, H):
            out.append(f"<h{b.level}>{e(b.text)}</h{b.level}>")
        elif isinstance(b, P):
            out.append(f"<p>{e(b.text)}</p>")
        elif isinstance(b, UL):
            out.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in b.header) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>"
                                 for r in b.rows) + "</table>")
        else:
            out.append(f'<figure><img src="{e(b.path)}" alt="{e(b.alt)}">'
                       f"<figcaption>{e(b.alt)}</figcaption></figure>")
    return "\n".join(out) + "\n"


def text(results: Results) -> str:
    return render_text(document(results))


def _write(results: Results, target: Path, render: str) -> list[Path]:
    target = target.expanduser()
    if target.is_dir() or not target.parent.is_dir():
        raise InvalidInputError(f"cannot write the report {target}: no such directory or a "
                                "directory given")
    made = plots(results, target.parent, target.stem)
    doc = document(results, [(p.name, c) for p, c in made])
    body = render_html(doc) if render == "html" else render_markdown(doc)
    try:
        target.write_text(body)
    except OSError as err:
        raise InvalidInputError(f"cannot write the report {target}: {err.strerror}") from err
    return [p for p, _ in made]


def write_html(results: Results, target: Path) -> list[Path]:
    """The HTML report and its PNG plots (named ``<stem>-*.png``) in the same directory."""
    return _write(results, target, "html")


def write_markdown(results: Results, target: Path) -> list[Path]:
    return _write(results, target, "markdown")


# compare
def compare_text(a: Results, b: Results) -> str:
    d = Doc()
    d.h(1, "Cumulo benchmark lab: comparison")
    d.p(f"A: {a.created}, kernel {a.environment.host.get('kernel')}, accel "
        f"{a.environment.accel}. B: {b.created}, kernel {b.environment.host.get('kernel')}, "
        f"accel {b.environment.accel}.")
    rows = []
    keys = list(dict.fromkeys((s.platform, s.suite, s.metric, s.x) for s in a.series + b.series))
    for platform, suite, metric, x in keys:
        sa, sb = a.find(platform, suite, metric, x), b.find(platform, suite, metric, x)
        s = sa or sb
        assert s is not None
        ma = stats.summarize(sa.samples).median if sa and sa.samples else None
        mb = stats.summarize(sb.samples).median if sb and sb.samples else None
        rows.append([suite, label(s), platform, s.unit,
                     fmt(ma) if ma is not None else "-", fmt(mb) if mb is not None else "-",
                     f"{mb / ma:.3f}" if ma and ma > 0 and mb is not None and mb >= 0
                     else "",   # a negative median (an old file's untimed rate): no ratio
                     ratio_text(ratio_of(a, sa)) if sa else "",
                     ratio_text(ratio_of(b, sb)) if sb else ""])
    d.table(["suite", "metric", "platform", "unit", "A median", "B median", "B/A",
             "A vs native", "B vs native"], rows)
    return render_text(d)
