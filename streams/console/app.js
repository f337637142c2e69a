// linkwatch alert console: vanilla ES2020, no build step, served by the worker itself.
//
// Every string in an alert can come from the people being reported (account names, regions,
// openers), so the page is built with createElement/textContent/setAttribute only and never
// with innerHTML. Identifiers are never written to the browser console.
"use strict";

const POLL_MS = 2000;
const KEY_STORE = "linkwatch.key";
// The moves docs/api.md allows, so buttons for impossible moves are off. The server still
// decides: a race with another responder comes back as 409 and is shown.
const MOVES = { acknowledge: ["open"], resolve: ["open", "acknowledged"], dismiss: ["open", "acknowledged"] };
const DONE = { acknowledge: "acknowledged", resolve: "resolved", dismiss: "dismissed" };
const FILTERS = ["state", "kind", "region", "platform"];
// Colour-blind-safe categorical colours (Okabe-Ito, yellow darkened to read on white),
// ordered so the first six, the usual number of regions, are far apart from each other.
const PALETTE = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#8c6d31", "#6a3d9a",
  "#56b4e9", "#d55e00", "#a89200", "#5f6b7a"];
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

const state = {
  key: null, me: null,
  // Queue rows are patched in place (alert_id -> {el, sig}) so the list never flickers.
  rows: new Map(), queueQuery: null, queueNote: "", everSeen: new Set(), unseen: new Set(),
  regions: new Set(), platforms: new Set(), // filter choices learnt from the alerts seen
  pollTimer: 0, pollSeq: 0, lastOk: 0,
  // A newer route or poll bumps its sequence number, so late answers to old requests are dropped.
  route: { name: "queue" }, routeSeq: 0,
  alert: null, // the alert view on the alert page
  colours: new Map(), // region -> colour, the same in the chips, the timeline and the graph
};

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;

// ---------------------------------------------------------------- DOM helpers

