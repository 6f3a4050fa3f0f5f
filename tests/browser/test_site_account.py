"""The example site in a real browser: "Sign in with a site account" (a Django password user)
ends with a Synerise token obtained through this site's OAUTH identity provider.

The login itself never talks to Synerise: ``CONNECT_ON_LOGIN`` hands the connection to the
demo's Celery worker, FakeSynerise checks the identity token against the site's JWKS, and the
account page (reloading while the connection is pending) shows the stored token.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any
from urllib.request import urlopen

import pytest

from .conftest import DemoSite

pytestmark = [pytest.mark.browser, pytest.mark.timing]


def test_site_account_login_gets_a_synerise_token_through_oauth(
    page: Any, demo_site: DemoSite
) -> None:
    page.goto("/login/")
    form = page.locator("form[data-testid=site-login]")
    form.locator("input[name=username]").fill("carol")
    form.locator("input[name=password]").fill(demo_site.client_password)
    form.locator("button[type=submit]").click()

    page.wait_for_url("**/account/")
    assert "Carol" in page.text_content("h1")
    # Pending first (or already connected on a fast machine), then the token panel.
    page.wait_for_selector("[data-testid=client-id]", timeout=90_000)
    client_id = page.text_content("[data-testid=client-id]").strip()
    assert client_id.isdigit()
    assert "OAuth" in page.text_content("dl.details")
    assert page.text_content("[data-testid=token-status]").strip() in {"Active", "Refreshing"}
    expiry = page.get_attribute("[data-testid=expires-at]", "datetime")
    assert expiry and datetime.fromisoformat(expiry) > datetime.now(timezone.utc)

    # FakeSynerise registered the profile from the site's claims: the email the site holds.
    with urlopen(f"{demo_site.fake_url}/__fake__/clients", timeout=10) as response:  # noqa: S310
        clients = json.load(response)["clients"]
    (profile,) = [c for c in clients if c["client_id"] == client_id]
    assert profile["identity_provider"] == "OAUTH"
    assert profile["email"] == "carol@example.com"
    # The page never shows a token, minted or issued.
    assert "eyJ" not in page.content()
