/* Account page: live expiry countdown, status polling and the "Refresh now" button.
   Talks only to this site: GET account/status/ (token metadata) and POST
   /synerise/auth/refresh/ (django-synerise's API) with the CSRF token. */
(function () {
  "use strict";
  var panel = document.getElementById("token-panel");
  if (!panel) { return; }
  var countdown = document.getElementById("countdown");
  var button = document.getElementById("refresh-now");
  var result = document.getElementById("refresh-result");
  var csrf = panel.querySelector("input[name=csrfmiddlewaretoken]").value;
  var expiresAt = panel.dataset.expiresAt ? Date.parse(panel.dataset.expiresAt) : NaN;
  // Offset between the server clock and this browser's clock, so the countdown is right.
  var skew = panel.dataset.serverTime ? Date.parse(panel.dataset.serverTime) - Date.now() : 0;
  var lastVersion = null;
  var refreshedField = panel.querySelector("[data-field=refreshed_at]");
  var refreshedAt = (refreshedField && refreshedField.getAttribute("datetime")) || null;

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function formatTime(iso) {
    if (!iso) { return null; }
    var d = new Date(iso);
    return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " +
      pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds()) + " UTC";
  }

  function tick() {
    if (isNaN(expiresAt)) { countdown.textContent = "\u2013"; return; }
    var left = Math.round((expiresAt - (Date.now() + skew)) / 1000);
    countdown.classList.toggle("expired", left <= 0);
    countdown.classList.toggle("soon", left > 0 && left < 60);
    if (left <= 0) { countdown.textContent = "expired"; return; }
    var h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60), s = left % 60;
    countdown.textContent = (h ? h + "h " + pad(m) + "m " : m + "m ") + pad(s) + "s";
  }

  function setField(name, value, fallback) {
    var el = panel.querySelector("[data-field=" + name + "]");
    if (!el) { return; }
    var text = value === null || value === undefined || value === "" ? fallback : String(value);
    if (el.tagName === "TIME") {
      el.setAttribute("datetime", value || "");
      text = formatTime(value) || fallback;
    }
    if (el.textContent !== text) {
      el.textContent = text;
      el.classList.remove("flash");
      void el.offsetWidth;  // restart the highlight animation
      el.classList.add("flash");
    }
  }

  function render(data) {
    if (data.server_time) { skew = Date.parse(data.server_time) - Date.now(); }
    if (!data.has_token) {
      setField("status", null, "no token");
      expiresAt = NaN;
      tick();
      return;
    }
    var badge = panel.querySelector("[data-field=status]");
    badge.dataset.status = data.status;
    setField("status", data.status_display, data.status);
    setField("expires_at", data.expires_at, "\u2013");
    setField("refreshed_at", data.refreshed_at, "not refreshed yet");
    refreshedAt = data.refreshed_at || null;
    setField("refresh_at", data.refresh_at, "\u2013");
    setField("issued_at", data.issued_at, "\u2013");
    setField("last_used_at", data.last_used_at, "\u2013");
    setField("version", data.version, "\u2013");
    setField("failure_count", data.failure_count + (data.last_error ? " (" + data.last_error + ")" : ""), "0");
    expiresAt = data.expires_at ? Date.parse(data.expires_at) : NaN;
    if (lastVersion !== null && data.version !== lastVersion && !button.disabled) {
      result.textContent = "Token refreshed in the background at " + (formatTime(data.refreshed_at) || "?") + ".";
    }
    lastVersion = data.version;
    tick();
  }

  function poll() {
    return fetch(panel.dataset.statusUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) { render(data); } })
      .catch(function () { /* offline: keep counting down */ });
  }

  button.addEventListener("click", function () {
    button.disabled = true;
    result.textContent = "Refreshing\u2026";
    fetch(panel.dataset.refreshUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrf, Accept: "application/json" }
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (body) { return { ok: r.ok, status: r.status, body: body }; });
    }).then(function (res) {
      if (res.ok && Date.parse(res.body.expires_at) === expiresAt) {
        // Stored less than a minute ago (by the sign-in, or by a refresh): the API returns
        // it without calling Synerise. Say which, as the page does.
        result.textContent = "The token is still fresh (" +
          (refreshedAt ? "refreshed less than a minute ago" : "signed in less than a minute ago, never refreshed") +
          "); it expires at " + formatTime(res.body.expires_at) + ".";
      } else if (res.ok) {
        result.textContent = "Token refreshed; it now expires at " + formatTime(res.body.expires_at) + ".";
      } else {
        result.textContent = "Refresh failed (" + res.status + "): " + (res.body.detail || "unknown error") + ".";
      }
      lastVersion = null;
      return poll();
    }).catch(function () {
      result.textContent = "Refresh failed: the site is not reachable.";
    }).then(function () { button.disabled = false; });
  });

  tick();
  setInterval(tick, 1000);
  poll();
  setInterval(poll, Number(panel.dataset.pollMs || 3000));
})();
