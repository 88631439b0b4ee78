"""The operator console in a real browser: the scenario that crates/walletd/tests/browser.rs runs.

Environment (set by the Rust driver): BASE_URL of a running walletd; ADMIN_KEY, a private key whose
address walletd lists as an admin; USER_KEY, one it does not; RUST_MESSAGE and RUST_SIGNATURE,
ADMIN_KEY's signature of RUST_MESSAGE made in Rust, and ADMIN_ADDRESS, the address Rust derives
from it; WALLETD_BROWSER_SCREENSHOTS, where screenshots go.

Each step is a function taking the shared :class:`Scenario`, run in the order of ``STEPS``; the
first that fails stops the run, with its name and message, after a screenshot of every open browser
(``failed-<step>``). The exit status is 0 only when every step passed.
"""

from __future__ import annotations

import os
import sys
import time
import traceback

from harness import Browser, open_browser, self_check

def env(name: str) -> str:
    value = os.environ.get(name)
    assert value, f"{name} is not set: run this through crates/walletd/tests/browser.rs (scripts/test.sh)"
    return value


class Scenario:
    """What the steps share: the server, the keys, the open browsers and what they learned."""

    def __init__(self) -> None:
        self.base_url = env("BASE_URL")
        self.admin_key = env("ADMIN_KEY")
        self.user_key = env("USER_KEY")
        self.browsers: dict[str, Browser] = {}
        self.tokens: dict[str, str] = {}

    def browser(self, who: str) -> Browser:
        if who not in self.browsers:
            key = self.admin_key if who == "admin" else self.user_key
            self.browsers[who] = open_browser(self.base_url, key)
        return self.browsers[who]

    def close(self) -> None:
        for b in self.browsers.values():
            b.close()


def signing_matches_the_rust_side(s: Scenario) -> None:
    self_check(key=s.admin_key, address=env("ADMIN_ADDRESS"), message=env("RUST_MESSAGE"),
               signature=env("RUST_SIGNATURE"))


def console_sign_in(s: Scenario, who: str) -> None:
    """Opens /admin and signs in with the page's own button, as an operator would."""
    b = s.browser(who)
    res = b.goto("/admin")
    assert res is not None and res.status == 200, f"{who}: GET /admin answered {res and res.status}"
    page = b.page
    page.get_by_role("button", name="Sign in with wallet").click()
    expect_visible(page, "#sign-out", f"{who}: signed in (the sign-out button shows)")
    assert b.signed and b"wants you to sign in with your Ethereum account" in b.signed[-1], (
        f"{who}: the wallet signed {b.signed!r}, not a sign-in message")
    assert b.address in page.text_content("#signed-in-as"), page.text_content("#signed-in-as")


def expect_visible(page, selector: str, what: str, timeout_s: float = 20) -> None:
    try:
        page.wait_for_selector(selector, state="visible", timeout=timeout_s * 1000)
    except Exception as e:  # noqa: BLE001
        raise AssertionError(f"{what}: {selector} not visible after {timeout_s}s ({e.__class__.__name__})") from None


def number(text: str) -> float:
    return float(text.strip().split(" ")[0])


def the_overview_updates_during_the_claim_load(s: Scenario) -> None:
    page = s.browser("admin").page
    expect_visible(page, "#claims-won .note", "the overview's live figures")
    expect_visible(page, "#readiness-state", "readiness")
    assert page.text_content("#readiness-state").strip() == "ready", page.text_content("#readiness-state")
    first = number(page.text_content("#claims-won .note"))
    # The figures refresh by themselves (every 2 s) while the driver claims an order every 150 ms.
    try:
        page.wait_for_function(
            "first => parseFloat(document.querySelector('#claims-won .note').textContent) >= first + 5",
            arg=first, timeout=30000)
    except Exception:  # noqa: BLE001
        now = page.text_content("#claims-won .note")
        raise AssertionError(f"claims won stayed at {now!r} (from {first}) for 30 s while claims were made") from None
    now = number(page.text_content("#claims-won .note"))
    assert page.locator("#consumer-lag tbody tr").count() >= 1, "no consumer group on the overview"
    assert page.locator(".charts figure svg").count() == 6, "six charts"
    print(f"    claims won went from {first:.0f} to {now:.0f} on the live overview")
    for path in s.browser("admin").screenshot("overview"):
        print(f"    screenshot {path}")


