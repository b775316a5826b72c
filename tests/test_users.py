"""Users, roles and tokens: every action checks the role; tokens are stored hashed."""

from __future__ import annotations

from pathlib import Path

import pytest

from concilium.errors import AccessDenied, ConfigurationError
from concilium.governance.users import UserStore


def test_tokens_authenticate_roles_gate_actions_and_revocation_works(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "users.sqlite")
    admin = store.add_user("root", "admin")
    analyst = store.add_user("dr-lee", "analyst")
    approver = store.add_user("officer-1", "approver")
    assert len({admin, analyst, approver}) == 3 and len(analyst) >= 40
    lee = store.authenticate(analyst)
    assert (lee.name, lee.role) == ("dr-lee", "analyst")
    store.require(lee, "propose")
    with pytest.raises(AccessDenied, match="may not approve; that needs the role approver"):
        store.require(lee, "approve")
    store.require(store.authenticate(approver), "approve")
    store.require(store.authenticate(admin), "manage_users")
    with pytest.raises(AccessDenied, match="unknown API token"):
        store.authenticate(analyst + "x")
    store.revoke("dr-lee")
    with pytest.raises(AccessDenied, match="revoked"):
        store.authenticate(analyst)
    store.close()
    raw = (tmp_path / "users.sqlite").read_bytes()
    assert analyst.encode() not in raw and admin.encode() not in raw  # only hashes stored


def test_owners_decide_which_roles_may_use_each_dataset(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "users.sqlite")
    lee = store.authenticate(store.add_user("dr-lee", "analyst"))
    with pytest.raises(AccessDenied, match="may not use dataset 'admissions'"):
        store.require_dataset(lee, "admissions")
    store.grant("admissions", "analyst")
    store.require_dataset(lee, "admissions")
    for bad, message in [(("x", "root"), "role must be one of"),
                         (("bad name!", "admin"), "letters, digits"),
                         (("dr-lee", "admin"), "exists already")]:
        with pytest.raises(ConfigurationError, match=message):
            store.add_user(*bad)
    with pytest.raises(ConfigurationError, match="unknown action"):
        store.require(lee, "delete_everything")
