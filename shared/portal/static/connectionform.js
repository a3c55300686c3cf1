// The connection form (issue 26): every setting of the API's ConnectionInput schema with its
// help text, an event picker over the catalogue, per-event settings, and delete with a
// confirmation. The fields, their kinds, defaults, choices and help come from the API's own
// OpenAPI document (one definition); this module adds only labels, grouping and layout.
import { when } from "./time.js";
import { call, h, problemText, say, show } from "./ui.js";

const API = "/v1/azureservicebusconnections";

let inputSchema = { properties: {} }; // ConnectionInput
let eventSettingsSchema = { properties: {} }; // EventSettings (AdvancedSettings' values)
let consentRoute = false; // GET /v1/entra/consent: where the service has an Entra ID application

// Called once with /v1/openapi.json (app.js fetches it).
export function useApiDocument(doc) {
  const schemas = (doc && doc.components && doc.components.schemas) || {};
  inputSchema = schemas.ConnectionInput || inputSchema;
  eventSettingsSchema = schemas.EventSettings || eventSettingsSchema;
  consentRoute = Boolean(doc && doc.paths && doc.paths["/v1/entra/consent"]);
}

// How the page groups the settings; a property of the schema not named here is shown under
// "Other settings", so a new setting of the API appears without a change to the page.
const GROUPS = [
  ["Endpoint", "Where the messages go, and how the service signs in to your namespace.",
    ["Title", "Authentication", "ServiceBusConnectionString", "FullyQualifiedNamespace", "TenantId", "QueueName"]],
  ["Claim-check storage", "Optional: a blob container for bodies too large for a Service Bus message " +
    "(the message then carries a reference to the blob).",
    ["BlobContainerConnectionString", "BlobServiceUri", "BlobContainerName"]],
  ["Events", "Which events the connection receives.", ["Active", "EnabledEvents", "AdvancedSettings"]],
  ["Delivery options", "How each message is shaped and retried.",
    ["SessionIdSource", "TimeToLive", "ApplicationProperties", "MessageFormat", "RetryPolicy"]],
];
const NOT_SHOWN = ["Uid"];
const LABELS = {
  Title: "Title", Authentication: "Authentication", ServiceBusConnectionString: "Service Bus connection string",
  FullyQualifiedNamespace: "Namespace (fully qualified)", TenantId: "Entra ID tenant ID", QueueName: "Queue name",
  BlobContainerConnectionString: "Blob container connection string", BlobServiceUri: "Blob service URI",
  BlobContainerName: "Blob container name", Active: "Active", EnabledEvents: "Enabled events",
  AdvancedSettings: "Per-event settings", SessionIdSource: "Session ID source", TimeToLive: "Time to live",
  ApplicationProperties: "Application properties", MessageFormat: "Message format", RetryPolicy: "Retry policy",
};
// Connection strings hold secrets: never shown back (the API answers *** in their place).
const SECRETS = ["ServiceBusConnectionString", "BlobContainerConnectionString"];
// Fields that belong to one Authentication only; the other's are hidden and sent as null.
const ONLY_WITH = {
  ServiceBusConnectionString: "ConnectionString", BlobContainerConnectionString: "ConnectionString",
  FullyQualifiedNamespace: "EntraId", TenantId: "EntraId", BlobServiceUri: "EntraId",
};

const labelOf = (name) => LABELS[name] || name.replace(/([a-z])([A-Z])/g, "$1 $2");
const propertyOf = (name) => inputSchema.properties[name] || {};
const choicesOf = (p) => p.enum || ((p.anyOf || []).find((s) => s.enum) || {}).enum;
const isSecret = (name) => SECRETS.includes(name);

// ------------------------------------------------------------------ pages

export function newConnectionPage() {
  show("New connection", settingsForm({ Active: true, EnabledEvents: ["*"] }, null));
}

