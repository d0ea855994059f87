"""Shared test set-up: markers that skip with a stated reason when the host lacks something."""

from __future__ import annotations

import os
import shutil

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    is_root = os.geteuid() == 0
    have_runtime = bool(shutil.which("runc") or shutil.which("crun")) and bool(
        shutil.which("conmon"))
    for item in items:
        if "root" in item.keywords and not is_root:
            item.add_marker(pytest.mark.skip(reason="needs root (namespaces, cgroups)"))
        if "runtime" in item.keywords and not have_runtime:
            item.add_marker(pytest.mark.skip(reason="needs runc or crun, and conmon"))
