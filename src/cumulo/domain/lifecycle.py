"""The instance lifecycle as an explicit transition table, with one guard."""

from __future__ import annotations

from enum import StrEnum

from cumulo.errors import InvalidStateError


class State(StrEnum):
    CREATING = "creating"
    STOPPED = "stopped"
    RUNNING = "running"
    PAUSED = "paused"
    ERROR = "error"


class Action(StrEnum):
    START = "start"
    STOP = "stop"
    RESTART = "restart"
    PAUSE = "pause"
    RESUME = "resume"
    DELETE = "delete"
    EXEC = "exec"
    UPDATE = "update"
    CHECKPOINT = "checkpoint"
    RESTORE = "restore"


# action -> states it may start from
ALLOWED: dict[Action, frozenset[State]] = {
    Action.START: frozenset({State.STOPPED, State.ERROR}),
    Action.STOP: frozenset({State.RUNNING, State.PAUSED}),
    Action.RESTART: frozenset({State.RUNNING, State.STOPPED}),
    Action.PAUSE: frozenset({State.RUNNING}),
    Action.RESUME: frozenset({State.PAUSED}),
    Action.DELETE: frozenset({State.STOPPED, State.ERROR}),
    Action.EXEC: frozenset({State.RUNNING}),
    Action.UPDATE: frozenset({State.STOPPED, State.RUNNING, State.PAUSED}),
    Action.CHECKPOINT: frozenset({State.RUNNING, State.PAUSED}),
    Action.RESTORE: frozenset({State.STOPPED}),
}

# action -> state reached when it succeeds (None: the instance is gone or unchanged)
RESULT: dict[Action, State | None] = {
    Action.START: State.RUNNING,
    Action.STOP: State.STOPPED,
    Action.RESTART: State.RUNNING,
    Action.PAUSE: State.PAUSED,
    Action.RESUME: State.RUNNING,
    Action.DELETE: None,
    Action.EXEC: None,
    Action.UPDATE: None,
    Action.CHECKPOINT: State.STOPPED,
    Action.RESTORE: State.RUNNING,
}


def guard(name: str, current: State | str, action: Action) -> None:
    """Raise ``InvalidStateError`` unless ``action`` is allowed from ``current``."""
    state = State(current)
    if state not in ALLOWED[action]:
        raise InvalidStateError(name, state.value, action.value)
