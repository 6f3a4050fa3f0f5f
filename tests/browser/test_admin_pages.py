"""The admin in a real browser at 1280 px and 390 px: the token list fits, the change page
reads well and operates (Refresh now, Revoke with confirmation), and the token dashboard.

Screenshots of the dashboard (both widths) and of a token's change page are written to
``docs/_static/screenshots/`` by ``make screenshots``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import DemoSite
from .test_example_site import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.timing]

WIDTHS = [1280, 390]


def admin_login(page: Any, demo_site: DemoSite, width: int) -> None:
    page.set_viewport_size({"width": width, "height": 900})
    page.goto("/admin/login/")
    page.fill("input[name=username]", demo_site.admin[0])
    page.fill("input[name=password]", demo_site.admin[1])
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")


def signed_in_customer(browser: Any, demo_site: DemoSite, who: str) -> str:
    """Sign a customer in through the site (own browser context): an email of the demo
    clients, or ``demo-google`` / ``demo-apple`` (the demo's provider buttons). Returns the
    Synerise client id."""
    context = browser.new_context(base_url=demo_site.url)
    customer = context.new_page()
    if who.startswith("demo-"):
        customer.goto("/login/")
        customer.click(f"[data-testid={who}]")
    else:
        sign_in(customer, who, demo_site.client_password)
    customer.wait_for_url("**/account/")
    client_id = customer.text_content("[data-testid=client-id]").strip()
    context.close()
    return client_id


def open_active_token(page: Any, client_id: str) -> None:
    """Open the change page of ``client_id``'s token while its status is ``active``.

    The demo's beat claims due tokens every second (tokens live 80 s), and a token being
    refreshed shows no "Refresh now" button, so reload (bounded) until the claim is over.
    """
    page.goto(f"/admin/django_synerise/clienttoken/?q={client_id}")
    page.click("#result_list tbody tr th a")
    page.wait_for_selector("[data-testid=revoke]")
    deadline = time.monotonic() + 60
    while not page.locator("[data-testid=refresh-now]").is_visible():
        status = page.text_content(".field-status .readonly").strip()
        assert time.monotonic() < deadline, f"the token stayed {status!r} for 60 s"
        page.wait_for_timeout(250)
        page.reload()
        page.wait_for_selector("[data-testid=revoke]")


def no_page_overflow(page: Any) -> None:
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 1, f"the page scrolls sideways by {overflow} px"


@pytest.mark.parametrize("width", WIDTHS)
def test_token_list_fits_and_labels_providers_shortly(
    browser: Any, page: Any, demo_site: DemoSite, width: int
) -> None:
    signed_in_customer(browser, demo_site, "alice@example.com")
    admin_login(page, demo_site, width)
    page.goto("/admin/django_synerise/clienttoken/")
    page.wait_for_selector("#result_list tbody tr")
    no_page_overflow(page)
    providers = page.locator("#result_list td.field-provider_display")
    assert providers.count() >= 1
    # Each provider label is one line of text (a Range's line boxes), whatever the row height.
    lines = page.evaluate(
        "[...document.querySelectorAll('#result_list td.field-provider_display')].map(td => {"
        " const r = document.createRange(); r.selectNodeContents(td);"
        " return new Set([...r.getClientRects()].map(b => Math.round(b.top))).size; })")
    assert lines and max(lines) == 1, f"provider labels wrap: {lines}"
    assert set(providers.all_text_contents()) <= {"Synerise", "Google", "Apple", "Facebook",
                                                   "OAuth"}
    if width == 1280:
        # Every column is in view: nothing scrolls inside the table, nothing sits under the
        # filter sidebar.
        hidden = page.evaluate(
            "(() => { const r = document.querySelector('#changelist-form .results');"
            " return r.scrollWidth - r.clientWidth; })()")
        assert hidden <= 1, f"{hidden} px of the table are scrolled out of view"
        table = page.locator("#result_list").bounding_box()
        sidebar = page.locator("#changelist-filter").bounding_box()
        assert table["x"] + table["width"] <= sidebar["x"] + 1
        last = page.locator("#result_list thead th").last.bounding_box()
        assert last["x"] + last["width"] <= sidebar["x"] + 1
    assert page.locator("[data-testid=dashboard-link]").is_visible()


@pytest.mark.parametrize("width", WIDTHS)
def test_change_page_title_labels_and_revoke_with_confirmation(
    browser: Any, page: Any, demo_site: DemoSite, screenshot_dir: Path, width: int
) -> None:
    who = "bob@example.com" if width == 1280 else "demo-google"
    client_id = signed_in_customer(browser, demo_site, who)
    admin_login(page, demo_site, width)
    open_active_token(page, client_id)
    assert page.title().startswith(f"Client token of Synerise client {client_id}")
    assert "ClientToken(" not in page.content()
    origin = page.text_content(".field-origin_display .readonly").strip()
    assert origin in {"Synerise", "Google", "Apple", "Facebook", "OAuth", "-"}
    assert origin == origin.capitalize() or origin in {"OAuth", "-"}
    no_page_overflow(page)
    if width == 1280:
        page.screenshot(path=str(screenshot_dir / "admin-token.png"), full_page=True)

    page.click("[data-testid=revoke]")
    page.wait_for_selector("[data-testid=revoke-confirmation]")
    assert client_id in page.text_content("[data-testid=revoke-confirmation]")
    no_page_overflow(page)
    page.click("[data-testid=confirm-revoke]")
    page.wait_for_selector(".messagelist")
    assert "1 token revoked." in page.text_content(".messagelist")
    assert page.text_content(".field-status .readonly").strip() == "Revoked"
    assert page.text_content(".field-expires_in_display .readonly").strip() == \
        "revoked (no token kept)"
    assert page.locator("[data-testid=revoke]").count() == 0
    assert page.locator("[data-testid=refresh-now]").count() == 0


def test_change_page_refresh_now_button(browser: Any, page: Any, demo_site: DemoSite) -> None:
    client_id = signed_in_customer(browser, demo_site, "demo-apple")
    admin_login(page, demo_site, 1280)
    open_active_token(page, client_id)
    version = int(page.text_content(".field-version .readonly"))
    page.click("[data-testid=refresh-now]")
    page.wait_for_selector(".messagelist")
    messages = page.text_content(".messagelist")
    # Refreshed now, or skipped because the background refresh (beat every second) held it.
    assert "1 token refreshed." in messages or "skipped" in messages, messages
    assert int(page.text_content(".field-version .readonly")) >= version + (
        1 if "1 token refreshed." in messages else 0)


@pytest.mark.parametrize("width", WIDTHS)
def test_dashboard_at_both_widths(
    browser: Any, page: Any, demo_site: DemoSite, screenshot_dir: Path, width: int
) -> None:
    signed_in_customer(browser, demo_site, "alice@example.com")
    admin_login(page, demo_site, width)
    page.goto("/admin/django_synerise/")
    page.click("[data-testid=dashboard-link] a")
    page.wait_for_selector("[data-testid=dashboard]")
    assert page.title().startswith("Synerise token dashboard")
    # Tokens live 80 s and are due 8-16 s after issue, beat runs every second: wait (bounded)
    # for a background refresh to show among the outcomes.
    deadline = time.monotonic() + 90
    while int(page.text_content("[data-testid=total-refreshed]")) < 1:
        assert time.monotonic() < deadline, "no refresh outcome shown within 90 s"
        page.wait_for_timeout(1000)
        page.reload()
    active = int(page.text_content("[data-testid=count-active]"))
    refreshing = int(page.text_content("[data-testid=count-refreshing]"))
    assert active + refreshing >= 1
    assert "running" in page.text_content("[data-testid=halt-state]")
    # The demo's beat runs every second: a run is recorded and outcomes are drawn.
    assert re.search(r"\d{4}-\d\d-\d\d", page.text_content("[data-testid=last-run]"))
    for chart in ("expiry-chart", "outcome-chart"):
        svg = page.locator(f"[data-testid={chart}] svg")
        box = svg.bounding_box()
        card = page.locator(f"[data-testid={chart}]").bounding_box()
        assert box["width"] >= 300 and box["width"] >= 0.85 * card["width"], (chart, box, card)
        assert box["x"] >= 0 and box["x"] + box["width"] <= width + 1, chart
        assert svg.locator("rect").count() >= 1, chart
    no_page_overflow(page)
    name = "admin-dashboard.png" if width == 1280 else "admin-dashboard-390.png"
    page.screenshot(path=str(screenshot_dir / name), full_page=True)
