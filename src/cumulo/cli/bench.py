"""cumulo bench run|report|compare: the benchmark lab from the command line."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from cumulo.cli import output as o
from cumulo.client import Client

bench_app = typer.Typer(no_args_is_help=True, help="Benchmark lab: what each kind of "
                        "virtualization costs, measured on this host, with reports.")


@bench_app.command("run")
def bench_run(
        output: Annotated[Path, typer.Option("--output", "-o", help="results JSON to write")],
        platforms: Annotated[str, typer.Option(
            help="comma-separated: native, container, vm, appvm, vm-emulated-io, "
                 "appvm-app, appvm-generic (app VMs: boot, footprint, density only)")
        ] = "native,container",
        suites: Annotated[str, typer.Option(
            help="comma-separated: cpu, memory, network, disk, boot, footprint, density")
        ] = "cpu,memory,footprint",
        repeat: Annotated[int, typer.Option(help="repetitions of each workload")] = 3,
        quick: Annotated[bool, typer.Option(help="short runs, small problem sizes")] = False,
) -> None:
    """Run the workloads natively and in instances it launches; write raw samples."""
    from cumulo.lab.runner import Lab, make_plan

    plan = make_plan(platforms, suites, repeat, quick, output)   # before anything starts
    with Client(timeout=120) as c:
        c.server()   # unreachable daemon: one clear error, nothing launched
        lab = Lab(c, plan, lambda msg: o.say(msg))
        old_term = signal.signal(signal.SIGTERM, _interrupt)
        try:
            results = lab.run()
        except KeyboardInterrupt:
            o.say("interrupted: cleaning up")
            raise typer.Exit(130) from None
        finally:
            old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)  # cleanup must finish
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            failed = lab.cleanup()
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
            for f in failed:
                o.say(f"cleanup failed: {f}")
        results.save(plan.output)
    o.say(f"wrote {plan.output} ({sum(len(s.samples) for s in results.series)} samples, "
          f"{len(results.notes)} notes)")


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


@bench_app.command("report")
def bench_report(
        results: Annotated[Path, typer.Argument(help="results JSON of `cumulo bench run`")],
        html: Annotated[Path | None, typer.Option("--html", help="write an HTML report")] = None,
        markdown: Annotated[Path | None, typer.Option(
            "--markdown", help="write a Markdown report")] = None,
) -> None:
    """Tables, plots and conclusions (ratios to native with spread) from a results file."""
    from cumulo.lab import report, schema

    data = schema.load(results)
    sys.stdout.write(report.text(data))   # plain: never wrapped to the terminal width
    if html:
        report.write_html(data, html)
        o.say(f"wrote {html}")
    if markdown:
        report.write_markdown(data, markdown)
        o.say(f"wrote {markdown}")


@bench_app.command("compare")
def bench_compare(a: Annotated[Path, typer.Argument(help="results JSON (before)")],
                  b: Annotated[Path, typer.Argument(help="results JSON (after)")]) -> None:
    """The same figures side by side between two runs (two hosts, two versions)."""
    from cumulo.lab import report, schema

    sys.stdout.write(report.compare_text(schema.load(a), schema.load(b)))
