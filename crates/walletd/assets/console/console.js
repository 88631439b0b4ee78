// The operator console's own script: sign-in with the operator's wallet (EIP-4361 through
// window.ethereum), the tokens kept in memory only, refreshed before they expire, sent with every
// fragment request; navigation; local times. Everything goes to this page's own origin.
(() => {
  "use strict";
  let session = null; // {access, refresh, expiresAt, address}
  let refreshTimer = null;
  const $ = (id) => document.getElementById(id);
  const status = (text) => { $("status").textContent = text; };

  function toHex(text) {
    return "0x" + Array.from(new TextEncoder().encode(text), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function postJson(path, body) {
    const res = await fetch(path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const json = res.status === 204 ? null : await res.json().catch(() => null);
    if (!res.ok) {
      const detail = json && (json.detail || json.title);
      throw new Error(`${path} answered ${res.status}${detail ? ": " + detail : ""}`);
    }
    return json;
  }

  function keep(tokens) {
    session = {
      access: tokens.access_token,
      refresh: tokens.refresh_token,
      expiresAt: Date.now() + tokens.expires_in * 1000,
      address: tokens.user ? tokens.user.address : session && session.address,
    };
    clearTimeout(refreshTimer);
    // Refresh a minute before expiry; a token of two minutes or less, halfway through its life.
    const life = tokens.expires_in;
    const wait = Math.max(1000, life > 120 ? (life - 60) * 1000 : life * 500);
    refreshTimer = setTimeout(refresh, wait);
  }

  // One refresh at a time: the server treats a refresh token used twice as stolen and revokes the
  // whole session, and the timer and several 401s can ask at once.
  let refreshing = null;
  function refresh() {
    if (!session) return Promise.resolve(false);
    if (!refreshing) {
      const token = session.refresh;
      refreshing = postJson("/v1/auth/refresh", { refresh_token: token })
        .then((tokens) => { if (session && session.refresh === token) keep(tokens); return true; })
        .catch((e) => { signedOut(`Your session could not be renewed (${e.message}). Sign in again.`); return false; })
        .finally(() => { refreshing = null; });
    }
    return refreshing;
  }

  async function signIn() {
    if (!window.ethereum) {
      status("No Ethereum wallet was found in this browser (window.ethereum). Install or unlock one, then try again.");
      return;
    }
    const button = $("sign-in");
    button.disabled = true;
    try {
      status("Asking your wallet for its address…");
      const [address] = await window.ethereum.request({ method: "eth_requestAccounts" });
      const { message } = await postJson("/v1/auth/nonce", { address });
      status("Sign the sign-in message in your wallet…");
      const signature = await window.ethereum.request({ method: "personal_sign", params: [toHex(message), address] });
      keep(await postJson("/v1/auth/login", { message, signature }));
      $("signed-in-as").textContent = `Signed in as ${session.address}`;
      $("sign-in").hidden = true;
      $("sign-out").hidden = false;
      $("nav").hidden = false;
      status("Signed in.");
      show(location.hash.slice(1) || "overview");
    } catch (e) {
      status(`Sign-in failed: ${e.message || e}`);
    } finally {
      button.disabled = false;
    }
  }

  function signedOut(text) {
    clearTimeout(refreshTimer);
    session = null;
    $("signed-in-as").textContent = "";
    $("sign-in").hidden = false;
    $("sign-out").hidden = true;
    $("nav").hidden = true;
    $("main").innerHTML = "";
    const p = document.createElement("p");
    p.id = "signed-out";
    p.textContent = text;
    $("main").appendChild(p);
    status(text);
  }

  async function signOut() {
    const refreshToken = session && session.refresh;
    signedOut("Signed out.");
    if (refreshToken) {
      await postJson("/v1/auth/logout", { refresh_token: refreshToken }).catch(() => {});
    }
  }

  const pages = ["overview", "claims", "events", "wallet"];

  function show(page) {
    if (!pages.includes(page)) page = "overview";
    if (!session) return;
    if (location.hash !== "#" + page) history.replaceState(null, "", "#" + page);
    document.querySelectorAll("#nav a").forEach((a) => {
      if (a.dataset.page === page) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    });
    htmx.ajax("GET", `/admin/ui/${page}`, { target: "#main", swap: "innerHTML" }).then(() => $("main").focus());
  }

  // Times: the viewer's zone on the page, UTC on hover.
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach((t) => {
      if (t.dataset.local) return;
      const d = new Date(t.getAttribute("datetime"));
      if (isNaN(d)) return;
      t.dataset.local = "1";
      t.title = `${d.toISOString().replace(".000Z", "Z")} UTC`;
      t.textContent = d.toLocaleString();
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("sign-in").addEventListener("click", signIn);
    $("sign-out").addEventListener("click", signOut);
    document.querySelectorAll("#nav a").forEach((a) =>
      a.addEventListener("click", (e) => {
        e.preventDefault();
        show(a.dataset.page);
      }));
    window.addEventListener("hashchange", () => show(location.hash.slice(1)));

    // Every fragment request carries the access token (from memory, never from storage).
    document.body.addEventListener("htmx:configRequest", (e) => {
      if (session) e.detail.headers["Authorization"] = `Bearer ${session.access}`;
    });
    // 4xx fragments (refusal, not found, bad input) are shown like any other.
    document.body.addEventListener("htmx:beforeSwap", (e) => {
      // An answer to a request sent before signing out shows nothing.
      if (!session) {
        e.detail.shouldSwap = false;
        return;
      }
      const code = e.detail.xhr.status;
      if (code === 401) {
        // The access token expired under us: renew it; polls retry by themselves, a click is asked again.
        e.detail.shouldSwap = false;
        refresh().then((ok) => { if (ok) status("Your session was renewed; if an action did not happen, do it again."); });
        return;
      }
      if (code >= 400 && code < 500) {
        e.detail.shouldSwap = true;
        e.detail.isError = false;
        if (code === 403) {
          // The refusal page replaces the whole page, not only the fragment asked for.
          // A non-operator has no page to go to: the navigation goes too.
          $("nav").hidden = true;
          e.detail.target = $("main");
          e.detail.swapOverride = "innerHTML";
        }
      }
    });
    document.body.addEventListener("htmx:responseError", (e) => {
      status(`The server answered ${e.detail.xhr.status} to ${e.detail.pathInfo.requestPath}.`);
    });
    document.body.addEventListener("htmx:sendError", () => status("The server could not be reached."));
    htmx.onLoad(localTimes);
  });
})();
