"""The tracking code in headless Chromium under a strict Content Security Policy.

The test project serves a page with ``{% synerise_tracking_code %}`` and a nonce-based policy
(``'strict-dynamic'``, or an allow-list of the tracking domain); ``TRACKER_DOMAIN`` points at
FakeSynerise, whose stand-in tracker records what the page does. No policy violation may be
reported, the tracker must start with the tracker key, and a signed-in user's Web SDK token
must reach ``SR.client.setAccessToken`` and be renewed before it ends.

The site runs in the live server's thread, on the test database. Chromium is driven from a
thread of its own: Playwright's sync API keeps an event loop running in the thread that
started it, and the test thread must stay free of one for Django's database calls.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import jwt
import pytest

from tests.fixtures_services import PASSWORD, add_client, synerise_settings
from tests.web_sdk_keys import rsa_private_pem, rsa_public_pem

from .conftest import CHROMIUM, CHROMIUM_ARGS

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


def in_chromium(base_url: str, scenario: Callable[[Any], Any]) -> Any:
    """Run ``scenario(page)`` in a fresh headless Chromium, driven from its own thread;
    return its result or raise what it raised."""
    outcome: dict[str, Any] = {}

    def drive() -> None:
        from playwright.sync_api import sync_playwright

        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    context = browser.new_context(base_url=base_url)
                    context.set_default_timeout(30_000)  # generous: the machine may be loaded
                    context.add_init_script(RECORD_VIOLATIONS)
                    outcome["result"] = scenario(context.new_page())
                finally:
                    browser.close()
        except BaseException as exc:  # handed to the test thread below
            outcome["error"] = exc

    thread = threading.Thread(target=drive, name="chromium", daemon=True)
    thread.start()
    thread.join(timeout=240)
    assert not thread.is_alive(), "Chromium did not finish within 240 s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")


def fake_calls(page: Any) -> dict:
    return page.evaluate("() => window.__syneriseFake")


def violations(page: Any) -> list[str]:
    return page.evaluate("() => window.__violations")


@pytest.mark.parametrize("policy", ["strict-dynamic", "allow-list"])
def test_tracker_loads_without_csp_violation_for_a_visitor(tracked_site, policy):
    def scenario(page: Any) -> tuple[str, dict, list[str]]:
        response = page.goto(f"/tracked/?policy={policy}")
        page.wait_for_function(STARTED)
        page.wait_for_function("() => window.__syneriseFake.cleared === 1")
        return response.headers["content-security-policy"], fake_calls(page), violations(page)

    policy_header, calls, reported = in_chromium(tracked_site, scenario)
    assert "script-src 'nonce-" in policy_header
    assert calls["init"][0]["trackerKey"] == TRACKER_KEY
    assert calls["tokens"] == []
    assert reported == []


def test_an_inline_handler_is_blocked_and_reported(tracked_site):
    """The policy is really enforced: markup with an inline handler is blocked and reported."""

    def scenario(page: Any) -> tuple[list[str], bool]:
        page.goto("/tracked/")
        page.wait_for_function(STARTED)
        page.evaluate("""() => {
          const holder = document.createElement("div");
          holder.innerHTML = "<img src=x onerror=\\"window.__ran = true\\">";
          document.body.appendChild(holder);
        }""")
        page.wait_for_function("() => window.__violations.length > 0")
        return violations(page), page.evaluate("() => window.__ran === true")

    reported, ran = in_chromium(tracked_site, scenario)
    assert reported and not ran


def test_signed_in_user_gets_a_web_sdk_token_renewed_before_it_ends(tracked_site, fake_synerise):
    client = add_client(fake_synerise, "web@example.com")

    def scenario(page: Any) -> tuple[dict, list[str], list[str]]:
        page.clock.install()
        login = page.request.post(
            "/synerise/auth/login/", data={"email": "web@example.com", "password": PASSWORD}
        )
        assert login.ok, login.text()
        cookies = {c["name"]: c["value"] for c in page.context.cookies()}
        page.goto("/tracked/")
        page.wait_for_function(FIRST_TOKEN)
        # The page renews 12 s before the end (a fifth of 60 s): jump past that point.
        page.clock.run_for(49_000)
        page.wait_for_function("() => window.__syneriseFake.tokens.length === 2")
        return cookies, fake_calls(page)["tokens"], violations(page)

    cookies, tokens, reported = in_chromium(tracked_site, scenario)
    assert cookies["_snrs_uuid"] == client.uuid
    first, second = tokens
    claims = jwt.decode(first, rsa_public_pem(), algorithms=["RS256"])
    assert claims["uuid"] == client.uuid
    assert claims["email"] == "web@example.com"
    assert claims["exp"] - claims["iat"] == 60
    assert second != first
    assert jwt.decode(second, rsa_public_pem(), algorithms=["RS256"])["uuid"] == client.uuid
    assert reported == []