// The settings of a stored connection and its delete button, for the connection's page;
// `reload` draws the page again after a save.
export function connectionSettings(connection, reload) {
  return h("section", { "aria-labelledby": "settings-heading" },
    h("h2", { id: "settings-heading" }, "Settings"),
    h("p", { class: "note" }, "Secrets are never shown: leave a connection string empty to keep the stored one."),
    settingsForm(connection, reload),
    deleteSection(connection));
}

// ------------------------------------------------------------------ the form

// One field: its label, help (the schema's description), control, and the slot where the
// API's message about it goes. Ids: f- the control, h- the help, e- the message, w- all.
function field(name, control, ...help) {
  let description = propertyOf(name).description;
  // The API's words on *** are for clients that send back what they read; the page keeps
  // secrets its own way (an empty field), said next to the field.
  if (description && isSecret(name)) description = description.split(/(?<=\.) /).filter((s) => !s.includes("***")).join(" ");
  const hint = h("p", { id: `h-${name}`, class: "note" }, description || null, ...help);
  const error = h("p", { id: `e-${name}`, class: "error" });
  const legend = control.element.tagName === "FIELDSET" ? control.element.querySelector("legend") : null;
  if (legend) legend.after(hint);
  const labelled = control.label !== false;
  return h("div", { class: "field", id: `w-${name}` },
    labelled ? h("label", { for: `f-${name}` }, labelOf(name)) : null, labelled ? hint : null,
    control.element, labelled || legend ? null : hint, error);
}

const described = (name) => ({ "aria-describedby": `h-${name} e-${name}` });

function textControl(name, value) {
  const property = propertyOf(name);
  const example = (property.examples || [])[0];
  const input = h("input", { id: `f-${name}`, name, type: "text", spellcheck: "false", autocomplete: "off",
    placeholder: typeof example === "string" ? example : null, ...described(name) });
  input.value = value ?? "";
  return { element: input, read: () => input.value.trim() || null };
}

function secretControl(name, stored, editing) {
  const input = h("input", { id: `f-${name}`, name, type: "text", spellcheck: "false", autocomplete: "off", ...described(name) });
  const keep = editing && stored; // the API keeps a secret sent back as the *** it answered
  const remove = keep && name === "BlobContainerConnectionString"
    ? h("input", { id: `f-${name}-remove`, type: "checkbox" }) : null;
  const element = h("div", {}, input,
    keep ? h("p", { class: "note stored" }, "Stored (secrets hidden): ", h("code", {}, stored), ". Leave empty to keep it.") : null,
    remove ? h("p", {}, remove, " ", h("label", { for: remove.id, class: "inline" }, "Remove the stored connection string")) : null);
  return { element, read: () => input.value.trim() || (remove && remove.checked ? null : keep || null) };
}

function choiceControl(name, value) {
  const property = propertyOf(name);
  const select = h("select", { id: `f-${name}`, name, ...described(name) },
    choicesOf(property).map((choice) => h("option", { value: choice }, choice)));
  select.value = value ?? property.default ?? choicesOf(property)[0];
  return { element: select, read: () => select.value };
}

function checkControl(name, value) {
  const box = h("input", { id: `f-${name}`, name, type: "checkbox", checked: value ?? propertyOf(name).default ?? false, ...described(name) });
  const element = h("p", {}, box, " ", h("label", { for: box.id, class: "inline" }, labelOf(name)));
  return { element, label: false, read: () => box.checked };
}

