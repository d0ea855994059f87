"""The README and docs/*.md as a user meets them: the README's first command run as written
(the demo on the default daemon); in every doc, each command of its sessions is one the CLI
takes and each link leads somewhere; the blocks marked ``<!-- replay -->`` run for real
against a fresh daemon and print what the doc shows."""

from __future__ import annotations

import re
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.system import doc_transcripts as dt
from tests.system.conftest import BIN, running_daemon

ROOT = Path(__file__).parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
REPLAYED = [doc for doc in DOCS if any(b.replay for b in dt.blocks(doc))]
pytestmark = [pytest.mark.system]


@pytest.mark.root
@pytest.mark.runtime
@pytest.mark.slow
def test_demo_script(tmp_path: Path) -> None:
    name = f"demo-{uuid.uuid4().hex[:6]}"
    r = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], capture_output=True,
                       text=True, timeout=300, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                                    "DEMO_NAME": name})
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"hello from {name}" in r.stdout
    assert "uid=0(root)" in r.stdout  # root inside the container...
    assert "cgroup_version" in r.stdout and "Built busybox" in r.stderr
    # ...and the demo cleaned up after itself
    assert name not in r.stdout.rsplit("$ cumulo list", 1)[1]
    assert not list(Path("/sys/fs/cgroup/memory").glob(f"*/default_{name}"))


def test_readme_starts_with_the_two_commands() -> None:
    first = dt.blocks(ROOT / "README.md")[:2]
    assert [b.lines for b in first] == [["bash scripts/install.sh && bash scripts/demo.sh"],
                                        ["bash scripts/test.sh"]]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_doc_commands_and_links(doc: Path) -> None:
    refused = []
    for block in dt.blocks(doc):
        for command in block.commands():
            for program, args in dt.invocations(command):
                if (why := dt.cli_error(program, args)) is not None:
                    refused.append(f"{doc.name}:{block.line}: $ {command}\n    {why}")
    assert not refused, "\n".join(refused)
    assert not dt.broken_links(doc), dt.broken_links(doc)


def normal(lines: list[str]) -> list[str]:
    """Lines without trailing blanks; image fingerprints (12 hex digits) as <fp>."""
    out = [re.sub(r"\b[0-9a-f]{12}\b", "<fp>", line.rstrip()) for line in lines]
    while out and not out[-1]:
        out.pop()
    return out


def interleaves(shown: list[str], out: list[str], err: list[str]) -> bool:
    """``shown`` is ``out`` and ``err`` merged, each in its order (the two pipes race)."""
    ways = {(0, 0)}
    for line in shown:
        ways = {(i + 1, j) for i, j in ways if i < len(out) and out[i] == line} | \
               {(i, j + 1) for i, j in ways if j < len(err) and err[j] == line}
    return (len(out), len(err)) in ways


@pytest.mark.root
@pytest.mark.runtime
@pytest.mark.slow
@pytest.mark.parametrize("doc", REPLAYED, ids=lambda p: p.name)
def test_replay_marked_sessions(doc: Path, tmp_path: Path) -> None:
    """Each ``$ `` line through bash; what it printed on stdout and stderr, then
    ``(exit code N)`` when not 0, as the sessions were recorded. The blocks of one doc share
    one daemon, in order."""
    with running_daemon(tmp_path) as d:
        env = {**d.env, "PATH": f"{BIN}:/usr/sbin:/usr/bin:/sbin:/bin"}
        for block in (b for b in dt.blocks(doc) if b.replay):
            for step in block.steps():
                r = subprocess.run(["bash", "-c", step.command], cwd=tmp_path, env=env,
                                   capture_output=True, text=True, timeout=300)
                shown = normal(step.output)
                if r.returncode:
                    assert shown[-1:] == [f"(exit code {r.returncode})"], \
                        f"{doc.name}:{block.line}: $ {step.command}\n{r.stdout}{r.stderr}"
                    shown = shown[:-1]
                out, err = normal(r.stdout.splitlines()), normal(r.stderr.splitlines())
                assert interleaves(shown, out, err), \
                    f"{doc.name}:{block.line}: $ {step.command}\nshown: {shown}\n" \
                    f"stdout: {out}\nstderr: {err}"
