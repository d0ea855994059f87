"""cumulo remote ... and cumulo migrate: other hosts, tokens, moving a VM between hosts."""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

import typer

from cumulo.cli import output as o
from cumulo.cli.complete import Instance
from cumulo.cli.settings import ProjectOpt
from cumulo.client import Client
from cumulo.domain.units import format_size

remote_app = typer.Typer(no_args_is_help=True, help="Other hosts this one trusts.")

FormatOpt = Annotated[o.Format, typer.Option("--format", help="table or json")]


@remote_app.command("token")
def remote_token(name: Annotated[str | None, typer.Option(help="to revoke it by")] = None
                 ) -> None:
    """Issue a token for another host: it may migrate instances here, nothing else
    (API users get theirs from `cumulo identity create`). Printed once, kept hashed."""
    with Client() as c:
        t = c.issue_token(name)
    o.say(f"Token {t['name']} (give it to `cumulo remote add` on the other host):")
    print(t["token"])


@remote_app.command("add")
def remote_add(name: str, url: Annotated[str, typer.Argument(help="https://HOST:PORT")],
               token: Annotated[str, typer.Option(help="from `cumulo remote token` there")],
               fingerprint: Annotated[str | None, typer.Option(
                   help="sha256 of its certificate (its cumulod logs it; `cumulo info`"
                        " there shows it); default: the one it presents now")] = None
               ) -> None:
    """Trust another cumulod: its certificate is pinned, then it is checked (reachable,
    the pinned certificate, the token accepted)."""
    with Client() as c:
        r = c.add_remote(name, url, token, fingerprint)
    how = "given" if fingerprint else "trusted on first use"
    o.say(f"Added remote {name} ({url}); certificate sha256 fingerprint ({how}):\n"
          f"  {r['fingerprint'] or '(none: plain HTTP)'}")


@remote_app.command("list")
def remote_list(fmt: FormatOpt = o.Format.table) -> None:
    """Remotes this host trusts."""
    with Client() as c:
        rows = c.remotes()
    o.table(rows, [("NAME", "name"), ("URL", "url"), ("FINGERPRINT", "fingerprint")], fmt)


@remote_app.command("remove")
def remote_remove(name: str) -> None:
    """Forget a remote."""
    with Client() as c:
        c.delete_remote(name)


def migrate(name: Instance, to: Annotated[str, typer.Option("--to", help="remote name")],
            live: Annotated[bool, typer.Option(
                "--live/--stop-first", help="VMs: pre-copy while the guest runs (default);"
                " containers: CRIU pre-dump, then the final dump (default), or with"
                " --stop-first stop, move and start again")] = True,
            bandwidth: Annotated[str | None, typer.Option(
                help="cap on the stream per second, e.g. 100MiB (default: none)")] = None,
            postcopy: Annotated[bool, typer.Option(
                "--postcopy", help="after the first pass, run the guest there at once and"
                " pull the pages it still lacks (cannot be cancelled after the switch)")
                                ] = False,
            project: ProjectOpt = None) -> None:
    """Move an instance to another host; it continues there where it was.

    VMs: QEMU live migration. Containers: CRIU checkpoint, root changes and restore;
    --stop-first moves a container cold (its processes restart). Ctrl-C (or
    `cumulo operation cancel ID`) cancels it: the instance keeps running here."""
    from rich.progress import BarColumn, Progress, TextColumn

    with Client() as c, Progress(TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.percentage:>3.0f}%"),
                                 console=o.err, transient=True) as bar:
        task = bar.add_task(f"migrating {name}", total=1.0)

        def show(op: dict[str, Any]) -> None:
            bar.update(task, completed=op.get("progress", 0.0),
                       description=op.get("message") or f"migrating {name}")

        op = c.migrate(name, to, live, project, bandwidth=bandwidth, postcopy=postcopy,
                       wait=False)
        try:
            op = c.wait(op, show, timeout=1800)
        except KeyboardInterrupt:
            bar.stop()
            o.say(f"Cancelling the migration of {name} (operation {op['id']})...")
            if _cancel(c, op["id"]):
                raise typer.Exit(130) from None
            op = c.get(f"/operations/{op['id']}")
    r = op.get("resources") or {}
    if r.get("image_sent"):
        o.say(f"Sent the image of {name} to {to} (it lacked it)")
    if r.get("restarted"):
        o.say(f"Moved {name} to {to} (stopped and started again): total"
              f" {r.get('total_time_ms')} ms, downtime {r.get('downtime_ms')} ms,"
              f" {format_size(int(r.get('transferred') or 0))} sent")
        return
    mode = " (post-copy)" if r.get("postcopy") else ""
    o.say(f"Migrated {name} to {to}{mode}: total {r.get('total_time_ms')} ms, downtime"
          f" {r.get('downtime_ms')} ms, {format_size(int(r.get('transferred') or 0))}"
          f" sent in {r.get('passes')} pass(es)")
    if r.get("note"):
        o.say(f"({r['note']})")

def _cancel(c: Client, op_id: str) -> bool:
    """Cancel the migration and say how it ended; False: too late, it had finished."""
    from cumulo.errors import CumuloError

    with contextlib.suppress(CumuloError):   # it ended in between: the wait says how
        c.cancel_operation(op_id)
    try:
        c.wait(c.get(f"/operations/{op_id}"), timeout=300)
    except CumuloError as err:
        o.say(f"Migration ended: {err}")
        return True
    o.say("Too late to cancel: the migration had finished")
    return False
