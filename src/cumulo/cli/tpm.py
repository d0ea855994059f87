"""cumulo tpm baseline|verify, and the vTPM part of `cumulo info NAME --tpm`."""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

import typer

from cumulo.cli import output as o
from cumulo.cli.complete import Instance
from cumulo.cli.settings import ProjectOpt
from cumulo.client import Client

tpm_app = typer.Typer(no_args_is_help=True,
                      help="Measured boot: a VM's vTPM baseline and its verification.")
FormatOpt = Annotated[o.Format, typer.Option("--format", help="table or json")]
SHOWN = 10          # PCRs 0-9: firmware, boot manager, GRUB


def _short(digest: str) -> str:
    return digest[:16] + "…" if digest else "-"


def show(name: str, project: str | None, fmt: o.Format) -> None:
    """`info NAME --tpm`: PCRs 0-9, the event log per PCR, whether the log adds up."""
    with Client() as c:
        t = c.tpm(name, project)
    if fmt == o.Format.json:
        o.emit_json(t)
        return
    per_pcr = Counter(e["pcr"] for e in t["events"] if e["type"] != "EV_NO_ACTION")
    o.table([{"pcr": n, "sha256": t["pcrs"][str(n)], "events": per_pcr.get(n, 0)}
             for n in range(SHOWN)], [("PCR", "pcr"), ("SHA256", "sha256"),
                                      ("EVENTS", "events")], fmt)
    # the events one a line, unwrapped: descriptions are long (GRUB's commands)
    width = max((len(e["type"]) for e in t["events"]), default=4)
    print(f"PCR  {'TYPE':<{width}}  {'SHA256':<17}  MEASURED")
    for e in t["events"]:
        print(f"{e['pcr']:>3}  {e['type']:<{width}}  {_short(e['sha256']):<17}"
              f"  {e['description'][:100]}")
    bad = t["log_mismatched_pcrs"]
    print(f"event log: {len(t['events'])} events, "
          + (f"does NOT replay to PCR {', '.join(map(str, bad))}" if bad
             else "replays to the PCRs"))


@tpm_app.command("baseline")
def baseline(name: Instance, project: ProjectOpt = None) -> None:
    """Record the VM's current boot (PCRs 0-9 and their events) as its baseline."""
    with Client() as c:
        b = c.tpm_baseline(name, project)
    print(f"Recorded the measured-boot baseline of {name}: PCRs 0-9, {b['events']} events")


@tpm_app.command("verify")
def verify(name: Instance, fmt: FormatOpt = o.Format.table,
           project: ProjectOpt = None) -> None:
    """Compare the VM's current boot with its baseline; exit 1 when a PCR changed."""
    with Client() as c:
        v = c.tpm_verify(name, project)
    if fmt == o.Format.json:
        o.emit_json(v)
    else:
        _verdict(name, v)
    if not v["ok"]:
        raise typer.Exit(1)


def _verdict(name: str, v: dict[str, Any]) -> None:
    if v["ok"]:
        print(f"{name}: the boot chain matches the baseline of {v['baseline_at']}")
        return
    print(f"{name}: the boot chain CHANGED since the baseline of {v['baseline_at']}")
    for c in v["changed"]:
        print(f"  PCR {c['pcr']} ({c['meaning']}): {_short(c['baseline'])} ->"
              f" {_short(c['current'])}")
        for e in c["events"]:
            print(f"    new: {e[:100]}")
