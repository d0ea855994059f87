"""Token names: `cumulo remote token` without --name always gets a free name."""

from __future__ import annotations

from cumulo.services.host import Services
from cumulo.services.migrations import next_token_name


def test_default_names_stay_free_after_revokes(svc: Services) -> None:
    names = [svc.migrations.issue_token(None)[0] for _ in range(3)]
    assert names == ["token-1", "token-2", "token-3"]
    svc.migrations.revoke_token("token-1")
    # two tokens left: a count would say token-3, which exists
    assert svc.migrations.issue_token(None)[0] == "token-4"
    svc.migrations.issue_token("from-b")
    assert svc.migrations.issue_token(None)[0] == "token-5"
    assert sorted(svc.migrations.token_names()) == [
        "from-b", "token-2", "token-3", "token-4", "token-5"]


def test_next_name_ignores_other_names() -> None:
    assert next_token_name([]) == "token-1"
    assert next_token_name(["token-9", "token-x", "token-10b", "mytoken-40"]) == "token-10"
