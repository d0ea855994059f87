"""Project use cases: create, change, delete, and their usage against their limits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cumulo.domain import projects as rules
from cumulo.domain.models import Project
from cumulo.services.events import EventBus
from cumulo.store.projects import ProjectStore


class ProjectService:
    """Tenants: every instance, network, volume, image and operation belongs to one."""

    def __init__(self, store: ProjectStore, events: EventBus | None = None) -> None:
        self.store, self.events = store, events

    def _lifecycle(self, action: str, name: str) -> None:
        if self.events is not None:
            self.events.publish("lifecycle", {"action": f"project-{action}", "name": name},
                                name)

    def check(self, name: str) -> None:
        """NotFoundError unless the project exists (``default`` always does)."""
        if name != rules.DEFAULT:
            self.store.get(name)

    def get(self, name: str) -> Project:
        return self.store.get(name)

    def list(self) -> list[Project]:
        return self.store.list()

    def config(self, name: str) -> dict[str, str]:
        return self.store.get(name).config

    def create(self, name: str, description: str = "",
               config: Mapping[str, str] | None = None) -> Project:
        """A new project starts with ``rules.NEW_PROJECT`` (no privileged containers, the
        default project's images); ``config`` overrides or adds to it."""
        rules.validate_name(name)
        settings = {**rules.NEW_PROJECT, **_validated(config or {})}
        project = self.store.create(name, description, settings)
        self._lifecycle("created", name)
        return project

    def update(self, name: str, config: Mapping[str, str | None],
               description: str | None = None, replace: bool = False) -> Project:
        """Set (or with a None value unset) settings; ``replace``: the whole config."""
        changes = {k: None if v is None else rules.validate_setting(k, v)
                   for k, v in config.items()}
        project = self.store.update(name, changes, description, replace)
        self._lifecycle("updated", name)
        return project

    def delete(self, name: str) -> None:
        self.store.delete(name)
        self._lifecycle("deleted", name)

    def state(self, name: str) -> dict[str, dict[str, Any]]:
        """Each quota's limit (None: unlimited) and usage, as Incus's project state."""
        config = self.store.get(name).config
        usage = self.store.usage(name)
        out: dict[str, dict[str, Any]] = {}
        for key, kind in rules.LIMITS.items():
            used = usage.of(key)
            limit = config.get(key)
            out[key.removeprefix("limits.")] = {
                "limit": None if limit is None else _number(limit, kind),
                "usage": _number(str(used), kind)}
        out["volumes"] = {"limit": None, "usage": usage.volumes}
        out["security-groups"] = {"limit": None, "usage": usage.security_groups}
        out["images"] = {"limit": None, "usage": usage.images}
        return out


def _validated(config: Mapping[str, str]) -> dict[str, str]:
    return {k: rules.validate_setting(k, v) for k, v in config.items()}


def _number(text: str, kind: str) -> float | int:
    value = float(text)
    return value if kind == "cpu" else int(value)