// ApplicationProperties: rows of name and value.
function propertiesControl(name, value) {
  const rows = h("div", { class: "pairs" });
  const add = h("button", { type: "button", onclick: () => addRow().focus() }, "Add a property");
  let count = 0;
  const addRow = (key = "", text = "") => {
    const n = ++count;
    const k = h("input", { id: `ap-name-${n}`, type: "text", spellcheck: "false", class: "ap-name" });
    const v = h("input", { id: `ap-value-${n}`, type: "text", spellcheck: "false", class: "ap-value" });
    k.value = key; v.value = text;
    const row = h("div", { class: "pair" },
      h("label", { for: k.id }, `Name ${n}`), k, h("label", { for: v.id }, `Value ${n}`), v,
      h("button", { type: "button", "aria-label": `Remove property ${n}`, onclick: () => { row.remove(); add.focus(); say(`Property ${n} removed.`); } }, "Remove"));
    rows.append(row);
    return k;
  };
  Object.entries(value || {}).forEach(([k, v]) => addRow(k, v));
  const element = h("fieldset", { id: `f-${name}`, tabindex: "-1", ...described(name) }, h("legend", {}, labelOf(name)), rows, add);
  const pairs = () => [...rows.querySelectorAll(".pair")]
    .map((row) => [row.querySelector(".ap-name").value.trim(), row.querySelector(".ap-value").value])
    .filter(([k, v]) => k || v);
  // A JSON object holds a name once: a second row of the same name would be lost unseen.
  const problem = () => {
    const names = pairs().map(([k]) => k);
    const twice = names.find((k, i) => names.indexOf(k) !== i);
    return twice === undefined ? null : `the name ${twice} is given twice: keep one`;
  };
  return { element, label: false, read: () => Object.fromEntries(pairs()), problem };
}

// Anything else keeps its value as read (a later setting the page cannot edit yet survives a save).
function keptControl(name, value) {
  return { element: h("p", { class: "note" }, "Not editable here; kept as it is."), label: false, read: () => value };
}

function controlFor(name, connection, editing) {
  const property = propertyOf(name);
  const value = connection[name];
  const types = [property.type, ...(property.anyOf || []).map((s) => s.type)];
  if (isSecret(name)) return secretControl(name, value, editing);
  if (choicesOf(property)) return choiceControl(name, value);
  if (types.includes("boolean")) return checkControl(name, value);
  if (name === "ApplicationProperties") return propertiesControl(name, value);
  if (types.includes("string")) return textControl(name, value);
  return keptControl(name, value);
}

function settingsForm(connection, reload) {
  if (!Object.keys(inputSchema.properties).length) { // the fields are the API's: none, no form
    return h("p", { class: "error" }, "The settings cannot be shown: the API's description (/v1/openapi.json) did not load. Reload the page.");
  }
  const editing = Boolean(connection.Uid);
  const controls = {};
  const shown = GROUPS.flatMap(([, , names]) => names);
  const others = Object.keys(inputSchema.properties).filter((n) => !shown.includes(n) && !NOT_SHOWN.includes(n));
  const groups = [...GROUPS, ...(others.length ? [["Other settings", null, others]] : [])];
  const picker = eventPicker(connection);
  const make = (name) => {
    if (!inputSchema.properties[name]) return null; // a setting this version of the API lacks
    const control = picker[name] || controlFor(name, connection, editing);
    controls[name] = control;
    const more = name === "TenantId" ? consentHelp() : name === "AdvancedSettings" ? settingsType().description : null;
    return field(name, control, more ? " " : null, more);
  };
  const general = h("p", { id: "e-form", class: "error", role: "alert" });
  const form = h("form", { novalidate: true, onsubmit: (e) => { e.preventDefault(); save(connection, form, controls, reload); } },
    groups.map(([title, note, names]) => h("fieldset", { class: "group" }, h("legend", {}, title),
      note ? h("p", { class: "note" }, note) : null, names.map(make))),
    h("p", { class: "note", id: "save-note" }, "Saving an active connection first sends a verification message " +
      "(System.ConnectionVerified) to its queue: if it cannot be delivered, nothing is saved and the reason is shown."),
    general, h("button", { type: "submit", "aria-describedby": "save-note" }, editing ? "Save changes" : "Create connection"));
  const authentication = form.querySelector("#f-Authentication");
  const showAuthentication = () => {
    for (const [name, mode] of Object.entries(ONLY_WITH)) {
      const wrapper = form.querySelector(`#w-${name}`);
      if (wrapper) wrapper.hidden = (authentication ? authentication.value : "ConnectionString") !== mode;
    }
  };
  if (authentication) authentication.addEventListener("change", showAuthentication);
  showAuthentication();
  return form;
}

