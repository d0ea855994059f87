"""Read the sessions in README.md and docs/*.md: code blocks, the commands in them, links.

A transcript block holds ``$ COMMAND`` lines, each followed by what it printed; a ``bash``
block holds commands to type (``cumulo ...``, ``[optional parts]`` allowed). A block whose
fence comes right after a ``<!-- replay -->`` line is replayed for real by the test.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from cumulo import daemon
from cumulo.cli.main import command_app

REPLAY_MARK = "<!-- replay -->"
CLI_NAMES = {"cumulo", "cumulod"}


@dataclass
class Step:
    command: str
    output: list[str] = field(default_factory=list)


@dataclass
class Block:
    lang: str
    line: int  # 1-based line of the opening fence
    lines: list[str]
    replay: bool

    def steps(self) -> list[Step]:
        """The ``$ `` commands (continuation lines joined) and the lines each printed."""
        steps: list[Step] = []
        lines = iter(self.lines)
        for text in lines:
            if text.startswith("$ "):
                cmd = text[2:]
                while cmd.endswith("\\"):
                    cmd = cmd[:-1] + " " + next(lines).strip()
                steps.append(Step(cmd))
            elif steps:
                steps[-1].output.append(text)
        return steps

    def commands(self) -> list[str]:
        """Every command line of the block: ``$ `` lines, and in a bash block its lines."""
        if any(text.startswith("$ ") for text in self.lines):
            return [s.command for s in self.steps()]
        if self.lang not in ("bash", "sh"):
            return []
        out: list[str] = []
        pending = ""
        for text in self.lines:
            pending += text.strip()
            if pending.endswith("\\"):
                pending = pending[:-1] + " "
                continue
            out.append(re.sub(r"\[([^\]]*)\]", r"\1", pending))  # synopsis: [--opt X]
            pending = ""
        return out


def blocks(doc: Path) -> list[Block]:
    found: list[Block] = []
    current: Block | None = None
    previous = ""
    for n, text in enumerate(doc.read_text().splitlines(), 1):
        if current is None and text.startswith("```"):
            current = Block(text[3:].strip(), n, [], previous.strip() == REPLAY_MARK)
        elif current is not None and text.startswith("```"):
            found.append(current)
            current = None
        elif current is not None:
            current.lines.append(text)
        if text.strip():
            previous = text
    assert current is None, f"{doc.name}: a code block opened at line {current.line} never ends"
    return found


def invocations(command: str) -> list[tuple[str, list[str]]]:
    """``(program, args)`` of each cumulo/cumulod in a shell line (after sudo, a wrapper...);
    a line that shows completion (``<TAB>``) is unfinished on purpose and names none."""
    if "<TAB>" in command:
        return []
    lex = shlex.shlex(command, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    try:
        tokens = list(lex)
    except ValueError:  # an unbalanced quote: the line was shortened in the transcript
        return []
    found: list[tuple[str, list[str]]] = []
    segment: list[str] = []
    for token in [*tokens, ";"]:
        if token and set(token) <= set(";&|()<>"):
            names = [i for i, t in enumerate(segment) if t.rsplit("/", 1)[-1] in CLI_NAMES]
            if names:
                i = names[0]
                found.append((segment[i].rsplit("/", 1)[-1], segment[i + 1:]))
            segment = []
        else:
            segment.append(token)
    return found


def cli_error(program: str, args: list[str]) -> str | None:
    """Why the CLI would refuse these arguments before doing anything, or None."""
    if program == "cumulod":
        try:
            daemon.parse_args(args)
        except SystemExit as err:
            return f"cumulod refuses {args} (exit {err.code})"
        return None
    cmd = typer.main.get_command(command_app([]))  # every command; typer's own click
    path = ["cumulo"]
    rest = list(args)
    while isinstance(cmd, TyperGroup):
        alone = {"--help", *(o for p in cmd.params for o in p.opts if "completion" in o)}
        if rest and rest[0] in alone:  # options that need no subcommand
            return None
        group_opt = next((p for p in cmd.params if rest and rest[0].split("=", 1)[0] in p.opts),
                         None)
        if group_opt is not None:       # a group's own option (cumulo --project P ...)
            taken = rest.pop(0)
            if "=" not in taken and not getattr(group_opt, "is_flag", False) and rest:
                rest.pop(0)
            continue
        if not rest or rest[0].startswith("-"):
            return f"{' '.join(path)}: a subcommand is missing in {args}"
        sub = cmd.get_command(typer.Context(cmd), rest[0])
        if sub is None:
            return f"{' '.join(path)} has no command {rest[0]!r}"
        path.append(rest.pop(0))
        cmd = sub
    try:
        cmd.make_context(" ".join(path), list(rest))
    except TyperException as err:  # click's UsageError: no such option, a missing argument...
        return f"{' '.join(path)} {rest}: {err}"
    return None


def slug(heading: str) -> str:
    """The anchor GitHub makes for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    fenced = False
    found = set()
    for text in doc.read_text().splitlines():
        if text.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#+ (.*)", text)):
            found.add(slug(m.group(1)))
    return found


def broken_links(doc: Path) -> list[str]:
    """Relative links (and their #anchors) that lead nowhere."""
    fenced = False
    broken = []
    for text in doc.read_text().splitlines():
        if text.startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path) if path else doc
            missing_anchor = bool(anchor) and dest.suffix == ".md" and (
                not dest.exists() or anchor not in anchors(dest))
            if not dest.exists() or missing_anchor:
                broken.append(target)
    return broken