def keyboard_reaches_the_claims_page(s: Scenario) -> None:
    page = s.browser("admin").page
    page.focus("#sign-out")
    page.keyboard.press("Shift+Tab")  # back through the nav, to its last links
    for _ in range(8):
        focused = page.evaluate("document.activeElement && document.activeElement.textContent")
        if focused == "Orders & claims":
            break
        page.keyboard.press("Shift+Tab")
    assert focused == "Orders & claims", f"the keyboard did not reach the claims link (at {focused!r})"
    page.keyboard.press("Enter")
    expect_visible(page, "#claims-title", "the claims page, opened from the keyboard")
    label = page.locator("label[for=claim-q]").text_content()
    assert "Claim, order or user id" in label, f"the search field's label: {label!r}"


def find_a_claim_and_its_timeline(s: Scenario) -> None:
    page = s.browser("admin").page
    claim = env("CLAIM_ID")
    page.get_by_label("Claim, order or user id").fill(claim)
    page.keyboard.press("Enter")
    expect_visible(page, "#timeline", "the claim's timeline")
    items = page.locator("#timeline li")
    types = [items.nth(i).locator(".type").text_content() for i in range(items.count())]
    assert "order.created" in types and "order.claimed" in types, f"timeline types: {types}"
    assert types.index("order.created") < types.index("order.claimed"), f"not in log order: {types}"
    assert "processed" in page.text_content("#claim-status"), page.text_content("#claim-status")
    rids = [r for r in page.locator("#timeline .rid").all_text_contents() if r.strip() not in ("", "—")]
    assert rids, "no request / correlation id on the timeline"
    # Times are in the viewer's zone (this browser: Asia/Tokyo), UTC on hover.
    t = page.locator("#timeline time").first
    shown, utc, title = t.text_content(), t.get_attribute("datetime"), t.get_attribute("title")
    assert shown != utc and title.endswith("UTC"), f"time shown {shown!r}, datetime {utc!r}, title {title!r}"
    print(f"    timeline: {types}")
    for path in s.browser("admin").screenshot("claim-timeline"):
        print(f"    screenshot {path}")


def redrive_a_parked_event(s: Scenario) -> None:
    page = s.browser("admin").page
    page.get_by_role("link", name="Events").click()
    expect_visible(page, "#events-title", "the events page")
    event = env("PARKED_EVENT_ID")
    row = page.locator(f"#parked tr[data-event-id='{event}']")
    assert row.count() == 1, f"the parked event {event} is not listed"
    assert "refused by test trigger" in row.locator(".error").text_content(), row.locator(".error").text_content()
    row.get_by_role("button").click()
    expect_visible(page, "#redrive-confirm", "the confirmation step")
    assert env("PARKED_GROUP") in page.text_content("#redrive-confirm")
    for path in s.browser("admin").screenshot("redrive-confirm", phone=False):
        print(f"    screenshot {path}")
    page.click("#confirm-redrive")
    expect_visible(page, "#redrive-outcome[data-outcome='handled']", "the redriven event handled", timeout_s=60)
    print(f"    {page.text_content('#redrive-outcome').strip()}")
    page.wait_for_function(
        "id => !document.querySelector(`#parked tr[data-event-id='${id}']`)", arg=event, timeout=10000)
    for path in s.browser("admin").screenshot("redrive-handled", phone=False):
        print(f"    screenshot {path}")


def run_the_ledger_verify(s: Scenario) -> None:
    page = s.browser("admin").page
    page.get_by_role("link", name="Wallet").click()
    expect_visible(page, "#run-verify", "the wallet page")
    page.get_by_role("button", name="Run ledger verify").click()
    expect_visible(page, "#verify-outcome", "the verify's result")
    assert page.get_attribute("#verify-outcome", "data-ok") == "true", page.text_content("#verify-outcome")
    # The chain's queues: the withdrawal under way, the deposit awaiting its confirmations.
    assert "requested" in page.text_content("#withdrawals-open"), page.text_content("#withdrawals-open")
    assert page.locator("#deposits-seen tbody tr td code").count() >= 1, page.text_content("#deposits-seen")
    page.evaluate("window.scrollTo(0, 0)")
    for path in s.browser("admin").screenshot("wallet"):
        print(f"    screenshot {path}")
    page.get_by_label("User id").fill(env("BUYER_ID"))
    page.keyboard.press("Enter")
    expect_visible(page, "#entries", "the buyer's entries")
    assert page.locator("#accounts tbody tr").count() >= 1
    assert page.locator("#holds tbody tr").count() >= 1
    # The entries paginate with the API's cursor (20 a page; the load made more).
    next_page = page.locator("#entries").get_by_role("button", name="Next page")
    assert next_page.count() == 1, "the buyer has more than a page of entries, but there is no next page"
    first = page.locator("#entries tbody tr").first.text_content()
    next_page.click()
    page.wait_for_function(
        "first => document.querySelector('#entries tbody tr').textContent !== first", arg=first, timeout=10000)
    print(f"    {page.text_content('#verify-outcome').strip()}")


