"""Local credentials stay local: SyneriseBackend never sends the password of a local user
with a usable password, nor of any staff user, to Synerise (``UPSTREAM_PASSWORDS``)."""

from __future__ import annotations

import pytest
from django.contrib.auth import authenticate

from django_synerise.backends import SyneriseBackend
from tests.factories import make_account, make_user
from tests.fixtures_services import PASSWORD, add_client, synerise_settings

pytestmark = pytest.mark.django_db

LOCAL_PASSWORD = "local-Passw0rd-only-here"
ADMIN_LOGIN = "/admin/login/"


def _login_bodies(fake) -> list[dict]:
    return [r.json for r in fake.requests if "login" in r.path]


def test_local_superuser_admin_login_sends_nothing_upstream(fake_synerise, client):
    """Observation 3: a local superuser signing into /admin/login/ used to send its username
    and local password to Synerise (one login call with ``customId``)."""
    make_user("root", password=LOCAL_PASSWORD, is_staff=True, is_superuser=True)
    response = client.post(ADMIN_LOGIN + "?next=/admin/",
                           {"username": "root", "password": LOCAL_PASSWORD, "next": "/admin/"})
    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert client.session["_auth_user_backend"] == "django.contrib.auth.backends.ModelBackend"
    assert fake_synerise.count() == 0

    client.logout()
    response = client.post(ADMIN_LOGIN, {"username": "root", "password": "typo" + LOCAL_PASSWORD})
    assert response.status_code == 200 and "_auth_user_id" not in client.session
    assert fake_synerise.count() == 0


@pytest.mark.parametrize("typed", ["boss@corp.example", "BOSS@corp.example", "boss"])
def test_a_local_user_is_recognised_by_username_or_email(fake_synerise, client, typed):
    make_user("boss", email="boss@corp.example", password=LOCAL_PASSWORD)
    client.post(ADMIN_LOGIN, {"username": typed, "password": LOCAL_PASSWORD})
    assert authenticate(None, email=typed, password=LOCAL_PASSWORD) is None
    assert fake_synerise.count() == 0


def test_staff_without_a_local_password_is_never_sent(fake_synerise, client):
    """A staff user linked to Synerise (no usable local password) is not signed in through
    Synerise either: staff credentials never leave the site by default."""
    synerise_client = add_client(fake_synerise, "staff@example.com", custom_id="staff-1")
    staff = make_user("staff", email="other@example.com", is_staff=True)
    make_account(staff, client_id=synerise_client.client_id, email="staff@example.com",
                 custom_id="staff-1")
    for typed in ("staff@example.com", "staff-1", "staff"):
        response = client.post(ADMIN_LOGIN, {"username": typed, "password": PASSWORD})
        assert response.status_code == 200 and "_auth_user_id" not in client.session
    assert fake_synerise.count() == 0


def test_synerise_users_still_sign_in_through_forms(fake_synerise, client):
    add_client(fake_synerise, "ann@example.com")
    response = client.post("/accounts/login/", {"username": "ann@example.com",
                                                "password": PASSWORD})
    assert response.status_code == 302
    assert fake_synerise.count("login") == 1
    # Signed in again once the user exists locally (unusable password): still Synerise.
    client.logout()
    response = client.post("/accounts/login/", {"username": "ann@example.com",
                                                "password": PASSWORD})
    assert response.status_code == 302
    assert fake_synerise.count("login") == 2


def test_policy_all_restores_the_old_behaviour(fake_synerise, client, settings):
    synerise_settings(settings, UPSTREAM_PASSWORDS="all")
    make_user("root", password=LOCAL_PASSWORD, is_staff=True, is_superuser=True)
    client.post(ADMIN_LOGIN, {"username": "root", "password": LOCAL_PASSWORD})
    (body,) = _login_bodies(fake_synerise)
    assert (body["customId"], body["password"]) == ("root", LOCAL_PASSWORD)


def test_policy_non_staff_sends_local_users_but_never_staff(fake_synerise, settings):
    synerise_settings(settings, UPSTREAM_PASSWORDS="non_staff")
    make_user("moving", email="moving@example.com", password=LOCAL_PASSWORD)
    make_user("admin", email="admin@example.com", password=LOCAL_PASSWORD, is_superuser=True)
    authenticate(None, username="moving@example.com", password="x")
    assert fake_synerise.count("login") == 1
    authenticate(None, username="admin@example.com", password="x")
    assert fake_synerise.count("login") == 1


def test_policy_linked_sends_only_identifiers_of_linked_accounts(fake_synerise, settings):
    synerise_settings(settings, UPSTREAM_PASSWORDS="linked")
    linked = add_client(fake_synerise, "linked@example.com")
    add_client(fake_synerise, "new@example.com")
    make_account(make_user("linked"), client_id=linked.client_id, email="linked@example.com")
    assert authenticate(None, email="new@example.com", password=PASSWORD) is None
    assert fake_synerise.count("login") == 0
    assert authenticate(None, username="Linked@example.com", password=PASSWORD) is not None
    assert fake_synerise.count("login") == 1


def test_provider_tokens_are_not_affected(fake_synerise):
    token = fake_synerise.provider_token("GOOGLE", subject="g-1", email="root@example.com")
    make_user("root", email="root@example.com", password=LOCAL_PASSWORD, is_staff=True)
    user = authenticate(None, identity_provider="GOOGLE", identity_provider_token=token)
    assert user is not None and fake_synerise.count("login") == 1


def test_may_send_password_is_the_one_decision(settings):
    backend = SyneriseBackend()
    make_user("local", email="local@example.com", password=LOCAL_PASSWORD)
    make_user("nopass", email="nopass@example.com")
    assert not backend.may_send_password("local@example.com")
    assert backend.may_send_password("nopass@example.com")
    assert backend.may_send_password("nobody@example.com")
    synerise_settings(settings, UPSTREAM_PASSWORDS="linked")
    assert not backend.may_send_password("nobody@example.com")


def test_the_local_users_check_works_for_an_ordered_user_model(monkeypatch):
    """A user model with ``Meta.ordering`` (common in custom ones) must not put ORDER BY in
    the halves of the check's UNION: SQLite refuses it, and every password sign-in failed.
    Nor on the whole (Django 6.1 orders a UNION by Meta.ordering): nothing needs a sort."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from django_synerise.backends import local_users_for

    monkeypatch.setattr(get_user_model()._meta, "ordering", ["-username"])
    local = make_user("ordered", email="ordered@example.com", password=LOCAL_PASSWORD)
    linked = make_account(make_user("other"), email="Ordered@Example.com")
    with CaptureQueriesContext(connection) as queries:
        found = local_users_for("ORDERED@example.com")
    assert sorted(user.pk for user in found) == sorted([local.pk, linked.user_id])
    (sql,) = [q["sql"] for q in queries.captured_queries]
    assert "ORDER BY" not in sql.upper(), sql