function make(el, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined && value !== false) el.setAttribute(name, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

const h = (tag, attrs, ...children) => make(document.createElement(tag), attrs, children);
const SVG = "http://www.w3.org/2000/svg";
const s = (tag, attrs, ...children) => make(document.createElementNS(SVG, tag), attrs, children);
const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
const list = (items) => (items || []).join(", ");

// ---------------------------------------------------------------- time

function parseTime(iso) {
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : t;
}

// Always UTC and spelled out: event times in alerts are UTC, and responders compare them.
function absolute(iso) {
  const t = parseTime(iso);
  return t === null ? "unknown" : `${new Date(t).toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

const day = (iso) => absolute(iso).slice(0, 10);

function relative(iso) {
  const t = parseTime(iso);
  if (t === null) return "";
  const minutes = Math.round((Date.now() - t) / 60000);
  if (minutes < 1) return "just now"; // also absorbs small clock skew between browser and worker
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.round(minutes / 60);
  if (hours < 48) return `${hours} h ago`;
  const days = Math.round(hours / 24);
  return days < 60 ? `${days} days ago` : `${Math.round(days / 30.4)} months ago`;
}

// Relative and absolute side by side: "3 min ago" for triage, the exact time for the record.
const when = (iso) => h("span", { class: "when" },
  h("time", { class: "rel", datetime: iso, title: absolute(iso) }, relative(iso)),
  h("span", { class: "abs" }, absolute(iso)));

const refreshRelativeTimes = () => document.querySelectorAll("time.rel")
  .forEach((el) => { el.textContent = relative(el.getAttribute("datetime")); });

// ---------------------------------------------------------------- API and session

async function api(path, { method = "GET", body } = {}) {
  const headers = { Authorization: `Bearer ${state.key}`, Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, { method, headers, cache: "no-store", body: body && JSON.stringify(body) });
  } catch {
    throw Object.assign(new Error("Cannot reach the linkwatch worker."), { status: 0 });
  }
  const data = await res.json().catch(() => null); // an error from a proxy may not be JSON
  if (res.ok) return data;
  const message = data && typeof data.error === "string" ? data.error : `The server answered ${res.status}.`;
  if (res.status === 401 && state.key) {
    signOut("You were signed out: the key is no longer accepted (revoked or unknown). Sign in with a valid key.");
  }
  throw Object.assign(new Error(message), { status: res.status });
}

const roleCannot = (what) => `Your role (${state.me ? state.me.role : "unknown"}) cannot ${what}.`;

function explain(err, what) {
  if (err.status === 403) return roleCannot(what);
  if (err.status === 404) return "Not found. It may have left the window.";
  if (err.status === 0) return "Cannot reach the linkwatch worker. Check that it is running.";
  return err.message;
}

function showSignedIn(signedIn) {
  $("app-view").hidden = !signedIn;
  $("session").hidden = !signedIn;
  $("login-view").hidden = signedIn;
}

function showLogin(message) {
  showSignedIn(false);
  $("login-message").textContent = message || "";
  $("login-key").value = "";
  $("login-key").focus();
  document.title = "linkwatch";
}

function signOut(message) {
  sessionStorage.removeItem(KEY_STORE);
  Object.assign(state, { key: null, me: null, alert: null, queueQuery: null });
  state.pollSeq += 1; // answers still in flight are dropped
  state.routeSeq += 1;
  clearTimeout(state.pollTimer);
  // Nothing personal stays in the page after sign-out, and the next person starts afresh.
  for (const id of ["alert-queue", "detail", "queue-count", "queue-note"]) $(id).replaceChildren();
  for (const name of FILTERS) $(`filter-${name}`).selectedIndex = 0;
  for (const set of [state.everSeen, state.unseen, state.regions, state.platforms]) set.clear();
  state.rows.clear();
  showLogin(message);
}

async function signIn(key, resumed) {
  state.key = key;
  let me;
  try {
    me = await api("/v1/whoami");
  } catch (err) {
    state.key = null;
    sessionStorage.removeItem(KEY_STORE);
    if (err.status === 401 && resumed) return; // signOut already said the key stopped working
    showLogin(err.status === 401
      ? "That key was not accepted: it is unknown, revoked or mistyped." : explain(err, "sign in"));
    return;
  }
  sessionStorage.setItem(KEY_STORE, key);
  state.me = me;
  $("whoami").replaceChildren(h("span", { class: "who-name" }, me.name || me.key_id),
    h("span", { class: "who-role" }, me.platform ? `${me.role} · ${me.platform}` : me.role));
  showSignedIn(true);
  poll();
  route();
}

// ---------------------------------------------------------------- badges

const alertState = (alert) => (alert.status && alert.status.state) || "open";
const kindLabel = (alert) => (alert.kind === "brigade" ? "Brigade" : "Serial");
const statePill = (value, testid) => h("span", { class: `pill state-${value}`, "data-testid": testid }, value);

function levelBadge(alert, big) {
  const tone = alert.kind === "brigade" ? "brigade" : `sev-${Math.max(2, Math.min(6, alert.level))}`;
  const title = `${alert.kind} alert, level ${alert.level}: victims in ${plural(alert.level, "region")}`;
  return h("span", { class: `badge ${tone}${big ? " badge-big" : ""}`, title }, h("small", null, "L"), alert.level);
}

const colourFor = (region) => state.colours.get(region)
  || state.colours.set(region, PALETTE[state.colours.size % PALETTE.length]).get(region);

// A tiny SVG, because the CSP forbids style attributes and fill is a plain attribute.
const swatch = (region) => s("svg", { class: "swatch", viewBox: "0 0 10 10", "aria-hidden": "true" },
  s("circle", { cx: 5, cy: 5, r: 5, fill: colourFor(region) }));

// ---------------------------------------------------------------- the queue

function filterQuery() {
  const params = new URLSearchParams();
  for (const name of FILTERS) if ($(`filter-${name}`).value) params.set(name, $(`filter-${name}`).value);
  return params.toString();
}

async function poll() {
  clearTimeout(state.pollTimer);
  const seq = ++state.pollSeq;
  const query = filterQuery();
  try {
    const data = await api(`/v1/alerts${query ? `?${query}` : ""}`);
    if (seq !== state.pollSeq) return;
    renderQueue(data.alerts || [], data.total ?? (data.alerts || []).length, query);
    state.lastOk = Date.now();
    setLive(true);
  } catch (err) {
    if (seq !== state.pollSeq || err.status === 401) return;
    if (err.status === 403) {
      $("queue-note").textContent = `${roleCannot("read alerts")} Sign in with a responder, analyst or admin key.`;
      setLive(false, "No access to alerts");
      return; // a role does not change while signed in: polling again would only fail again
    }
    setLive(false, err.status ? err.message : "Connection lost, retrying…");
  }
  if (seq === state.pollSeq && state.key) state.pollTimer = setTimeout(poll, POLL_MS);
}

function setLive(ok, problem) {
  Object.assign($("live"), { className: `live ${ok ? "live-ok" : "live-bad"}`, textContent: ok ? "Live" : problem,
    title: state.lastOk ? `Last updated ${new Date(state.lastOk).toLocaleTimeString()}` : "" });
}

function renderQueue(alerts, total, query) {
  const queue = $("alert-queue");
  // After a filter change every row is new to the view, but not new to the responder.
  const baseline = state.queueQuery !== query;
  state.queueQuery = query;
  learnOptions(alerts);
  const focused = document.activeElement;
  const focusedRow = focused?.closest(".row");
  const present = new Set();
  alerts.forEach((alert, index) => {
    const id = alert.alert_id;
    present.add(id);
    let row = state.rows.get(id);
    if (!row) {
      row = { el: h("li", { class: "row", "data-testid": "alert-row", "data-alert-id": id }), sig: "" };
      // Once the highlight has played, a later patch of the row must not replay it.
      row.el.addEventListener("animationend", () => row.el.classList.remove("is-arriving"));
      state.rows.set(id, row);
      if (!baseline && !state.everSeen.has(id)) {
        state.unseen.add(id);
        row.el.classList.add("is-arriving");
      }
    }
    state.everSeen.add(id);
    patchRow(row, alert);
    const at = queue.children[index];
    if (at !== row.el) queue.insertBefore(row.el, at || null);
  });
  for (const [id, row] of state.rows) {
    if (!present.has(id)) {
      row.el.remove();
      state.rows.delete(id);
    }
  }
  // Moving or patching rows drops keyboard focus; put it back on the same row.
  if (document.activeElement !== focused) {
    (focused?.isConnected ? focused : focusedRow?.firstElementChild)?.focus({ preventScroll: true });
  }
  markSelection();
  refreshRelativeTimes();

  const open = alerts.filter((alert) => alertState(alert) === "open").length;
  document.title = open ? `(${open} open) linkwatch` : "linkwatch";
  $("queue-count").textContent = String(total);
  let note = alerts.length ? "" : "No alerts match these filters. New alerts appear here within seconds.";
  if (total > alerts.length) note = `Showing the first ${alerts.length} of ${total}. Narrow the filters.`;
  state.queueNote = note;
  showQueueNote();

  // Another responder may act on the open alert: keep its status current without a request.
  const shown = state.alert && alerts.find((alert) => alert.alert_id === state.alert.alert_id);
  if (shown && JSON.stringify(shown.status) !== JSON.stringify(state.alert.status)) {
    state.alert = shown;
    renderStatus(shown);
  }
}

function showQueueNote() {
  const fresh = [...state.rows.keys()].filter((id) => state.unseen.has(id)).length;
  const note = fresh ? `${plural(fresh, "new alert")} not opened yet. ${state.queueNote}` : state.queueNote;
  // Rewriting the same text would make screen readers announce it again every poll.
  if ($("queue-note").textContent !== note) $("queue-note").textContent = note;
}

function patchRow(row, alert) {
  const value = alertState(alert);
  const sig = JSON.stringify([alert.kind, alert.level, alert.regions, alert.accounts.length,
    alert.platforms, alert.victim_count, alert.raised_at, value, state.unseen.has(alert.alert_id)]);
  if (sig === row.sig) return;
  row.sig = sig;
  row.el.classList.toggle("is-closed", value === "resolved" || value === "dismissed");
  const counts = ` · ${plural(alert.regions.length, "region")} · ${plural(alert.victim_count, "victim")}`;
  row.el.replaceChildren(h("a", { class: "row-link", href: `#/alerts/${enc(alert.alert_id)}` },
    levelBadge(alert),
    h("span", { class: "row-main" },
      h("span", { class: "row-top" },
        h("span", { class: "row-kind" }, kindLabel(alert), h("span", { class: "muted" }, counts)),
        state.unseen.has(alert.alert_id) ? h("span", { class: "new-tag" }, "new") : null,
        statePill(value, "alert-state")),
      h("span", { class: "row-regions" }, list(alert.regions)),
      h("span", { class: "row-meta" },
        h("span", null, `${plural(alert.accounts.length, "account")} · ${list(alert.platforms)}`),
        when(alert.raised_at)))));
}

