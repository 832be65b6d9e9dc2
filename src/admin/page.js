"use strict";
// The decision page: polls /decisions every second, filters and counts in the page, and runs
// POST /explain from the form. The admin token, when one is needed, is kept in this tab's
// sessionStorage and sent as a bearer header: never in a URL.
(function () {
  const $ = (id) => document.getElementById(id);
  let token = sessionStorage.getItem("keyway-admin-token") || "";
  let decisions = [];
  let reasonFilter = "*";
  let routeFilter = "*";

  function headers(extra) {
    const h = Object.assign({}, extra || {});
    if (token) h["Authorization"] = "Bearer " + token;
    return h;
  }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c);
    return e;
  }

  function needToken() {
    $("token-box").hidden = false;
    $("status").textContent = "admin token required";
  }

  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = $("token").value;
    sessionStorage.setItem("keyway-admin-token", token);
    $("token").value = "";
    $("token-box").hidden = true;
    poll();
  });

  async function poll() {
    if ($("pause").checked) return;
    try {
      const r = await fetch("/decisions?limit=1000", { headers: headers(), cache: "no-store" });
      if (r.status === 401) { needToken(); return; }
      if (!r.ok) { $("status").textContent = "decisions: HTTP " + r.status; return; }
      decisions = await r.json();
      $("status").textContent = "live: updated " + new Date().toLocaleTimeString();
      render();
    } catch (e) {
      $("status").textContent = "keyway unreachable: " + e.message;
    }
  }

  function fillSelect(select, values, current) {
    const known = new Set(Array.from(select.options).map((o) => o.value));
    for (const v of values) {
      if (!known.has(v)) select.append(el("option", { value: v, text: v }));
    }
    select.value = current;
  }

  function render() {
    const reasons = new Map();
    const routes = new Set();
    for (const d of decisions) {
      if (d.route) routes.add(d.route);
      if (d.reason) reasons.set(d.reason, (reasons.get(d.reason) || 0) + 1);
    }
    fillSelect($("filter-reason"), Array.from(reasons.keys()).sort(), reasonFilter);
    fillSelect($("filter-route"), Array.from(routes).sort(), routeFilter);
    const counts = $("counts");
    counts.replaceChildren();
    const sorted = Array.from(reasons.entries()).sort((a, b) => b[1] - a[1]);
    if (sorted.length === 0) counts.append(el("span", { class: "muted", text: "none yet" }));
    for (const [reason, n] of sorted) {
      const b = el("button", { type: "button", class: "count" + (reason === reasonFilter ? " active" : ""), "data-reason": reason },
        el("span", { class: "reason", text: reason }), el("b", { text: String(n) }));
      b.addEventListener("click", () => setReason(reason === reasonFilter ? "*" : reason));
      counts.append(b);
    }
    const rows = decisions.filter((d) =>
      (reasonFilter === "*" || d.reason === reasonFilter) && (routeFilter === "*" || d.route === routeFilter));
    $("shown").textContent = rows.length + " of " + decisions.length + " shown";
    const body = $("decisions").tBodies[0];
    body.replaceChildren();
    for (const d of rows.slice(0, 200)) {
      const status = el("td", { class: "s" + String(d.status).charAt(0), text: String(d.status) });
      body.append(el("tr", { "data-reason": d.reason },
        el("td", { text: d.time.replace("T", " ").replace("Z", "") }),
        el("td", { text: d.method }),
        el("td", { class: "path", text: d.path, title: d.path }),
        el("td", { text: d.route }),
        status,
        el("td", { class: "reason", text: d.reason || "allowed" }),
        el("td", { text: d.authenticator }),
        el("td", { text: d.consumer }),
        el("td", { class: "num", text: d.duration_ms.toFixed(2) + " ms" })));
    }
  }

  function setReason(r) { reasonFilter = r; render(); }
  $("filter-reason").addEventListener("change", (e) => setReason(e.target.value));
  $("filter-route").addEventListener("change", (e) => { routeFilter = e.target.value; render(); });

  function lines(text, sep) {
    const out = {};
    for (const line of text.split("\n")) {
      const i = line.indexOf(sep);
      if (i > 0) out[line.slice(0, i).trim()] = line.slice(i + 1).trim();
    }
    return out;
  }

  $("explain-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const result = $("explain-result");
    result.replaceChildren(el("p", { class: "muted", text: "explaining…" }));
    const body = {
      method: $("ex-method").value,
      url: $("ex-url").value,
      headers: lines($("ex-headers").value, ":"),
      cookies: lines($("ex-cookies").value, "="),
    };
    try {
      const r = await fetch("/explain", { method: "POST", headers: headers({ "Content-Type": "application/json" }), body: JSON.stringify(body) });
      if (r.status === 401) { needToken(); result.replaceChildren(); return; }
      const report = await r.json();
      if (!r.ok) { result.replaceChildren(el("p", { class: "error", text: report.error || ("HTTP " + r.status) })); return; }
      showReport(report);
    } catch (e) {
      result.replaceChildren(el("p", { class: "error", text: e.message }));
    }
  });

  function showReport(rep) {
    const result = $("explain-result");
    const verdict = el("p", { class: "verdict" },
      el("span", { class: rep.decision, text: rep.decision.toUpperCase() + " " + rep.status }),
      " " + (rep.refusal ? rep.refusal.reason : (rep.upstream ? "→ upstream " + rep.upstream.name : "")),
      rep.route ? " (route " + rep.route + ")" : "");
    const facts = [];
    for (const c of rep.candidates) facts.push("lost: " + c.route + " (" + c.matcher + "): " + c.why);
    for (const a of rep.authenticators) {
      facts.push("authn " + a.name + " (" + a.type + "): looked in " + a.looked_in.join("; "));
      facts.push("  found " + (a.found || "nothing") + (a.claims.length ? "; claims " + a.claims.join(", ") : "") + "; " + a.decided);
      if (a.jwks) facts.push("  jwks " + a.jwks.url + " (" + a.jwks.state + ")");
    }
    if (rep.refusal) {
      facts.push("detail: " + rep.refusal.detail);
      if (rep.refusal.hint) facts.push("hint: " + rep.refusal.hint);
    }
    if (rep.redirect) facts.push("Location: " + rep.redirect);
    if (rep.undecided) facts.push(rep.undecided);
    if (rep.upstream) {
      facts.push(rep.request.method + " " + rep.upstream.url);
      for (const [n, v] of rep.upstream.headers) facts.push("  " + n + ": " + v);
    }
    const steps = el("ol", { class: "steps" });
    for (const s of rep.steps) {
      steps.append(el("li", {}, el("span", { class: "at", text: s.at_us + " µs" }), el("span", { class: "stage", text: s.stage }), s.note));
    }
    result.replaceChildren(verdict, el("h2", { text: "Steps" }), steps, el("div", { class: "detail", text: facts.join("\n") }));
  }

  poll();
  setInterval(poll, 1000);
})();
