// The portal's building blocks, shared by its views: elements, the API call, messages.
// Text from the API is only ever set as text (never as HTML): tenants' data is untrusted.
const main = document.getElementById("main");
const statusLine = document.getElementById("status");
let csrf = null;
let onSignedOut = () => {};

// The session's CSRF token (null when signed out) and what to do when the API answers 401.
export function setSession(token) { csrf = token; }
export function hasSession() { return !!csrf || csrf === ""; }
export function whenSignedOut(handler) { onSignedOut = handler; }

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, "");
    else if (v !== false && v != null) el.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c != null) el.append(c);
  return el;
}

export function say(text) { statusLine.textContent = text; }

export async function call(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
  const response = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const data = text && (response.headers.get("Content-Type") || "").includes("json") ? JSON.parse(text) : null;
  if (response.status === 401) onSignedOut();
  return { ok: response.ok, status: response.status, data };
}

export function problemText(problem) { return problem ? (problem.detail || problem.title) : "the request failed"; }

// With the properties a 400 names (a search value the API refused, say).
export function problemWithFields(problem) {
  const named = Object.entries((problem && problem.errors) || {}).map(([k, v]) => `${k}: ${[].concat(v).join(", ")}`);
  return [problemText(problem), ...named].join(". ");
}

export function show(title, ...content) {
  main.replaceChildren(h("h1", {}, title), ...content.filter((c) => c != null)); // null: a part not shown
  document.title = `${title} · Event delivery portal`;
  main.focus();
}
