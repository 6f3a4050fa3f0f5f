"""The tracking code in headless Chromium under a strict Content Security Policy.

The test project serves a page with ``{% synerise_tracking_code %}`` and a nonce-based policy
(``'strict-dynamic'``, or an allow-list of the tracking domain); ``TRACKER_DOMAIN`` points at
FakeSynerise, whose stand-in tracker records what the page does. No policy violation may be
reported, the tracker must start with the tracker key, and a signed-in user's Web SDK token
must reach ``SR.client.setAccessToken`` and be renewed before it ends.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from tests.fixtures_services import PASSWORD, add_client, synerise_settings
from tests.web_sdk_keys import rsa_private_pem, rsa_public_pem

pytest_plugins = ["tests.fixtures_api"]  # api_live_server
pytestmark = [pytest.mark.browser, pytest.mark.timing]

TRACKER_KEY = "7d97fd94-647a-489c-8be6-4d40b4c0eca2"
#: The stand-in tracker was started once / was handed one token (function predicates: a
#: string would be evaluated, which the page's policy forbids).
STARTED = "() => window.__syneriseFake && window.__syneriseFake.init.length === 1"
FIRST_TOKEN = "() => window.__syneriseFake && window.__syneriseFake.tokens.length === 1"
#: Collects every CSP violation the page reports, before any script of the page runs.
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", function (event) {
  window.__violations.push(event.violatedDirective + " " + event.blockedURI);
});
"""


@pytest.fixture(scope="session", autouse=True)
def _database_next_to_playwright() -> Iterator[None]:
    """Playwright's sync API keeps an event loop in the test thread; the test database is
    still set up and flushed from that thread, outside any coroutine, so Django's async
    guard is lifted for these tests (the site itself runs in the live server's thread)."""
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def tracked_site(fake_synerise, settings, api_live_server) -> str:
    synerise_settings(
        settings,
        TRACKER_KEY=TRACKER_KEY,
        TRACKER_DOMAIN=fake_synerise.url,
        WEB_SDK_SIGNING_KEY=rsa_private_pem(),
        WEB_SDK_TOKEN_LIFETIME=60,
    )
    return api_live_server


@pytest.fixture
def tab(browser: Any, tracked_site: str) -> Iterator[Any]:
    context = browser.new_context(base_url=tracked_site)
    context.set_default_timeout(30_000)  # generous: the machine may be loaded
    context.add_init_script(RECORD_VIOLATIONS)
    page = context.new_page()
    yield page
    context.close()


def fake_calls(page: Any) -> dict:
    return page.evaluate("() => window.__syneriseFake")


@pytest.mark.parametrize("policy", ["strict-dynamic", "allow-list"])
def test_tracker_loads_without_csp_violation_for_a_visitor(tab, policy):
    response = tab.goto(f"/tracked/?policy={policy}")
    assert "script-src 'nonce-" in response.headers["content-security-policy"]
    tab.wait_for_function(STARTED)
    calls = fake_calls(tab)
    assert calls["init"][0]["trackerKey"] == TRACKER_KEY
    tab.wait_for_function("() => window.__syneriseFake.cleared === 1")
    assert fake_calls(tab)["tokens"] == []
    assert tab.evaluate("() => window.__violations") == []


def test_an_inline_script_without_nonce_would_be_reported(tab):
    """The policy is really enforced: a script without the nonce is blocked and reported."""
    tab.goto("/tracked/")
    tab.wait_for_function(STARTED)
    tab.evaluate("""() => {
      const s = document.createElement("div");
      s.innerHTML = "<img src=x onerror=\\"window.__ran = true\\">";
      document.body.appendChild(s);
    }""")
    tab.wait_for_function("() => window.__violations.length > 0")
    assert not tab.evaluate("() => window.__ran === true")


def test_signed_in_user_gets_a_web_sdk_token_renewed_before_it_ends(tab, fake_synerise):
    client = add_client(fake_synerise, "web@example.com")
    tab.clock.install()
    login = tab.request.post("/synerise/auth/login/",
                             data={"email": "web@example.com", "password": PASSWORD})
    assert login.ok, login.text()
    cookies = {c["name"]: c["value"] for c in tab.context.cookies()}
    assert cookies["_snrs_uuid"] == client.uuid
    tab.goto("/tracked/")
    tab.wait_for_function(FIRST_TOKEN)
    first = fake_calls(tab)["tokens"][0]
    claims = jwt.decode(first, rsa_public_pem(), algorithms=["RS256"])
    assert claims["uuid"] == client.uuid
    assert claims["email"] == "web@example.com"
    assert claims["exp"] - claims["iat"] == 60
    # The page renews 12 s before the end (a fifth of 60 s): jump past that point.
    tab.clock.run_for(49_000)
    tab.wait_for_function("() => window.__syneriseFake.tokens.length === 2")
    second = fake_calls(tab)["tokens"][1]
    assert second != first
    assert jwt.decode(second, rsa_public_pem(), algorithms=["RS256"])["uuid"] == client.uuid
    assert tab.evaluate("() => window.__violations") == []
