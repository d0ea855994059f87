"""A volume waits for an instance being created: its launch does not look for volumes
(the query is skipped on the launch path), so attaching one then is refused, not lost."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from cumulo.domain.models import Instance
from cumulo.errors import ConflictError
from cumulo.services.host import Services
from tests.unit.conftest import launch


def test_attaching_to_an_instance_still_being_created_is_refused(svc: Services) -> None:
    svc.volumes.create("default", "data", "1GiB")
    image = svc.store.get_image("testimg")
    svc.store.add_instance(Instance(project="default", name="new", type="container",
                                    image=image.fingerprint))   # CREATING, as a launch
    with pytest.raises(ConflictError, match="'new' is still being created"):
        svc.volumes.attach("default", "data", "new", "/data")
    assert svc.volumes.get("default", "data").attachments == []


def test_once_launched_it_takes_the_volume(api: TestClient, svc: Services) -> None:
    svc.volumes.create("default", "data", "1GiB")
    launch(api, "c1")
    vol = svc.volumes.attach("default", "data", "c1", "/data")
    assert [(a.instance, a.path) for a in vol.attachments] == [("c1", "/data")]