def the_token_is_refreshed_and_keeps_working(s: Scenario) -> None:
    # Access tokens live 20 s here: the page renews its token before it expires, on its own.
    b = s.browser("admin")
    refreshed = lambda: [u for u in b.requests if u.endswith("/v1/auth/refresh")]  # noqa: E731
    if not refreshed():
        try:
            b.page.wait_for_event("request", predicate=lambda r: r.url.endswith("/v1/auth/refresh"), timeout=30000)
        except Exception:  # noqa: BLE001
            raise AssertionError("the page did not refresh its access token within 30 s of a 20 s token") from None
    # The renewed token works: the overview loads with it.
    b.page.get_by_role("link", name="Overview").click()
    expect_visible(b.page, "#claims-won .note", "the overview, with the refreshed token")
    print(f"    {len(refreshed())} token refresh(es)")


def sign_out(s: Scenario) -> None:
    page = s.browser("admin").page
    page.get_by_role("button", name="Sign out").click()
    expect_visible(page, "#sign-in", "signed out (the sign-in button shows)")
    assert page.locator("#nav").is_hidden(), "the navigation stays after signing out"
    assert any(u.endswith("/v1/auth/logout") for u in s.browser("admin").requests), "no logout request"


def a_user_gets_the_refusal_page(s: Scenario) -> None:
    page = s.browser("user").page
    expect_visible(page, "#refusal", "the refusal page for a non-admin")
    assert page.locator("#nav").is_hidden(), "a non-operator is shown the console's navigation"
    for path in s.browser("user").screenshot("refusal"):
        print(f"    screenshot {path}")


def no_request_left_the_origin(s: Scenario) -> None:
    for who, b in s.browsers.items():
        foreign = b.foreign_requests()
        assert not foreign, f"{who}'s browser asked another origin than {s.base_url}: {foreign}"
        assert not b.errors, f"{who}'s page reported errors: {b.errors}"
        print(f"    {who}: {len(b.requests)} requests, all to {s.base_url}")


STEPS = [
    ("signing matches the Rust side", signing_matches_the_rust_side),
    ("admin signs in on /admin with the injected wallet", lambda s: console_sign_in(s, "admin")),
    ("the overview updates while claims are made", the_overview_updates_during_the_claim_load),
    ("the keyboard reaches the claims page", keyboard_reaches_the_claims_page),
    ("admin finds a claim and its timeline", find_a_claim_and_its_timeline),
    ("admin redrives a parked event and sees it handled", redrive_a_parked_event),
    ("admin runs the ledger verify and looks up a user", run_the_ledger_verify),
    ("the access token is refreshed and keeps working", the_token_is_refreshed_and_keeps_working),
    ("admin signs out", sign_out),
    ("user signs in on /admin", lambda s: console_sign_in(s, "user")),
    ("user gets the refusal page", a_user_gets_the_refusal_page),
    ("no request left the origin", no_request_left_the_origin),
]


def main() -> int:
    s = Scenario()
    try:
        for i, (name, run) in enumerate(STEPS, 1):
            started = time.monotonic()
            try:
                run(s)
            except Exception as e:  # noqa: BLE001 -- every failure is reported the same way
                print(f"FAILED step {i}/{len(STEPS)} \"{name}\": {e}", flush=True)
                traceback.print_exc(file=sys.stdout)
                for who, b in s.browsers.items():
                    try:
                        print(f"    screenshot {b.screenshot(f'failed-{i}-{who}', phone=False)[0]}")
                    except Exception as shot:  # noqa: BLE001
                        print(f"    (no screenshot of {who}'s page: {shot})")
                return 1
            print(f"ok step {i}/{len(STEPS)} \"{name}\" ({time.monotonic() - started:.1f}s)", flush=True)
    finally:
        s.close()
    print(f"console scenario: all {len(STEPS)} steps passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
