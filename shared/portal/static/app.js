// The portal's page: a few views over the same /v1 API any client uses. No build step.
import {
  call, h, hasSession, problemText, problemWithFields, say, setSession, show, whenSignedOut,
} from "./ui.js";
import { connectionSettings, newConnectionPage, useApiDocument } from "./connectionform.js";
import { chart } from "./chart.js";
import { STATUS, deliveryLink, deliveryPage, metadataOf, resend } from "./delivery.js";
import { healthCard, healthCell, healthNotices, whatToDo } from "./health.js";
import { replayForm } from "./replay.js";
import { when, zoneNote } from "./time.js";

const API = "/v1/azureservicebusconnections";

let routes = null; // the API's OpenAPI paths: a button shows only where its route exists

// ------------------------------------------------------------------ sign-in

whenSignedOut(() => showSignIn("Your session has ended; sign in again."));

function showSignIn(message) {
  setSession(null);
  document.getElementById("nav").hidden = true;
  const key = h("input", { id: "api-key", type: "password", autocomplete: "off", required: true });
  const form = h("form", {
    onsubmit: async (e) => {
      e.preventDefault();
      const r = await fetch("/portal/session", { method: "POST", headers: { Authorization: key.value.trim() } });
      if (r.ok) { key.value = ""; start(await r.json()); } else say("That API key was not accepted.");
    },
  }, h("label", { for: "api-key" }, "API key"), key, h("button", { type: "submit" }, "Sign in"));
  show("Sign in",
    h("p", {}, message || "Open the sign-in link you were given, or paste an API key."), form);
}

async function signInWithCode(code) {
  history.replaceState(null, "", "/portal/#/"); // the code is single use: forget it at once
  const r = await fetch("/portal/session", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ Code: code }),
  });
  if (r.ok) start(await r.json()); else showSignIn("That sign-in link is used up or has expired.");
}

function start(session) {
  setSession(session.CsrfToken);
  document.getElementById("account").textContent = `Account ${session.Account}`;
  document.getElementById("nav").hidden = false;
  route();
}

document.getElementById("sign-out").addEventListener("click", async () => {
  await call("DELETE", "/portal/session");
  showSignIn("You are signed out.");
});

// ------------------------------------------------------------------ connections

function healthOf(c) { return c.Health ? c.Health.Status : "—"; }