function readForm(connection, form, controls) {
  const body = connection.Uid ? { Uid: connection.Uid } : {};
  for (const [name, control] of Object.entries(controls)) {
    const hidden = form.querySelector(`#w-${name}`)?.hidden;
    body[name] = hidden ? null : control.read();
  }
  return body;
}

async function save(connection, form, controls, reload) {
  form.querySelectorAll(".error").forEach((p) => { p.textContent = ""; });
  form.querySelectorAll("[aria-invalid]").forEach((el) => el.removeAttribute("aria-invalid"));
  const local = Object.entries(controls).filter(([, c]) => c.problem && c.problem()).map(([n, c]) => [n, [c.problem()]]);
  if (local.length) return showErrors(form, Object.fromEntries(local), null);
  say("Saving…");
  let r;
  try { r = await call(connection.Uid ? "PUT" : "POST", API, readForm(connection, form, controls)); } catch {
    form.querySelector("#e-form").textContent = "Not saved: the service did not answer. Try again.";
    return say("Not saved.");
  }
  if (r.ok) {
    if (connection.Uid) { await reload(); say("Saved."); } else goThenSay(`#/connections/${r.data.Uid}`, "Connection created.");
    return;
  }
  showErrors(form, (r.data && r.data.errors) || {}, r.data);
}

