"""The OpenAPI document, generated from the routes and checked in at docs/openapi.json.

Regenerate after an API change: ``.venv/bin/python -m cumulo.api.openapi > docs/openapi.json``
(tests/unit/test_openapi.py fails when the checked-in file drifts).
"""

from __future__ import annotations

import json
import sys
from typing import Any, cast

from cumulo.api.app import create_app
from cumulo.services.host import Services


def document() -> dict[str, Any]:
    # Routes only touch the services when called, so none are needed to list them.
    return create_app(cast(Services, None)).openapi()


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