function markSelection() {
  const selected = state.route.name === "alert" ? state.route.id : null;
  for (const [id, row] of state.rows) {
    row.el.classList.toggle("is-selected", id === selected);
    row.el.firstElementChild?.toggleAttribute("aria-current", id === selected);
  }
}

// Region and platform choices come from the alerts seen so far; they only ever grow.
function learnOptions(alerts) {
  for (const [field, known, any] of [["regions", state.regions, "Any region"],
    ["platforms", state.platforms, "Any platform"]]) {
    const before = known.size;
    for (const alert of alerts) for (const value of alert[field] || []) known.add(value);
    if (known.size === before) continue;
    const select = $(field === "regions" ? "filter-region" : "filter-platform");
    const current = select.value;
    select.replaceChildren(h("option", { value: "" }, any),
      ...[...known].sort().map((value) => h("option", { value }, value)));
    select.value = current;
  }
}

// ---------------------------------------------------------------- routing

function parseRoute() {
  const match = location.hash.match(/^#\/(alerts|actors)\/(.+)$/);
  try {
    if (match) return { name: match[1] === "alerts" ? "alert" : "actor", id: decodeURIComponent(match[2]) };
  } catch {
    // a malformed escape in a hand-typed address: fall through to the queue
  }
  return { name: "queue" };
}

function route() {
  if (!state.key) return;
  state.route = parseRoute();
  const seq = ++state.routeSeq;
  state.alert = null;
  state.colours = new Map();
  const { name, id } = state.route;
  const row = name === "alert" && state.unseen.delete(id) && state.rows.get(id);
  if (row) {
    row.el.classList.remove("is-arriving");
    row.el.querySelector(".new-tag")?.remove();
    showQueueNote();
  }
  if (name === "alert") showAlert(id, seq);
  else if (name === "actor") showActor(id, seq);
  else $("detail").replaceChildren($("empty-detail").content.cloneNode(true));
  markSelection();
}

// GET for the current route; null when the answer is stale or failed (the failure is shown).
async function fetchForRoute(path, seq, what, box) {
  try {
    const data = await api(path);
    return seq === state.routeSeq ? data : null;
  } catch (err) {
    if (seq !== state.routeSeq || err.status === 401 || !box) return null;
    box.replaceChildren(h("p", { class: "detail-message" }, explain(err, what)));
    return null;
  }
}

// ---------------------------------------------------------------- the alert page

async function showAlert(id, seq) {
  $("detail").replaceChildren(h("p", { class: "detail-message" }, "Loading alert…"));
  const alert = await fetchForRoute(`/v1/alerts/${enc(id)}`, seq, "read alerts", $("detail"));
  if (!alert) return;
  state.alert = alert;
  for (const region of [...alert.regions].sort()) colourFor(region);
  const byRegion = alert.victims_by_region || {};
  const fact = (term, value) => h("div", { class: "fact" }, h("dt", null, term), h("dd", null, value));
  const page = h("article", { class: "alert-page", "data-testid": "alert-page" },
    h("header", { class: "page-head" },
      levelBadge(alert, true),
      h("div", { class: "page-title" },
        h("h1", null, `${kindLabel(alert)} alert · level ${alert.level}`),
        h("p", { class: "ids" }, h("code", null, alert.alert_id), " · raised ", when(alert.raised_at))),
      statePill(alertState(alert), "alert-state")),
    h("p", { class: "reason", "data-testid": "alert-reason" }, alert.reason),
    h("dl", { class: "facts" },
      fact("Victims by region", h("ul", { class: "chips" }, alert.regions.map((region) => h("li", { class: "chip" },
        swatch(region), region, h("span", { class: "muted" }, ` ${byRegion[region] ?? ""}`))))),
      fact("Reported between", `${day(alert.first_seen)} and ${day(alert.last_seen)}`),
      fact("Victims", String(alert.victim_count)),
      fact("Accounts", `${alert.accounts.length} on ${list(alert.platforms)}`),
      fact("Categories", list(alert.categories))),
    actionsCard(),
    h("div", { id: "actor-sections", class: "sections" }, h("p", { class: "muted" }, "Loading the actor…")));
  $("detail").replaceChildren(page);
  $("detail").scrollTop = 0;
  renderStatus(alert);
  loadActor(alert.actor_id, alert, seq);
}

// The form is static markup (a template in index.html); only its buttons need wiring.
function actionsCard() {
  const card = $("actions-card").content.cloneNode(true);
  for (const action of Object.keys(MOVES)) card.getElementById(`action-${action}`).onclick = () => act(action);
  return card;
}

function renderStatus(alert) {
  const value = alertState(alert);
  const pill = document.querySelector('.alert-page .page-head [data-testid="alert-state"]');
  pill?.replaceWith(statePill(value, "alert-state"));
  for (const action of Object.keys(MOVES)) {
    if ($(`action-${action}`)) $(`action-${action}`).disabled = !MOVES[action].includes(value);
  }
  const items = [...((alert.status && alert.status.history) || [])].reverse().map((entry) => h("li", null,
    h("div", { class: "history-line" }, statePill(entry.state), ` by ${entry.by || "linkwatch"}`, when(entry.at)),
    entry.note ? h("blockquote", null, entry.note) : null));
  $("history")?.replaceChildren(...(items.length ? items : [h("li", { class: "muted" }, "Raised; no action yet.")]));
  if (value === "resolved" || value === "dismissed") {
    $("action-ok").textContent = `This alert is ${value}. No further moves are possible.`;
  }
}

async function act(action) {
  const alert = state.alert;
  const note = $("note").value.trim();
  $("action-error").textContent = "";
  $("action-ok").textContent = "";
  if (action === "dismiss" && !note) {
    $("action-error").textContent =
      "Write a note first: dismissing marks this alert a false positive, and the note records why.";
    $("note").focus();
    return;
  }
  for (const button of document.querySelectorAll(".status-card button")) button.disabled = true;
  try {
    const path = `/v1/alerts/${enc(alert.alert_id)}/${action}`;
    const view = await api(path, { method: "POST", body: note ? { note } : {} });
    if (state.alert?.alert_id !== alert.alert_id) return;
    state.alert = view;
    $("note").value = "";
    renderStatus(view);
    $("action-ok").textContent = `Marked ${DONE[action]}.`;
    if (state.rows.has(view.alert_id)) patchRow(state.rows.get(view.alert_id), view);
    poll();
  } catch (err) {
    if (err.status === 401 || state.alert?.alert_id !== alert.alert_id) return;
    $("action-error").textContent = err.status === 409
      ? `Not allowed: ${err.message} Someone may have acted on it first; the current status is shown.`
      : explain(err, `${action} alerts`);
    renderStatus(state.alert);
    // On a conflict the page is out of date: fetch the status that won.
    if (err.status === 409) {
      const view = await api(`/v1/alerts/${enc(alert.alert_id)}`).catch(() => null);
      if (view && state.alert?.alert_id === view.alert_id) renderStatus((state.alert = view));
    }
  }
}

// ---------------------------------------------------------------- the actor

async function loadActor(actorId, alert, seq) {
  const actor = await fetchForRoute(`/v1/actors/${enc(actorId)}`, seq, "read actors", $("actor-sections"));
  if (!actor) return;
  const box = $("actor-sections");
  const merged = actor.merged_into && h("p", { class: "notice" }, "This actor has since merged into ",
    h("a", { href: `#/actors/${enc(actor.merged_into)}` }, h("code", null, actor.merged_into)),
    ": its accounts, victims and graph are shown there now.");
  if (merged) {
    // An alert still carries its own evidence; the live actor is elsewhere now.
    box.replaceChildren(merged, ...(alert ? [
      section("Accounts in this alert", accountList(alert.accounts, null)),
      section("Why these accounts are one actor", linkList(alert.links)),
      section(`Reports behind this alert (${alert.report_ids.length})`, reportList(alert.report_ids))] : []));
  } else {
    for (const region of [...actor.regions].sort()) colourFor(region);
    box.replaceChildren(...actorSections(actor, alert));
    loadGraph(actor.actor_id, seq);
  }
}

// An actor of its own (#/actors/<id>), reached from a merge notice.
function showActor(id, seq) {
  $("detail").replaceChildren(h("article", { class: "actor-page" },
    h("header", { class: "page-head" }, h("div", { class: "page-title" },
      h("h1", null, "Actor"), h("p", { class: "ids" }, h("code", null, id)))),
    h("div", { id: "actor-sections", class: "sections" }, h("p", { class: "muted" }, "Loading the actor…"))));
  $("detail").scrollTop = 0;
  loadActor(id, null, seq);
}

const section = (title, ...body) => h("section", { class: "card" }, h("h2", null, title), ...body);

function actorSections(actor, alert) {
  const others = (actor.alerts || []).filter((other) => other.alert_id !== alert?.alert_id);
  const reports = alert ? alert.report_ids : actor.report_ids;
  const openers = actor.shared_openers || [];
  const merged = actor.merged_actor_ids || [];
  return [
    alert ? null : h("p", { class: "reason" }, `${plural(actor.accounts.length, "account")} with victims in `
      + `${plural(actor.regions.length, "region")} (${list(actor.regions)}).`),
    h("div", { class: "two-up" },
      section(`Accounts (${actor.accounts.length})`, accountList(actor.accounts, alert)),
      section("Why these accounts are one actor", linkList(alert ? alert.links : actor.links),
        merged.length ? h("p", { class: "muted" }, "Merged with earlier actors: ", merged.map((id, i) =>
          [i ? ", " : "", h("a", { href: `#/actors/${enc(id)}` }, h("code", null, id))])) : null,
        openers.length ? h("div", { class: "openers" }, h("h3", null, "Shared openers"), h("ul", null, openers.map((o) =>
          h("li", null, h("q", null, o.opener), ` used by ${plural(o.accounts, "account")}`)))) : null)),
    section(`Victims by region over time (${actor.victims.length})`, timelineSvg(actor.victims)),
    section("Actor and victims",
      h("div", { id: "graph-box", class: "graph-box" }, h("p", { class: "muted" }, "Loading the graph…"))),
    h("div", { class: "two-up" },
      section(`${alert ? "Reports behind this alert" : "Reports"} (${reports.length})`, reportList(reports)),
      section(`${alert ? "Other alerts" : "Alerts"} for this actor (${others.length})`, others.length
        ? h("ul", { class: "other-alerts" }, others.map((other) => h("li", null,
          h("a", { href: `#/alerts/${enc(other.alert_id)}` }, levelBadge(other),
            `${kindLabel(other)} · ${plural(other.regions.length, "region")}`,
            statePill(alertState(other)), when(other.raised_at)))))
        : h("p", { class: "muted" }, "None."))),
  ].filter(Boolean);
}

const accountList = (accounts, alert) => h("ul", { class: "accounts", "data-testid": "actor-accounts" },
  accounts.map((account) => h("li", null, h("code", null, account),
    alert && !alert.accounts.includes(account) ? h("span", { class: "tag" }, "linked after this alert") : null)));

function linkList(links) {
  if (!links || !links.length) {
    return h("p", { class: "muted", "data-testid": "alert-links" }, "One account: nothing needed linking.");
  }
  return h("ul", { class: "links", "data-testid": "alert-links" }, links.map((link) => h("li", null,
    h("code", null, link.accounts[0]), " & ", h("code", null, link.accounts[1]),
    " shared ", h("strong", null, link.signal))));
}

const reportList = (ids) => h("ul", { class: "reports" }, ids.map((id) => h("li", null, h("code", null, id))));

// ---------------------------------------------------------------- timeline

// At most about seven ticks, on whole hours, days, weeks, months or years (UTC).
function timeTicks(t0, t1) {
  const HOUR = 3600e3;
  const date = (d) => `${d.getUTCDate()} ${MONTHS[d.getUTCMonth()]}`;
  const hour = (d) => `${date(d)} ${String(d.getUTCHours()).padStart(2, "0")}:00`;
  for (const [size, label] of [[HOUR, hour], [6 * HOUR, hour], [24 * HOUR, date], [168 * HOUR, date]]) {
    if ((t1 - t0) / size > 7) continue;
    const ticks = [];
    for (let t = Math.ceil(t0 / size) * size; t <= t1; t += size) ticks.push({ t, text: label(new Date(t)) });
    return ticks;
  }
  const months = [1, 2, 3, 6, 12, 24, 60].find((n) => (t1 - t0) / (730 * HOUR * n) <= 7) || 120;
  const ticks = [];
  const first = new Date(t0);
  for (let index = first.getUTCFullYear() * 12 + first.getUTCMonth() + 1; ; index += 1) {
    const t = Date.UTC(Math.floor(index / 12), index % 12, 1);
    if (t > t1) return ticks;
    const year = Math.floor(index / 12);
    if (index % months === 0) ticks.push({ t, text: months < 12 ? `${MONTHS[index % 12]} ${year}` : String(year) });
  }
}

function timelineSvg(victims) {
  const items = victims
    .map((victim) => ({ victim, start: parseTime(victim.first_seen), end: parseTime(victim.last_seen) }))
    .filter((item) => item.start !== null).sort((a, b) => a.start - b.start);
  // Lanes in order of each region's first victim: a serial actor's moves read as a staircase.
  const lanes = [...new Set(items.map((item) => item.victim.region))];
  const [width, left, right, top] = [800, 120, 24, 12];
  const laneHeight = lanes.length > 12 ? 18 : 30;
  const axisY = top + lanes.length * laneHeight;
  const times = items.flatMap((item) => [item.start, item.end ?? item.start]);
  const pad = times.length ? Math.max((Math.max(...times) - Math.min(...times)) * 0.04, 3600e3) : 3600e3;
  const [t0, t1] = times.length
    ? [Math.min(...times) - pad, Math.max(...times) + pad] : [Date.now() - pad, Date.now() + pad];
  const x = (t) => left + ((t - t0) / (t1 - t0)) * (width - left - right);
  const y = (region) => top + lanes.indexOf(region) * laneHeight + laneHeight / 2;
  const range = items.length
    ? `, from ${day(items[0].victim.first_seen)} to ${day(items[items.length - 1].victim.first_seen)}` : "";
  return s("svg", {
    class: "timeline", "data-testid": "timeline", viewBox: `0 0 ${width} ${axisY + 30}`, role: "img",
    "aria-label": `Timeline of ${plural(items.length, "victim")} in ${plural(lanes.length, "region")}${range}`,
  },
  lanes.map((region, i) => s("g", { class: "lane" },
    i % 2 ? null : s("rect", {
      x: left, y: y(region) - laneHeight / 2, width: width - left - right, height: laneHeight, class: "lane-band",
    }),
    s("text", { x: left - 10, y: y(region) + 4, "text-anchor": "end", class: "lane-label" }, region))),
  timeTicks(t0, t1).map((tick) => s("g", { class: "tick" },
    s("line", { x1: x(tick.t), x2: x(tick.t), y1: top - 4, y2: axisY, class: "grid" }),
    s("text", { x: x(tick.t), y: axisY + 18, "text-anchor": "middle" }, tick.text))),
  s("line", { x1: left, x2: width - right, y1: axisY, y2: axisY, class: "axis" }),
  items.map(({ victim, start, end }) => s("g", { class: "victim" },
    s("title", null, `${victim.victim} in ${victim.region}\nfirst reported ${absolute(victim.first_seen)}\n`
      + `last reported ${absolute(victim.last_seen)}\n${list(victim.categories)}\nreports: ${list(victim.report_ids)}`),
    x(end) - x(start) > 8 ? s("line", { // a span shorter than the dot would only look like a smudge
      x1: x(start), x2: x(end), y1: y(victim.region), y2: y(victim.region), stroke: colourFor(victim.region), class: "span",
    }) : null,
    s("circle", { cx: x(start), cy: y(victim.region), r: 6, fill: colourFor(victim.region), class: "dot" }))));
}

// ---------------------------------------------------------------- graph

async function loadGraph(actorId, seq) {
  const graph = await fetchForRoute(`/v1/actors/${enc(actorId)}/graph?hops=1`, seq, "read the graph", $("graph-box"));
  if (!graph || !$("graph-box")) return;
  $("graph-box").replaceChildren(graphSvg(graph, actorId), graphLegend(graph));
}

// hops=1 is one actor and its victims: the actor in the centre, its victims on a ring.
function graphSvg(graph, actorId) {
  const nodes = graph.nodes || [];
  const centre = nodes.find((node) => node.id === `actor:${actorId}`) || nodes.find((node) => node.kind === "actor");
  // Sorted by region so each region forms one coloured arc.
  const victims = nodes.filter((node) => node.kind === "victim")
    .sort((a, b) => `${a.region}\u0000${a.label}`.localeCompare(`${b.region}\u0000${b.label}`));
  const ring = victims.length <= 8 ? 115 : 150;
  const [width, height] = [800, 2 * ring + 100];
  const [cx, cy] = [width / 2, height / 2];
  const pos = new Map(centre ? [[centre.id, { x: cx, y: cy }]] : []);
  victims.forEach((node, i) => {
    const angle = -Math.PI / 2 + (2 * Math.PI * i) / victims.length;
    pos.set(node.id, { x: cx + ring * Math.cos(angle), y: cy + ring * Math.sin(angle), angle });
  });
  const r = Math.max(3, Math.min(10, (2 * Math.PI * ring) / Math.max(1, victims.length) / 3));
  const labelOf = (id) => nodes.find((node) => node.id === id)?.label ?? id;
  return s("svg", {
    class: "graph", "data-testid": "actor-graph", viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `Graph of the actor and ${plural(victims.length, "victim")}`,
  },
  (graph.edges || graph.links || []).filter((edge) => pos.has(edge.source) && pos.has(edge.target)).map((edge) => {
    const [a, b] = [pos.get(edge.source), pos.get(edge.target)];
    const weight = 1.2 + Math.min(3, Math.log2(Number(edge.reports) || 1));
    return s("line", { x1: a.x, y1: a.y, x2: b.x, y2: b.y, class: "edge", "stroke-width": weight },
      s("title", null, `${labelOf(edge.source)} → ${labelOf(edge.target)}\n${edge.categories || ""}\n`
        + `${plural(Number(edge.reports) || 0, "report")}, ${absolute(edge.first_seen)} to ${absolute(edge.last_seen)}`));
  }),
  victims.map((node) => {
    const { x, y, angle } = pos.get(node.id);
    const [cos, sin] = [Math.cos(angle), Math.sin(angle)];
    const anchor = Math.abs(cos) < 0.3 ? "middle" : cos > 0 ? "start" : "end";
    const text = String(node.label ?? node.id);
    return s("g", { class: "node victim", "data-testid": "graph-node", "data-kind": "victim" },
      s("title", null, `victim ${node.label}\nregion: ${node.region || ""}\nplatform: ${node.platform || ""}`),
      s("circle", { cx: x, cy: y, r, fill: colourFor(node.region) }),
      // Labels only while they fit; a brigade of hundreds keeps its titles on hover.
      victims.length > 24 ? null : s("text", {
        x: cx + (ring + r + 8) * cos,
        y: cy + (ring + r + 8) * sin + 4 + (anchor === "middle" ? Math.sign(sin) * 6 : 0),
        "text-anchor": anchor,
      }, text.length > 24 ? `${text.slice(0, 23)}…` : text));
  }),
  centre ? s("g", { class: "node actor", "data-testid": "graph-node", "data-kind": "actor" },
    s("title", null, `actor ${centre.label}\naccounts: ${centre.accounts || ""}\nplatforms: ${centre.platforms || ""}\n`
      + `regions: ${centre.regions ?? ""}\nhighest alert level: ${centre.level ?? 0}`),
    s("circle", { cx, cy, r: 26 }),
    s("text", { x: cx, y: cy + 5, "text-anchor": "middle", class: "node-level" }, `L${centre.level ?? 0}`),
    s("text", { x: cx, y: cy + 44, "text-anchor": "middle", class: "node-caption" },
      plural(String(centre.accounts || "").split(",").filter(Boolean).length, "account"))) : null);
}

function graphLegend(graph) {
  const counts = new Map();
  for (const node of graph.nodes || []) {
    if (node.kind === "victim") counts.set(node.region, (counts.get(node.region) || 0) + 1);
  }
  return h("ul", { class: "legend", "aria-label": "Legend" },
    h("li", null, h("span", { class: "swatch actor-swatch" }), "actor (L = its highest alert level)"),
    [...counts].sort((a, b) => String(a[0]).localeCompare(String(b[0])))
      .map(([region, n]) => h("li", null, swatch(region), `${region} (${n})`)));
}

// ---------------------------------------------------------------- start

function start() {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("login-key").value.trim();
    $("login-message").textContent = key ? "Checking the key…" : "Paste an API key first.";
    if (key) signIn(key);
  });
  $("logout").addEventListener("click", () => {
    history.replaceState(null, "", location.pathname); // the next person starts at the queue
    signOut("You signed out.");
  });
  for (const name of FILTERS) $(`filter-${name}`).addEventListener("change", poll);
  window.addEventListener("hashchange", route);
  const saved = sessionStorage.getItem(KEY_STORE);
  if (saved) signIn(saved, true);
  else showLogin("");
}

start();