// Each message next to the field its path names (`EnabledEvents[2]`: EnabledEvents), a summary
// naming the fields (announced: role alert), and focus on the first.
function showErrors(form, errors, problem) {
  const placed = [];
  const unplaced = [];
  for (const [path, messages] of Object.entries(errors)) {
    const name = path.split(/[.[]/)[0];
    const slot = form.querySelector(`#e-${CSS.escape(name)}`);
    if (!slot || slot.closest("[hidden]")) { unplaced.push(`${path}: ${messages.join(" ")}`); continue; }
    slot.textContent = [slot.textContent, ...messages].filter(Boolean).join(" ");
    form.querySelector(`#f-${CSS.escape(name)}`)?.setAttribute("aria-invalid", "true");
    if (!placed.includes(name)) placed.push(name);
  }
  const fields = placed.map(labelOf).join(", ");
  form.querySelector("#e-form").textContent = [
    placed.length ? `Not saved: correct ${fields} (the message is next to each field).` : `Not saved: ${problemText(problem)}`,
    ...unplaced].join(" ");
  say("Not saved.");
  if (placed.length) form.querySelector(`#f-${CSS.escape(placed[0])}`)?.focus();
}

// The status line is cleared when a view is drawn: say the result after the next one.
function goThenSay(hash, text) {
  window.addEventListener("hashchange", () => say(text), { once: true });
  location.hash = hash;
}

// ------------------------------------------------------------------ Entra ID consent

function consentHelp() {
  const result = h("span", { id: "consent-result" });
  const button = consentRoute ? h("button", { type: "button", onclick: async () => {
    const tenant = document.getElementById("f-TenantId").value.trim();
    const slot = document.getElementById("e-TenantId");
    slot.textContent = "";
    const r = await call("GET", `/v1/entra/consent?${new URLSearchParams({ tenantId: tenant })}`);
    if (r.ok) {
      result.replaceChildren(h("a", { href: r.data.ConsentUrl, target: "_blank", rel: "noopener noreferrer" },
        "Open the admin-consent page"), " (valid until ", when(r.data.ExpiresAt), ").");
      say("The admin-consent link is ready.");
    } else {
      const errors = (r.data && r.data.errors) || {};
      slot.textContent = (errors.TenantId || errors.tenantId || [problemText(r.data)]).join(" ");
      say("No admin-consent link.");
    }
  } }, "Get the admin-consent link") : null;
  return h("span", { class: "consent" },
    "Before saving, an administrator of this tenant consents once to our application through " +
    "its admin-consent link (valid for an hour), and grants it Azure Service Bus Data Sender on the queue (and " +
    "Storage Blob Data Contributor on the container, for claim checks). The save sends a " +
    "verification message whose ConfirmationCode confirms the connection.", " ", button, " ", result);
}

// ------------------------------------------------------------------ event picker

const ALL = "*";
const covers = (entry, key) => entry === key || entry === ALL || (entry.endsWith(".*") && key.startsWith(entry.slice(0, -1)));

// The catalogue as the options of a picker: `*`, then each prefix's `Prefix.*` and its keys.
function pickerOptions(catalogue) {
  const options = [{ value: ALL, description: "Every event except the platform's own System.* events, also ones added later." }];
  const prefixes = [...new Set(catalogue.map((e) => e.EventKey.split(".")[0]))];
  for (const prefix of prefixes) {
    const keys = catalogue.filter((e) => e.EventKey.split(".")[0] === prefix);
    const platform = prefix === "System" ? "the platform's own events, which * leaves out: " : "";
    options.push({ value: `${prefix}.*`, description: `Every ${prefix} event (${platform}${keys.length} today, and any added later).` });
    keys.forEach((e) => options.push({ value: e.EventKey, description: e.Description, key: true }));
  }
  return options;
}

let catalogue = null; // GET /v1/events, read once

function eventPicker(connection) {
  const enabled = new Set(connection.EnabledEvents || []);
  const advanced = { ...(connection.AdvancedSettings || {}) };
  const list = h("ul", { id: "event-options", class: "event-options" });
  const count = h("p", { id: "event-count", class: "note", "aria-live": "polite" });
  const chosen = h("p", { id: "event-chosen" });
  const filter = h("input", { id: "event-filter", type: "search", "aria-controls": "event-options",
    "aria-describedby": "event-count", autocomplete: "off", spellcheck: "false",
    onkeydown: (e) => { if (e.key === "Enter") e.preventDefault(); }, // filters; never submits
    oninput: () => applyFilter() });
  const rows = h("div", { id: "advanced-rows" });
  let items = [];

  const order = () => items.map((i) => i.value);
  const selected = () => order().filter((v) => enabled.has(v)).concat([...enabled].filter((v) => !order().includes(v)));
  const applyFilter = () => {
    const words = filter.value.trim().toLowerCase();
    let shown = 0;
    for (const item of items) {
      item.row.hidden = Boolean(words) && !`${item.value} ${item.description}`.toLowerCase().includes(words);
      if (!item.row.hidden) shown++;
    }
    count.textContent = `${shown} of ${items.length} shown; ${enabled.size} enabled.`;
  };
  const drawChosen = () => {
    const values = selected();
    chosen.textContent = values.length ? `Enabled: ${values.join(", ")}` : "Enabled: none (the connection gets nothing).";
    drawAdvanced();
    applyFilter();
  };
  const drawAdvanced = () => {
    const values = selected();
    const keys = [...values, ...Object.keys(advanced).filter((k) => !values.includes(k) && values.some((v) => covers(v, k)))];
    const type = settingsType();
    rows.replaceChildren(keys.length ? h("table", {}, h("caption", {}, "Message content per enabled event"),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Event key or pattern"), h("th", { scope: "col" }, "Message content"))),
      h("tbody", {}, keys.map((key, i) => {
        const select = h("select", { id: `adv-${i}`, "aria-label": `Message content of ${key}`,
          onchange: () => { advanced[key] = { ...(advanced[key] || {}), EventSettingsType: select.value }; } },
        (type.enum || []).map((v) => h("option", { value: v }, v)));
        select.value = (advanced[key] && advanced[key].EventSettingsType) || type.default || "Full";
        return h("tr", {}, h("td", {}, h("code", {}, key)), h("td", {}, select));
      }))) : h("p", { class: "note" }, "Enable events to choose their message content."));
  };
  const draw = (options) => {
    const known = options.map((o) => o.value);
    const stale = [...enabled].filter((v) => !known.includes(v))
      .map((v) => ({ value: v, description: "Not in the event catalogue: the API refuses it; uncheck it." }));
    items = [...options, ...stale].map((option, i) => {
      const box = h("input", { type: "checkbox", id: `ev-${i}`, value: option.value, checked: enabled.has(option.value),
        "aria-describedby": `evd-${i}`, onchange: () => { box.checked ? enabled.add(option.value) : enabled.delete(option.value); drawChosen(); } });
      const row = h("li", { class: option.key ? "event-key" : "event-pattern" }, box, " ",
        h("label", { for: box.id, class: "inline" }, h("code", {}, option.value)), " ",
        h("span", { id: `evd-${i}`, class: "note" }, option.description));
      return { ...option, row };
    });
    list.replaceChildren(...items.map((i) => i.row));
    drawChosen();
  };
  (catalogue ? Promise.resolve(catalogue) : call("GET", "/v1/events").then((r) => (r.ok ? (catalogue = r.data) : [])))
    .then((entries) => draw(pickerOptions(entries)));

  const enabledFieldset = h("fieldset", { id: "f-EnabledEvents", tabindex: "-1", ...described("EnabledEvents") },
    h("legend", {}, labelOf("EnabledEvents")),
    h("label", { for: "event-filter" }, "Filter the catalogue"), filter, count, list, chosen);
  const advancedFieldset = h("fieldset", { id: "f-AdvancedSettings", tabindex: "-1", ...described("AdvancedSettings") },
    h("legend", {}, labelOf("AdvancedSettings")), rows);
  return {
    EnabledEvents: { element: enabledFieldset, label: false, read: selected },
    AdvancedSettings: {
      element: advancedFieldset,
      label: false,
      read: () => {
        const values = selected();
        return Object.fromEntries(Object.entries(advanced).filter(([k, v]) =>
          values.some((e) => covers(e, k)) && v.EventSettingsType !== (settingsType().default || "Full")));
      },
    },
  };
}

const settingsType = () => eventSettingsSchema.properties.EventSettingsType || {};

// ------------------------------------------------------------------ delete

function deleteSection(connection) {
  const name = connection.Title || connection.QueueName;
  const typed = h("input", { id: "delete-name", type: "text", autocomplete: "off", spellcheck: "false",
    "aria-describedby": "delete-help delete-error" });
  const error = h("p", { id: "delete-error", class: "error" });
  const dialog = h("dialog", { id: "delete-dialog", "aria-labelledby": "delete-title", "aria-describedby": "delete-help",
    oncancel: () => say("Not deleted.") },
    h("form", { method: "dialog", onsubmit: async (e) => {
      e.preventDefault();
      if (typed.value.trim() !== name) {
        error.textContent = `Type ${name} exactly to delete this connection.`;
        typed.setAttribute("aria-invalid", "true");
        typed.focus();
        return;
      }
      let r;
      try { r = await call("DELETE", `${API}/${connection.Uid}`); } catch {
        error.textContent = "Not deleted: the service did not answer. Try again.";
        return;
      }
      if (r.ok) { dialog.close(); goThenSay("#/", `Connection ${name} deleted.`); return; }
      error.textContent = `Not deleted: ${problemText(r.data)}`;
    } },
    h("h2", { id: "delete-title" }, `Delete ${name}?`),
    h("p", { id: "delete-help" }, "Nothing more is delivered to its queue, and its delivery log becomes " +
      "unreachable at once. This cannot be undone. To confirm, type the connection's name: ", h("strong", {}, name)),
    h("label", { for: "delete-name" }, "Name of the connection"), typed, error,
    h("button", { type: "submit", class: "danger" }, "Delete connection"),
    h("button", { type: "button", onclick: () => { dialog.close(); say("Not deleted."); } }, "Cancel")));
  return h("div", { class: "delete" },
    h("h2", {}, "Delete this connection"),
    h("button", { type: "button", class: "danger", onclick: () => {
      typed.value = ""; error.textContent = ""; typed.removeAttribute("aria-invalid");
      dialog.showModal();
    } }, "Delete connection…"),
    dialog);
}
