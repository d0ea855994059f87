"""The API contract is a checked-in file; this fails when the code drifts from it."""

from __future__ import annotations

import json
from pathlib import Path

from cumulo.api.openapi import document, render

CHECKED_IN = Path(__file__).parents[2] / "docs" / "openapi.json"


def test_openapi_matches_checked_in_file() -> None:
    assert CHECKED_IN.read_text() == render(), (
        "docs/openapi.json is stale: run "
        "`.venv/bin/python -m cumulo.api.openapi > docs/openapi.json` and review the diff")


def test_every_route_documents_its_errors() -> None:
    doc = json.loads(CHECKED_IN.read_text())
    for path, methods in doc["paths"].items():
        for method, spec in methods.items():
            assert "400" in spec["responses"] or method == "get", (method, path)
            assert spec.get("summary"), (method, path)
    assert document()["info"]["title"] == "Cumulo"