async function listPage() {
  const r = await call("GET", API);
  if (!r.ok) return show("Connections", h("p", { class: "error" }, problemText(r.data)));
  const rows = r.data.map((c) => h("tr", {},
    h("td", {}, h("a", { href: `#/connections/${c.Uid}` }, c.Title || c.Uid),
      c.Confirmed === false ? h("span", { class: "Unconfirmed" }, " (unconfirmed)") : null),
    h("td", {}, c.QueueName), h("td", {}, c.Active ? "Yes" : "No"),
    h("td", { class: healthOf(c) }, healthCell(c.Health))));
  show("Connections",
    healthNotices(r.data),
    h("p", {}, h("a", { href: "#/new" }, "New connection")),
    rows.length ? h("table", {}, h("caption", {}, "Connections"),
      h("thead", {}, h("tr", {}, ["Connection", "Queue", "Active", "Health"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows)) : h("p", {}, "No connections yet."));
}

async function connectionPage(uid) {
  if (!uid) return newConnectionPage();
  const r = await call("GET", `${API}/${uid}`);
  if (!r.ok) return show("Connection", h("p", { class: "error" }, problemText(r.data)));
  const c = r.data;
  const actions = h("p", {},
    h("a", { href: `#/connections/${uid}/log` }, "Delivery log"), " ",
    h("button", { type: "button", onclick: () => sendTest(uid) }, "Send test message"));
  const resumable = c.Health && c.Health.Status === "Suspended" && hasRoute("post", `${API}/{uid}/resume`);
  show(c.Title || "Connection",
    healthCard(c.Health, resumable ? h("button", { type: "button", onclick: () => resume(uid) }, "Resume") : null),
    c.Confirmed === false ? confirmForm(uid) : null,
    actions, connectionSettings(c, route),
    hasRoute("post", `${API}/{uid}/messages/replay`) ? replayForm(API, uid) : null,
    h("h2", {}, "Deliveries per hour, last 14 days"), h("p", { class: "note" }, zoneNote()), await chart(uid, API));
}

// An Entra ID connection delivers nothing until its owner enters the code that its
// verification message carried to the queue (proof that the queue is theirs).
function confirmForm(uid) {
  const code = h("input", { id: "f-Code", name: "Code", type: "text", autocomplete: "one-time-code",
    "aria-describedby": "e-Code", spellcheck: "false" });
  const form = h("form", { onsubmit: (e) => { e.preventDefault(); confirmCode(uid, form, code.value.trim()); } },
    h("h2", {}, "Confirm this connection"),
    h("p", { class: "Unconfirmed" }, "Unconfirmed: nothing is delivered until you enter its code."),
    h("p", {}, "The verification message (event key System.ConnectionVerified) that arrived on the queue " +
      "carries the code in its Data, as ConfirmationCode. Events meanwhile are kept: replay them once confirmed."),
    h("label", { for: "f-Code" }, "Confirmation code"), code, h("p", { id: "e-Code", class: "error" }),
    h("button", { type: "submit" }, "Confirm"));
  return form;
}

async function confirmCode(uid, form, code) {
  const r = await call("POST", `${API}/${uid}/confirm`, { Code: code });
  if (r.ok) { await route(); say("Confirmed."); return; }
  const errors = (r.data && r.data.errors && r.data.errors.Code) || [problemText(r.data)];
  form.querySelector("#e-Code").textContent = errors.join(" ");
  form.querySelector("#f-Code").setAttribute("aria-invalid", "true");
  say("Not confirmed.");
}

async function sendTest(uid) {
  const r = await call("POST", `${API}/${uid}/test`);
  say(r.ok ? `Test message ${r.data.Status === 1 ? "delivered" : "failed"}.` : problemText(r.data));
  if (r.ok) location.hash = `#/connections/${uid}/messages/${r.data.Uid}`;
}

async function resume(uid) {
  const r = await call("POST", `${API}/${uid}/resume`);
  if (r.ok) await route();  // drawn again, without the button; the line below stays
  say(r.ok ? "Resumed." : problemText(r.data));
}

// Whether the API has a route (parameter names aside): resume and replay arrive in a later
// version, and the page offers them only where they exist.
function hasRoute(method, path) {
  const shape = (p) => p.replace(/\{[^}]*\}/g, "{}");
  return Object.entries(routes || {}).some(([p, ops]) => shape(p) === shape(path) && ops[method]);
}

// ------------------------------------------------------------------ delivery log

// The API's search filters (exact values; eventKey also `Prefix.*`), with their labels.
const SEARCHED = ["eventKey", "eventId", "subject", "messageId"];
const SEARCH_LABELS = { eventKey: "Event key (or Prefix.*)", eventId: "Event ID", subject: "Subject", messageId: "Message ID" };

async function logPage(uid, params) {
  const page = Number(params.get("page") || 1);
  const query = new URLSearchParams({ page, pageSize: 50, includeBody: "false" }); // the table shows no body
  if (params.get("since")) query.set("since", new Date(params.get("since")).toISOString());
  if (params.get("onlyFailed")) query.set("onlyFailed", "true");
  for (const name of SEARCHED) if (params.get(name)) query.set(name, params.get(name));
  const r = await call("GET", `${API}/${uid}/messages?${query}`);
  if (!r.ok) return show("Delivery log", filters(uid, params), h("p", { class: "error", role: "alert" }, problemWithFields(r.data)));
  const shown = r.data.Messages;
  const pages = Math.max(1, Math.ceil(r.data.TotalHits / 50));
  const go = (p) => { params.set("page", p); location.hash = `#/connections/${uid}/log?${params}`; };
  show("Delivery log",
    h("p", {}, h("a", { href: `#/connections/${uid}` }, "Back to the connection")),
    filters(uid, params), h("p", { class: "note" }, zoneNote()),
    h("table", {}, h("caption", {}, "Delivery log"),
      h("thead", {}, h("tr", {}, ["Sent", "Event key", "Status", "Attempt", "Milliseconds", "Message"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, shown.map((m) => h("tr", {},
        h("td", {}, when(m.RequestTimestamp)), h("td", {}, m.EventKey),
        h("td", { class: STATUS[m.Status] }, STATUS[m.Status]), h("td", {}, attemptOf(m)),
        h("td", {}, String(m.ElapsedMilliseconds)),
        h("td", {}, h("a", { href: `#/connections/${uid}/messages/${m.Uid}` }, "Details"), " ",
          deliveryLink(uid, m)))))),
    h("p", {}, `Page ${page} of ${pages} (${r.data.TotalHits} messages)`,
      h("button", { type: "button", disabled: page <= 1, onclick: () => go(page - 1) }, "Previous page"),
      h("button", { type: "button", disabled: page >= pages, onclick: () => go(page + 1) }, "Next page")));
}

function attemptOf(m) { return String(metadataOf(m).Attempt ?? "—"); }

function filters(uid, params) {
  const since = h("input", { id: "since", name: "since", type: "datetime-local" });
  since.value = params.get("since") || "";
  const failed = h("input", { id: "only-failed", name: "onlyFailed", type: "checkbox", checked: Boolean(params.get("onlyFailed")) });
  const inputs = SEARCHED.map((name) => {
    const input = h("input", { id: `search-${name}`, name, type: "search", "aria-describedby": "search-note" });
    input.value = params.get(name) || "";
    return input;
  });
  return h("form", { role: "search", onsubmit: (e) => {
    e.preventDefault();
    const p = new URLSearchParams();
    if (since.value) p.set("since", since.value);
    if (failed.checked) p.set("onlyFailed", "1");
    inputs.forEach((input) => { if (input.value.trim()) p.set(input.name, input.value.trim()); });
    location.hash = `#/connections/${uid}/log?${p}`;
  } }, h("fieldset", {}, h("legend", {}, "Search and filters"),
    h("label", { for: "since" }, "Since (your time zone)"), since,
    h("p", {}, failed, " ", h("label", { for: "only-failed", class: "inline" }, "Only failed")),
    inputs.flatMap((input) => [h("label", { for: input.id }, SEARCH_LABELS[input.name]), input]),
    h("p", { id: "search-note", class: "note" }, "Exact values, searched over the whole log (14 days); a search counts up to 10,000 matches."),
    h("button", { type: "submit" }, "Search")));
}

async function messagePage(uid, muid) {
  const r = await call("GET", `${API}/${uid}/messages/${muid}`);
  if (!r.ok) return show("Message", h("p", { class: "error" }, problemText(r.data)));
  const m = r.data;
  const meta = metadataOf(m);
  let body = m.MessageBody;
  try { body = JSON.stringify(JSON.parse(m.MessageBody), null, 2); } catch { /* not JSON: as sent */ }
  const row = (k, v) => [h("dt", {}, k), h("dd", {}, v ?? "—")];
  show(`Message ${m.EventKey}`,
    h("p", {}, h("a", { href: `#/connections/${uid}/log` }, "Back to the delivery log")),
    h("dl", {}, row("Status", STATUS[m.Status]), row("Sent", when(m.RequestTimestamp)),
      row("Event time", when(m.EventTimestamp)), row("Milliseconds", String(m.ElapsedMilliseconds)),
      row("Attempt", String(meta.Attempt ?? "—")), row("Queue", meta.QueueName), row("Message id", meta.MessageId),
      row("Delivery", deliveryLink(uid, m, m.Delivery ? `${m.Delivery.State} after ${m.Delivery.Attempts} attempt${m.Delivery.Attempts === 1 ? "" : "s"}: see them all` : "All attempts")),
      row("Error", meta.Error ? `${meta.Error.Category} ${meta.Error.Type}: ${meta.Error.Message}` : null),
      meta.Error ? row("What to do", whatToDo(meta.Error)) : null,
      row("Retry of", m.ParentServiceBusMessageUid
        ? h("a", { href: `#/connections/${uid}/messages/${m.ParentServiceBusMessageUid}` }, m.ParentServiceBusMessageUid) : null)),
    h("button", { type: "button", onclick: () => resend(API, uid, m) }, "Re-send"),
    h("h2", {}, "Body"), h("pre", { tabindex: "0" }, body),
    h("h2", {}, "Metadata"), h("pre", { tabindex: "0" }, JSON.stringify(meta, null, 2)));
}

// ------------------------------------------------------------------ routing

async function route() {
  if (!hasSession()) return;
  const [path, search] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(search || "");
  const parts = path.split("/").filter(Boolean);
  say("");
  if (parts[0] === "new") return connectionPage(null);
  if (parts[0] === "connections" && parts[2] === "log") return logPage(parts[1], params);
  if (parts[0] === "connections" && parts[2] === "messages") return messagePage(parts[1], parts[3]);
  if (parts[0] === "connections" && parts[2] === "deliveries") return deliveryPage(API, parts[1], decodeURIComponent(parts[3]));
  if (parts[0] === "connections") return connectionPage(parts[1]);
  return listPage();
}

function signInCode() { return new URLSearchParams(location.hash.replace(/^#/, "")).get("signin"); }

// A sign-in link pasted into an open tab arrives as a hashchange: whoever is signed in is
// signed out first (the link may be for another account), then the link signs in.
window.addEventListener("hashchange", async () => {
  const code = signInCode();
  if (!code) return route();
  if (hasSession()) { await call("DELETE", "/portal/session"); setSession(null); }
  return signInWithCode(code);
});

async function boot() {
  const doc = await fetch("/v1/openapi.json");
  const api = doc.ok ? await doc.json() : {};
  routes = api.paths || {};
  useApiDocument(api);
  const code = signInCode();
  if (code) return signInWithCode(code);
  const r = await fetch("/portal/session", { credentials: "same-origin" });
  if (r.ok) start(await r.json()); else showSignIn();
}

boot();
