"""Browser harness for walletd's operator console: headless Chromium (Debian's) driven by Playwright,
with an injected EIP-1193 wallet that signs in Python.

Run by ``crates/walletd/tests/browser.rs`` through the venv that ``scripts/test-infra.sh`` makes
(``WALLETD_TEST_BROWSER_PYTHON``). What it gives a scenario:

- :func:`eth_personal_sign` and :func:`address_of`: EIP-191 personal-message signatures and EIP-55
  addresses from a private key, as MetaMask makes them (``coincurve`` for secp256k1,
  ``pycryptodome`` for keccak-256); :func:`self_check` tests them against known vectors.
- :func:`open_browser`: a :class:`Browser` (one context, one page at 1280x800) whose
  ``window.ethereum`` answers ``eth_requestAccounts``/``eth_accounts`` with the key's address,
  ``eth_chainId`` with ``0x1`` and ``personal_sign`` by signing here; it records every request the
  page makes, so that :meth:`Browser.foreign_requests` shows any that left the server's origin, and
  takes screenshots (:meth:`Browser.screenshot`) into ``$WALLETD_BROWSER_SCREENSHOTS``.

Chromium runs with the network quiet (no background requests, updates or sync): the machine's
network is closed, and a console that fetched anything from elsewhere is a failure anyway.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from coincurve import PrivateKey
from Crypto.Hash import keccak

CHROMIUM = os.environ.get("WALLETD_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


# --- Ethereum signing --------------------------------------------------------------------------


def keccak256(data: bytes) -> bytes:
    return keccak.new(digest_bits=256, data=data).digest()


def _private_key(private_key_hex: str) -> PrivateKey:
    raw = bytes.fromhex(private_key_hex.strip().removeprefix("0x"))
    if len(raw) != 32:
        raise ValueError(f"a private key is 32 bytes of hex, got {len(raw)} bytes")
    return PrivateKey(raw)


def to_checksum(address: str) -> str:
    """EIP-55: the hex digit at i is upper case when nibble i of keccak(lowercase hex) is >= 8."""
    lower = address.lower().removeprefix("0x")
    digest = keccak256(lower.encode()).hex()
    return "0x" + "".join(c.upper() if int(digest[i], 16) >= 8 else c for i, c in enumerate(lower))


def address_of(private_key_hex: str) -> str:
    """The EIP-55 checksummed address of a private key (hex, with or without ``0x``)."""
    public = _private_key(private_key_hex).public_key.format(compressed=False)[1:]
    return to_checksum(keccak256(public)[-20:].hex())


def _message_bytes(message: str | bytes) -> bytes:
    return message if isinstance(message, bytes) else message.encode("utf-8")


def eip191_hash(message: str | bytes) -> bytes:
    """keccak-256 of ``"\\x19Ethereum Signed Message:\\n" + len(message) + message`` (len in bytes)."""
    data = _message_bytes(message)
    return keccak256(b"\x19Ethereum Signed Message:\n" + str(len(data)).encode() + data)


def eth_personal_sign(private_key_hex: str, message: str | bytes) -> str:
    """An EIP-191 personal-message signature: ``0x`` + r || s || v, 65 bytes, v = 27 + recovery id.

    A str is signed as its UTF-8 bytes. The nonce is RFC 6979's and s is low, as in libsecp256k1,
    so the signature equals the Rust side's (k256) byte for byte.
    """
    sig = _private_key(private_key_hex).sign_recoverable(eip191_hash(message), hasher=None)
    return "0x" + (sig[:64] + bytes([27 + sig[64]])).hex()


def recover_address(message: str | bytes, signature: str) -> str:
    """The checksummed address that made ``signature`` over ``message``."""
    from coincurve import PublicKey

    raw = bytes.fromhex(signature.removeprefix("0x"))
    public = PublicKey.from_signature_and_message(raw[:64] + bytes([raw[64] - 27]), eip191_hash(message), hasher=None)
    return to_checksum(keccak256(public.format(compressed=False)[1:])[-20:].hex())


# A well-known test key and its address (from the web3 documentation).
KNOWN_KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
KNOWN_ADDRESS = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"


def self_check(key: str | None = None, address: str | None = None, message: str | None = None,
               signature: str | None = None) -> None:
    """Raises AssertionError unless signing works: the known key gives the known address, a
    signature recovers to its signer, and (when given) ``key`` has ``address`` and signs ``message``
    exactly as ``signature`` (made by the Rust side)."""
    got = address_of(KNOWN_KEY)
    assert got == KNOWN_ADDRESS, f"address of the known key: got {got}, want {KNOWN_ADDRESS}"
    assert to_checksum(KNOWN_ADDRESS.lower()) == KNOWN_ADDRESS, "EIP-55 checksum of the known address"
    sig = eth_personal_sign(KNOWN_KEY, "walletd harness self-check")
    assert len(bytes.fromhex(sig[2:])) == 65 and sig[-2:] in ("1b", "1c"), f"signature shape: {sig}"
    assert recover_address("walletd harness self-check", sig) == KNOWN_ADDRESS, "signature does not recover"
    if key is not None and address is not None:
        assert address_of(key) == address, f"address of the key: Python {address_of(key)}, Rust {address}"
    if key is not None and message is not None and signature is not None:
        mine = eth_personal_sign(key, message)
        assert mine == signature.lower(), f"signature of {message!r}: Python {mine}, Rust {signature}"


# --- The browser --------------------------------------------------------------------------------

# The injected wallet: EIP-1193's request() and no-op event methods; personal_sign goes to Python.
_PROVIDER_JS = """
(() => {
  const address = %(address)s;
  const rpcError = (code, message) => Object.assign(new Error(message), { code });
  window.ethereum = {
    isWalletdTestWallet: true,
    chainId: "0x1",
    selectedAddress: address,
    async request({ method, params } = {}) {
      switch (method) {
        case "eth_requestAccounts":
        case "eth_accounts":
          return [address];
        case "eth_chainId":
          return "0x1";
        case "net_version":
          return "1";
        case "personal_sign": {
          const [message, signer] = params || [];
          const answer = await window.__walletdPersonalSign(String(message), String(signer || ""));
          if (answer.error) throw rpcError(answer.code, answer.error);
          return answer.signature;
        }
        default:
          throw rpcError(4200, "the test wallet does not support " + method);
      }
    },
    on() { return this; },
    removeListener() { return this; },
  };
  window.dispatchEvent(new Event("ethereum#initialized"));
})();
"""


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def _decode_personal_message(message: str) -> bytes:
    """personal_sign's message, hex of the bytes as MetaMask takes it, or plain text."""
    if message.startswith("0x"):
        try:
            return bytes.fromhex(message[2:])
        except ValueError:
            pass
    return message.encode("utf-8")


