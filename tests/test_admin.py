"""Admin: read-only, never shows the token, constant query count, filters, search, actions."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_synerise.admin import (
    ClientTokenAdmin,
    SyneriseAccountInline,
    SyneriseUserAdminMixin,
    humanize_expires_in,
    provider_label,
)
from django_synerise.models import ClientToken, IdentityProvider, SyneriseAccount, TokenStatus
from tests.factories import make_account, make_token, make_user

TOKENS_URL = reverse("admin:django_synerise_clienttoken_changelist")
ACCOUNTS_URL = reverse("admin:django_synerise_syneriseaccount_changelist")
BACKEND = "django.contrib.auth.backends.ModelBackend"


@pytest.fixture
def superuser(db):
    return make_user("root", is_staff=True, is_superuser=True)


@pytest.fixture
def admin_client_(client, superuser):
    client.force_login(superuser, backend=BACKEND)
    return client


def staff_with(*codenames: str):
    user = make_user(is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="django_synerise",
                                  codename__in=codenames)
    )
    return get_user_model().objects.get(pk=user.pk)


def secrets_of(row: ClientToken) -> list[str]:
    return [row.plaintext, row.encrypted_token, *row.plaintext.split(".")]


def changelist_ids(response) -> set[int]:
    return {obj.pk for obj in response.context["cl"].result_list}


# ------------------------------------------------------------------ query count


def _count_queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200
    return len(ctx.captured_queries)


def _make_many(n: int) -> None:
    now = timezone.now()
    for i in range(n):
        make_token(expires_in=60 * (i % 120) - 600, now=now,
                   status=TokenStatus.NEEDS_LOGIN if i % 7 == 0 else TokenStatus.ACTIVE)


@pytest.mark.django_db
@pytest.mark.parametrize("url", [TOKENS_URL, ACCOUNTS_URL,
                                 TOKENS_URL + "?expiring=1h&status=active",
                                 ACCOUNTS_URL + "?token__status=active"])
def test_changelist_query_count_does_not_grow_with_rows(admin_client_, url):
    _make_many(2)
    admin_client_.get(url)                         # warm up session / activity middleware
    small = _count_queries(admin_client_, url)
    _make_many(198)
    assert ClientToken.objects.count() == 200
    large = _count_queries(admin_client_, url)
    assert large == small


# ------------------------------------------------------------------ never shows the token


@pytest.mark.django_db
def test_pages_never_contain_the_token_or_ciphertext(admin_client_):
    row = make_token(make_account(client_id="777123"))
    pages = [
        TOKENS_URL,
        reverse("admin:django_synerise_clienttoken_change", args=[row.pk]),
        ACCOUNTS_URL,
        reverse("admin:django_synerise_syneriseaccount_change", args=[row.account_id]),
        reverse("admin:auth_user_change", args=[row.account.user_id]),
    ]
    for url in pages:
        response = admin_client_.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        for secret in secrets_of(row):
            assert secret not in html, url
        assert "gAAAAA" not in html, url
        assert "777123" in html, url           # the page did render the row


@pytest.mark.django_db
def test_change_page_shows_fingerprint_and_key_state(admin_client_, settings):
    row = make_token()
    url = reverse("admin:django_synerise_clienttoken_change", args=[row.pk])
    fingerprint = hashlib.sha256(row.encrypted_token.encode()).hexdigest()[:8]
    html = admin_client_.get(url).content.decode()
    assert fingerprint in html
    assert "primary" in html
    settings.SYNERISE = {**settings.SYNERISE, "TOKEN_ENCRYPTION_KEYS": [
        Fernet.generate_key().decode(), *settings.SYNERISE["TOKEN_ENCRYPTION_KEYS"]]}
    assert "older key #1" in admin_client_.get(url).content.decode()
    settings.SYNERISE = {**settings.SYNERISE, "TOKEN_ENCRYPTION_KEYS": [
        Fernet.generate_key().decode()]}
    assert "unreadable" in admin_client_.get(url).content.decode()


# ------------------------------------------------------------------ read-only


@pytest.mark.django_db
def test_admin_is_read_only(admin_client_):
    row = make_token()
    assert admin_client_.get(reverse("admin:django_synerise_clienttoken_add")).status_code == 403
    assert admin_client_.get(
        reverse("admin:django_synerise_syneriseaccount_add")).status_code == 403
    url = reverse("admin:django_synerise_clienttoken_change", args=[row.pk])
    response = admin_client_.post(url, {"status": "revoked", "failure_count": 9})
    assert response.status_code == 403
    row.refresh_from_db()
    assert row.status == TokenStatus.ACTIVE and row.failure_count == 0


@pytest.mark.django_db
def test_only_superusers_delete(client, superuser):
    row = make_token()
    model_admin = admin.site.get_model_admin(ClientToken)

    class Req:
        pass

    request = Req()
    request.user = staff_with("view_clienttoken", "change_clienttoken", "delete_clienttoken")
    assert not model_admin.has_delete_permission(request, row)
    request.user = superuser
    assert model_admin.has_delete_permission(request, row)
    client.force_login(superuser, backend=BACKEND)
    url = reverse("admin:django_synerise_clienttoken_delete", args=[row.pk])
    assert client.post(url, {"post": "yes"}).status_code == 302
    assert not ClientToken.objects.filter(pk=row.pk).exists()


@pytest.mark.django_db
def test_actions_need_change_permission(client):
    make_token()
    viewer = staff_with("view_clienttoken")
    client.force_login(viewer, backend=BACKEND)
    response = client.get(TOKENS_URL)
    assert response.status_code == 200
    assert "revoke_action" not in response.content.decode()
    operator = staff_with("view_clienttoken", "change_clienttoken")
    client.force_login(operator, backend=BACKEND)
    html = client.get(TOKENS_URL).content.decode()
    assert "revoke_action" in html and "refresh_now_action" in html


# ------------------------------------------------------------------ filters and search


@pytest.mark.django_db
def test_expiring_filter_and_status_and_provider_filters(admin_client_):
    now = timezone.now()
    in_10m = make_token(expires_in=600, now=now)
    in_40m = make_token(expires_in=2400, now=now)
    in_3h = make_token(expires_in=3 * 3600, now=now)
    expired = make_token(expires_in=-60, now=now, status=TokenStatus.NEEDS_LOGIN)
    google = make_token(make_account(identity_provider=IdentityProvider.GOOGLE),
                        expires_in=7200, now=now)

    assert changelist_ids(admin_client_.get(TOKENS_URL + "?expiring=15m")) == {in_10m.pk}
    assert changelist_ids(admin_client_.get(TOKENS_URL + "?expiring=1h")) == {
        in_10m.pk, in_40m.pk}
    assert changelist_ids(admin_client_.get(TOKENS_URL + "?expiring=expired")) == {expired.pk}
    assert changelist_ids(admin_client_.get(TOKENS_URL + "?status=needs_login")) == {
        expired.pk}
    assert changelist_ids(
        admin_client_.get(TOKENS_URL + "?account__identity_provider=GOOGLE")) == {google.pk}
    assert len(changelist_ids(admin_client_.get(TOKENS_URL))) == 5
    assert in_3h.pk in changelist_ids(admin_client_.get(TOKENS_URL))


@pytest.mark.django_db
def test_search_by_username_email_client_id_and_account_email(admin_client_):
    a = make_token(make_account(make_user("alice", email="alice@shop.example"),
                                client_id="5550001", email="alice.syn@example.org"))
    b = make_token(make_account(make_user("bob", email="bob@shop.example"),
                                client_id="5550002"))
    for query, expected in [("alice", {a.pk}), ("bob@shop", {b.pk}), ("5550002", {b.pk}),
                            ("alice.syn", {a.pk}), ("shop.example", {a.pk, b.pk}),
                            ("555000", set())]:
        assert changelist_ids(admin_client_.get(TOKENS_URL, {"q": query})) == expected, query
    assert {o.pk for o in admin_client_.get(ACCOUNTS_URL, {"q": "alice"})
            .context["cl"].result_list} == {a.account_id}


@pytest.mark.django_db
def test_columns_render_humanised_expiry(admin_client_):
    make_token(make_account(client_id="8880001"), expires_in=-120)
    make_token(make_account(client_id="8880002"), expires_in=3000)
    html = admin_client_.get(TOKENS_URL).content.decode()
    assert "expired" in html
    assert re.search("in (49|50)\xa0minutes", html)


def test_humanize_expires_in():
    now = timezone.now()
    assert humanize_expires_in(now - timedelta(seconds=1), now) == "expired"
    assert humanize_expires_in(now, now) == "expired"
    assert humanize_expires_in(now + timedelta(minutes=14, seconds=5), now) == "in 14\xa0minutes"
    assert humanize_expires_in(now + timedelta(hours=2, minutes=3), now) == (
        "in 2\xa0hours, 3\xa0minutes")
    assert humanize_expires_in(None) == "unknown"


# ------------------------------------------------------------------ user admin inline


@pytest.mark.django_db
def test_user_admin_has_the_account_inline_through_the_mixin(admin_client_, rf, superuser):
    user_admin = admin.site.get_model_admin(get_user_model())
    assert isinstance(user_admin, SyneriseUserAdminMixin)
    request = rf.get("/")
    request.user = superuser
    inlines = user_admin.get_inlines(request, None)
    assert inlines.count(SyneriseAccountInline) == 1            # never added twice

    class Twice(SyneriseUserAdminMixin, admin.ModelAdmin):
        inlines = [SyneriseAccountInline]

    assert Twice(get_user_model(), admin.AdminSite()).get_inlines(request, None) == [
        SyneriseAccountInline]
    row = make_token(make_account(client_id="9990001"), expires_in=-5,
                     status=TokenStatus.NEEDS_LOGIN)
    html = admin_client_.get(
        reverse("admin:auth_user_change", args=[row.account.user_id])).content.decode()
    assert "9990001" in html and "expired" in html and "Needs login" in html
    html = admin_client_.get(
        reverse("admin:auth_user_change", args=[make_user().pk])).content.decode()
    assert "9990001" not in html


def test_importing_the_admin_leaves_the_user_admin_alone():
    # A project without its own user admin: after setup, the user admin is still Django's
    # own class, whatever the app order (the package used to re-register a subclass).
    code = (
        "import django; django.setup()\n"
        "from django.contrib import admin\n"
        "from django.contrib.auth import get_user_model\n"
        "from django.contrib.auth.admin import UserAdmin\n"
        "import django_synerise.admin\n"
        "registered = type(admin.site.get_model_admin(get_user_model()))\n"
        "print(registered is UserAdmin, registered.__module__)\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, cwd=Path(__file__).resolve().parent.parent, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["True", "django.contrib.auth.admin"], result.stdout


# ------------------------------------------------------------------ actions


def _post_action(client, url, action, ids):
    return client.post(url, {"action": action, "_selected_action": [str(i) for i in ids]},
                       follow=True)


def _confirm(client, url, action, ids):
    return client.post(url, {"action": action, "_selected_action": [str(i) for i in ids],
                             "post": "yes"}, follow=True)


@pytest.mark.django_db
def test_revoke_action_asks_for_confirmation_first(admin_client_):
    rows = [make_token(make_account(client_id=f"44400{i}")) for i in range(3)]
    response = _post_action(admin_client_, TOKENS_URL, "revoke_action",
                            [rows[0].pk, rows[1].pk])
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-testid="revoke-confirmation"' in html
    assert "444000" in html and "444001" in html and "444002" not in html
    assert 'name="post" value="yes"' in html
    assert set(ClientToken.objects.values_list("status", flat=True)) == {TokenStatus.ACTIVE}
    for secret in secrets_of(rows[0]):
        assert secret not in html
    # The same from the accounts list.
    response = _post_action(admin_client_, ACCOUNTS_URL, "revoke_action", [rows[2].account_id])
    assert "444002" in response.content.decode()
    assert ClientToken.objects.get(pk=rows[2].pk).status == TokenStatus.ACTIVE


@pytest.mark.django_db
def test_revoke_action(admin_client_):
    rows = [make_token() for _ in range(3)]
    response = _confirm(admin_client_, TOKENS_URL, "revoke_action", [rows[0].pk, rows[1].pk])
    assert response.status_code == 200
    assert "2 tokens revoked." in [str(m) for m in response.context["messages"]]
    statuses = dict(ClientToken.objects.values_list("pk", "status"))
    assert statuses == {rows[0].pk: TokenStatus.REVOKED, rows[1].pk: TokenStatus.REVOKED,
                        rows[2].pk: TokenStatus.ACTIVE}
    assert ClientToken.objects.get(pk=rows[0].pk).encrypted_token == ""
    # revoking again changes nothing and says so
    response = _confirm(admin_client_, TOKENS_URL, "revoke_action", [rows[0].pk])
    assert "0 tokens revoked." in [str(m) for m in response.context["messages"]]


@pytest.mark.django_db
def test_revoke_action_from_accounts(admin_client_):
    row = make_token()
    response = _confirm(admin_client_, ACCOUNTS_URL, "revoke_action", [row.account_id])
    assert "1 token revoked." in [str(m) for m in response.context["messages"]]
    assert ClientToken.objects.get(pk=row.pk).status == TokenStatus.REVOKED


@pytest.mark.django_db(transaction=True)
def test_refresh_now_action_refreshes_through_synerise(client, fake_synerise):
    root = make_user("root2", is_staff=True, is_superuser=True)
    client.force_login(root, backend=BACKEND)
    remote = fake_synerise.add_client(email="r@example.com", password="pw")
    account = make_account(client_id=remote.client_id,
                           business_profile_id=fake_synerise.business_profile_id)
    row = make_token(account, token=fake_synerise.issue_token(remote.client_id), expires_in=3600)
    old_version = row.version
    response = _post_action(client, TOKENS_URL, "refresh_now_action", [row.pk])
    assert response.status_code == 200
    assert "1 token refreshed." in [str(m) for m in response.context["messages"]]
    assert fake_synerise.count(path_contains="refresh") == 1
    fresh = ClientToken.objects.select_related("account").get(pk=row.pk)
    assert fresh.get_token() != row.plaintext
    assert fresh.version == old_version + 1
    assert fresh.status == TokenStatus.ACTIVE
    html = response.content.decode()
    assert fresh.get_token() not in html and row.plaintext not in html


@pytest.mark.django_db(transaction=True)
def test_refresh_now_action_reports_needs_login(client, fake_synerise):
    root = make_user("root3", is_staff=True, is_superuser=True)
    client.force_login(root, backend=BACKEND)
    remote = fake_synerise.add_client(email="n@example.com", password="pw")
    account = make_account(client_id=remote.client_id,
                           business_profile_id=fake_synerise.business_profile_id)
    row = make_token(account, token="not.a-token.the-fake-issued", expires_in=600)
    response = _post_action(client, TOKENS_URL, "refresh_now_action", [row.pk])
    messages = [str(m) for m in response.context["messages"]]
    assert "0 tokens refreshed." in messages
    assert "1 token needs a new login." in messages
    assert ClientToken.objects.get(pk=row.pk).status == TokenStatus.NEEDS_LOGIN


def test_token_admin_registered():
    assert isinstance(admin.site.get_model_admin(ClientToken), ClientTokenAdmin)
    assert admin.site.is_registered(SyneriseAccount)


@pytest.mark.django_db(transaction=True)
def test_refresh_now_action_reports_transient_failures_and_skips(client, fake_synerise):
    root = make_user("root4", is_staff=True, is_superuser=True)
    client.force_login(root, backend=BACKEND)
    remote = fake_synerise.add_client(email="t@example.com", password="pw")
    account = make_account(client_id=remote.client_id,
                           business_profile_id=fake_synerise.business_profile_id)
    row = make_token(account, token=fake_synerise.issue_token(remote.client_id), expires_in=3600)
    revoked = make_token(status=TokenStatus.REVOKED)
    fake_synerise.inject(status=503, times=50, path="refresh")
    response = _post_action(client, TOKENS_URL, "refresh_now_action", [row.pk, revoked.pk])
    messages = [str(m) for m in response.context["messages"]]
    assert "0 tokens refreshed." in messages
    assert any(m.startswith("1 token could not be refreshed now") for m in messages), messages
    assert any(m.startswith("1 token was skipped") for m in messages), messages
    fresh = ClientToken.objects.select_related("account").get(pk=row.pk)
    assert fresh.status == TokenStatus.ACTIVE
    assert fresh.get_token() == row.plaintext


@pytest.mark.django_db
def test_account_without_token_renders(admin_client_):
    account = make_account(client_id="6660001")
    html = admin_client_.get(ACCOUNTS_URL).content.decode()
    assert "6660001" in html and "no token" in html
    url = reverse("admin:django_synerise_syneriseaccount_change", args=[account.pk])
    assert "no token" in admin_client_.get(url).content.decode()


# ------------------------------------------------------------------ polish


def change_url(row) -> str:
    return reverse("admin:django_synerise_clienttoken_change", args=[row.pk])


@pytest.mark.django_db
def test_change_page_title_names_the_client_not_a_repr(admin_client_):
    row = make_token(make_account(client_id="3141592"))
    html = admin_client_.get(change_url(row)).content.decode()
    title = re.search(r"<title>(.*?)</title>", html, re.S).group(1)
    assert "Client token of Synerise client 3141592" in title
    assert "ClientToken(" not in html


@pytest.mark.django_db
def test_provider_and_origin_share_short_labels(admin_client_):
    row = make_token(make_account(client_id="2710001", identity_provider=IdentityProvider.APPLE))
    ClientToken.objects.filter(pk=row.pk).update(origin="APPLE")
    make_token(make_account(client_id="2710002"))           # SYNERISE
    listing = admin_client_.get(TOKENS_URL).content.decode()
    cells = re.findall(r'<td class="field-provider_display">(.*?)</td>', listing)
    assert sorted(cells) == ["Apple", "Synerise"]
    change = admin_client_.get(change_url(row)).content.decode()
    origin = re.search(r'field-origin_display.*?<div class="readonly">(.*?)</div>', change,
                       re.S).group(1)
    assert origin == "Apple"
    assert ">APPLE<" not in change
    assert provider_label("OAUTH") == "OAuth" and provider_label("") == "-"
    assert provider_label("SOMETHING") == "SOMETHING"
    accounts = admin_client_.get(ACCOUNTS_URL).content.decode()
    assert sorted(re.findall(r'<td class="field-provider_display">(.*?)</td>', accounts)) == [
        "Apple", "Synerise"]


@pytest.mark.django_db
def test_revoked_token_says_revoked_not_expires_in(admin_client_):
    row = make_token(make_account(client_id="5550999"), expires_in=240)
    admin_client_.post(reverse("admin:django_synerise_clienttoken_revoke", args=[row.pk]),
                       {"post": "yes"})
    assert ClientToken.objects.get(pk=row.pk).status == TokenStatus.REVOKED
    for url in (change_url(row), TOKENS_URL, ACCOUNTS_URL,
                reverse("admin:auth_user_change", args=[row.account.user_id])):
        text = admin_client_.get(url).content.decode()
        assert "revoked (no token kept)" in text, url
        assert not re.search(r"in [34]\xa0minutes", text), url


@pytest.mark.django_db
def test_change_page_offers_refresh_and_revoke_to_operators_only(client, admin_client_):
    row = make_token()
    html = admin_client_.get(change_url(row)).content.decode()
    refresh = reverse("admin:django_synerise_clienttoken_refresh", args=[row.pk])
    revoke = reverse("admin:django_synerise_clienttoken_revoke", args=[row.pk])
    assert f'action="{refresh}"' in html and f'href="{revoke}"' in html
    viewer = staff_with("view_clienttoken")
    client.force_login(viewer, backend=BACKEND)
    html = client.get(change_url(row)).content.decode()
    assert refresh not in html and revoke not in html
    assert client.post(refresh).status_code == 403
    assert client.post(revoke, {"post": "yes"}).status_code == 403
    assert ClientToken.objects.get(pk=row.pk).status == TokenStatus.ACTIVE
    # A revoked token offers neither button (nothing left to refresh or revoke).
    ClientToken.objects.filter(pk=row.pk).update(status=TokenStatus.REVOKED)
    html = admin_client_.get(change_url(row)).content.decode()
    assert refresh not in html and revoke not in html


@pytest.mark.django_db
def test_change_page_revoke_confirms_then_revokes(admin_client_):
    row = make_token(make_account(client_id="8080808"))
    url = reverse("admin:django_synerise_clienttoken_revoke", args=[row.pk])
    page = admin_client_.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-testid="revoke-confirmation"' in html and "8080808" in html
    assert ClientToken.objects.get(pk=row.pk).status == TokenStatus.ACTIVE
    # A POST without the confirmation field only shows the page again.
    admin_client_.post(url)
    assert ClientToken.objects.get(pk=row.pk).status == TokenStatus.ACTIVE
    response = admin_client_.post(url, {"post": "yes"}, follow=True)
    assert response.redirect_chain[-1][0] == change_url(row)
    assert "1 token revoked." in [str(m) for m in response.context["messages"]]
    assert ClientToken.objects.get(pk=row.pk).status == TokenStatus.REVOKED
    assert admin_client_.get(reverse("admin:django_synerise_clienttoken_revoke",
                                     args=[987654])).status_code == 404


@pytest.mark.django_db(transaction=True)
def test_change_page_refresh_now_refreshes_through_synerise(client, fake_synerise):
    root = make_user("root5", is_staff=True, is_superuser=True)
    client.force_login(root, backend=BACKEND)
    remote = fake_synerise.add_client(email="c@example.com", password="pw")
    account = make_account(client_id=remote.client_id,
                           business_profile_id=fake_synerise.business_profile_id)
    row = make_token(account, token=fake_synerise.issue_token(remote.client_id), expires_in=3600)
    url = reverse("admin:django_synerise_clienttoken_refresh", args=[row.pk])
    assert client.get(url).status_code == 405                  # POST only
    response = client.post(url, follow=True)
    assert response.redirect_chain[-1][0] == change_url(row)
    assert "1 token refreshed." in [str(m) for m in response.context["messages"]]
    assert fake_synerise.count(path_contains="refresh") == 1
    assert ClientToken.objects.get(pk=row.pk).version == row.version + 1


@pytest.mark.django_db
def test_app_index_and_token_list_link_the_dashboard(admin_client_):
    dashboard = reverse("admin:django_synerise_clienttoken_dashboard")
    app_index = admin_client_.get(reverse("admin:app_list", args=["django_synerise"]))
    assert f'href="{dashboard}"' in app_index.content.decode()
    assert f'href="{dashboard}"' in admin_client_.get(TOKENS_URL).content.decode()


@pytest.mark.django_db
def test_list_shows_failures_in_the_status_and_filters_with_short_labels(admin_client_):
    make_token(make_account(client_id="6060001"), failure_count=2,
               last_error="synerise_unavailable")
    make_token(make_account(client_id="6060002", identity_provider=IdentityProvider.GOOGLE))
    html = admin_client_.get(TOKENS_URL).content.decode()
    statuses = re.findall(r'<td class="field-status_display">(.*?)</td>', html)
    assert sorted(statuses) == ["Active", "Active (2 failures)"]
    sidebar = html[html.index('id="changelist-filter"'):]
    assert "Synerise (email or custom id and password)" not in sidebar
    assert ">Synerise</a>" in sidebar and ">Google</a>" in sidebar
