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

from harness import Browser, address_of, open_browser, self_check

# The real sign-in, run inside the page as the console does it: ask the wallet for its account, get
# a nonce for it, have the wallet personal_sign the message (hex of its UTF-8), log in.
SIGN_IN_JS = """
async () => {
  const post = async (path, body) => {
    const r = await fetch(path, { method: "POST", headers: { "content-type": "application/json" },
                                  body: JSON.stringify(body) });
    return { status: r.status, body: await r.json().catch(() => null) };
  };
  const [address] = await window.ethereum.request({ method: "eth_requestAccounts" });
  const nonce = await post("/v1/auth/nonce", { address });
  if (nonce.status !== 200) return { stage: "nonce", address, ...nonce };
  const message = nonce.body.message;
  const hex = "0x" + Array.from(new TextEncoder().encode(message),
                                (b) => b.toString(16).padStart(2, "0")).join("");
  const signature = await window.ethereum.request({ method: "personal_sign", params: [hex, address] });
  const login = await post("/v1/auth/login", { message, signature });
  return { stage: "login", address, nonce: nonce.body, signature, ...login };
}
"""

GET_JS = """
async ([path, token]) => {
  const r = await fetch(path, { headers: { authorization: "Bearer " + token } });
  return { status: r.status, body: await r.json().catch(() => null) };
}
"""


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


def open_a_same_origin_page(s: Scenario, who: str) -> None:
    res = s.browser(who).goto("/health/live")
    assert res is not None and res.status == 200, f"{who}: GET /health/live answered {res and res.status}"


def sign_in(s: Scenario, who: str, admin: bool) -> None:
    b = s.browser(who)
    got = b.page.evaluate(SIGN_IN_JS)
    assert got["address"] == address_of(b.key), f"{who}: eth_requestAccounts gave {got['address']}"
    assert got["stage"] == "login" and got["status"] == 200, f"{who}: sign-in failed at {got['stage']}: {got}"
    assert b.signed and b.signed[-1] == got["nonce"]["message"].encode(), f"{who}: the wallet signed {b.signed}"
    roles = got["body"]["user"]["roles"]
    assert ("admin" in roles) == admin, f"{who}: roles {roles}, expected admin={admin}"
    assert got["body"]["user"]["address"] == b.address, f"{who}: signed in as {got['body']['user']['address']}"
    s.tokens[who] = got["body"]["access_token"]


def verify_the_ledger(s: Scenario, who: str, status: int) -> None:
    got = s.browser(who).page.evaluate(GET_JS, ["/v1/admin/wallet/verify", s.tokens[who]])
    assert got["status"] == status, f"{who}: GET /v1/admin/wallet/verify answered {got}, expected {status}"
    if status == 200:
        assert got["body"]["ok"] is True, f"the ledger does not verify: {got['body']}"


def screenshots(s: Scenario) -> None:
    for who, b in s.browsers.items():
        for path in b.screenshot(f"signed-in-{who}"):
            assert path.stat().st_size > 0, f"empty screenshot {path}"
            print(f"    screenshot {path}")


def no_request_left_the_origin(s: Scenario) -> None:
    for who, b in s.browsers.items():
        foreign = b.foreign_requests()
        assert not foreign, f"{who}'s browser asked another origin than {s.base_url}: {foreign}"
        assert not b.errors, f"{who}'s page reported errors: {b.errors}"
        print(f"    {who}: {len(b.requests)} requests, all to {s.base_url}")


STEPS = [
    ("signing matches the Rust side", signing_matches_the_rust_side),
    ("admin opens a same-origin page", lambda s: open_a_same_origin_page(s, "admin")),
    ("admin signs in with the injected wallet and has the admin role", lambda s: sign_in(s, "admin", True)),
    ("admin may verify the ledger", lambda s: verify_the_ledger(s, "admin", 200)),
    ("user opens a same-origin page", lambda s: open_a_same_origin_page(s, "user")),
    ("user signs in without the admin role", lambda s: sign_in(s, "user", False)),
    ("user is refused the ledger check", lambda s: verify_the_ledger(s, "user", 403)),
    ("screenshots", screenshots),
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
