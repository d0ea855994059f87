"""What ``cumulo launch`` and ``cumulo create`` ask the daemon and print when done.

The mapping from the command's values to the create request, shared by the full CLI
(main.py) and its fast path (fast.py). It imports nothing at run time, so the fast path
starts as before (no typer, httpx, pathlib: tests/unit/test_cli_fast.py). Checking and
reading the values (``--ip`` without ``--network``, ``--ssh-key`` files, ``--app``)
stays in main.py, which the fast path never takes on.
"""

from __future__ import annotations

TYPE_CHECKING = False   # as typing's, without importing typing (see fast.py)
if TYPE_CHECKING:
    from typing import Any

    from cumulo.client import Client


def nics(networks: list[str] | None, ips: list[str] | None = None,
         ingress: str | None = None, egress: str | None = None
         ) -> list[dict[str, Any]] | None:
    """The NICs of ``--network`` (repeatable), each with its ``--ip`` and the
    ``--limit-*``: [] for ``none`` (loopback only), None without ``--network`` (the
    daemon picks: the network "default" if there is one)."""
    if networks == ["none"]:
        return []
    if not networks:
        return None
    ips = list(ips or [])
    return [{"network": n, "ip": ips[i] if i < len(ips) else None, "limit_ingress": ingress,
             "limit_egress": egress} for i, n in enumerate(networks)]


def create(c: Client, name: str, image: str, *, start: bool, type_: str,
           command: list[str] | None, project: str | None,
           networks: list[dict[str, Any]] | None, limits: dict[str, Any] | None = None,
           privileged: bool = False, options: dict[str, str | None] | None = None,
           pool: str | None = None, copy: bool = False, disk: str | None = None,
           ephemeral: bool = False, placement_group: str | None = None,
           ssh_key: str | None = None, target: str | None = None,
           seed: dict[str, Any] | None = None) -> str:
    """Create ``name`` from ``image`` (and start it with ``start``); the line to print.
    Options left None are not sent."""
    c.create(name, image, type=type_, limits=limits or {}, privileged=privileged,
             command=command or None, start=start, project=project,
             options={k: v for k, v in (options or {}).items() if v is not None},
             networks=networks,
             storage={"pool": pool, "copy": copy, "disk": disk,
                      **({"ephemeral": True} if ephemeral else {}),
                      **({"placement_group": placement_group} if placement_group else {})},
             ssh_key=ssh_key, target=target, **(seed or {}))
    return f"{'Launched' if start else 'Created'} {name}"