_PLAYWRIGHT = None


def _playwright():
    """The process's one Playwright driver (its sync API allows one at a time), started on first
    use and stopped at exit; browsers opened at once share it."""
    global _PLAYWRIGHT
    if _PLAYWRIGHT is None:
        from playwright.sync_api import sync_playwright

        _PLAYWRIGHT = sync_playwright().start()
        atexit.register(_PLAYWRIGHT.stop)
    return _PLAYWRIGHT


class Browser:
    """One Chromium with one context and page (``.page``), a wallet for one key, and the record of
    every request. Close it (or use it as a context manager)."""

    def __init__(self, base_url: str, private_key_hex: str, screenshots: str | os.PathLike | None = None):
        self.base_url = base_url.rstrip("/")
        self.key = private_key_hex
        self.address = address_of(private_key_hex)
        #: Every URL the browser asked for, in order (pages, fetches, images, sockets, ...).
        self.requests: list[str] = []
        #: Uncaught page errors and console errors (not Chromium's notes of 4xx/5xx answers).
        self.errors: list[str] = []
        #: Messages signed through personal_sign, in order.
        self.signed: list[bytes] = []
        #: Set to make personal_sign answer as a user who rejects (EIP-1193 error 4001).
        self.reject_signatures = False
        self.screenshot_dir = Path(
            screenshots or os.environ.get("WALLETD_BROWSER_SCREENSHOTS") or tempfile.mkdtemp(prefix="walletd-shots-")
        )
        self.screenshot_dir.mkdir(parents=True, exist_ok=True)
        self._profile = tempfile.mkdtemp(prefix="walletd-chromium-")
        try:
            self.context = _playwright().chromium.launch_persistent_context(
                self._profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, viewport=DESKTOP,
                # Not UTC, so that the console showing times in the viewer's zone can be seen to.
                timezone_id="Asia/Tokyo",
            )
            self.context.on("request", lambda r: self.requests.append(r.url))
            self.context.expose_function("__walletdPersonalSign", self._personal_sign)
            self.context.add_init_script(_PROVIDER_JS % {"address": json.dumps(self.address)})
            self.page = self.context.pages[0] if self.context.pages else self.context.new_page()
            self.page.on("websocket", lambda ws: self.requests.append(ws.url))
            self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
            self.page.on("console", self._console)
        except BaseException:
            self.close()
            raise

    def _console(self, message) -> None:
        # Chromium logs every 4xx/5xx answer as an error ("Failed to load resource"): a scenario
        # checks statuses itself (a 403 may be the point), and /favicon.ico is Chromium's own ask.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(f"console: {message.text} ({(message.location or {}).get('url', '')})")

    def _personal_sign(self, message: str, signer: str) -> dict:
        if self.reject_signatures:
            return {"code": 4001, "error": "the user rejected the request"}
        if signer and signer.lower() != self.address.lower():
            return {"code": 4100, "error": f"the test wallet holds {self.address}, not {signer}"}
        data = _decode_personal_message(message)
        self.signed.append(data)
        return {"signature": eth_personal_sign(self.key, data)}

    def url(self, path: str) -> str:
        return self.base_url + path

    def goto(self, path: str):
        """Opens ``base_url + path``; returns Playwright's response."""
        return self.page.goto(self.url(path))

    def foreign_requests(self) -> list[str]:
        """Every recorded request to another origin (scheme, host, port) than ``base_url``'s;
        ``data:``, ``blob:`` and ``about:`` URLs are not requests to anyone."""
        home = _origin(self.base_url)
        return [
            u for u in self.requests
            if not u.startswith(("data:", "blob:", "about:")) and _origin(u) != home
        ]

    def screenshot(self, name: str, phone: bool = True, full_page: bool = False) -> list[Path]:
        """Saves ``<name>.png`` at 1280x800 and, with ``phone``, ``<name>-phone.png`` at 390x844;
        returns the paths. The page is left at 1280x800."""
        shots = [(self.screenshot_dir / f"{name}.png", DESKTOP)]
        if phone:
            shots.append((self.screenshot_dir / f"{name}-phone.png", PHONE))
        try:
            for path, size in shots:
                self.page.set_viewport_size(size)
                self.page.screenshot(path=str(path), full_page=full_page)
        finally:
            self.page.set_viewport_size(DESKTOP)
        return [p for p, _ in shots]

    def close(self) -> None:
        try:
            if getattr(self, "context", None) is not None:
                self.context.close()
        finally:
            shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_browser(base_url: str, private_key_hex: str, screenshots: str | os.PathLike | None = None) -> Browser:
    """Launches Chromium with a wallet for ``private_key_hex``; see :class:`Browser`."""
    return Browser(base_url, private_key_hex, screenshots)


if __name__ == "__main__":
    self_check()
    print(f"harness self-check ok: {KNOWN_KEY} -> {KNOWN_ADDRESS}")
