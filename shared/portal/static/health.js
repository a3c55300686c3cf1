// A connection's health as a card (status, the last error WITH its time, what to do) and the
// notices of recent health changes (System.ConnectionHealthChanged, read from Health.Since).
import { h } from "./ui.js";
import { ago, when } from "./time.js";

// What to do, by the error's Type (the most precise), else by its Category (the API's
// ErrorCategory: Transient, Configuration, TooLarge, Suspended).
const BY_TYPE = {
  ServiceBusAuthenticationError: "Authentication: the namespace refused the key. Copy the current connection string of a policy with Send into the connection and save.",
  ClientAuthenticationError: "Authentication: the key or identity was refused. Enter the current connection string (or check the app's Entra ID consent) and save.",
  ServiceBusAuthorizationError: "Permission: the key or identity may not send to this queue. Give the policy the Send right (Entra ID: the role Azure Service Bus Data Sender on the queue).",
  MessagingEntityNotFoundError: "Not found: the queue or topic does not exist. Create it, or correct the queue name and save.",
  MessagingEntityDisabledError: "Disabled: the queue or topic is disabled. Enable it in Azure; deliveries are retried.",
  ResourceNotFoundError: "Not found: the blob container or storage account does not exist. Create it or correct the claim check settings.",
  ServiceBusQuotaExceededError: "Quota: the queue is full or the namespace reached its quota. Let your consumer catch up, or raise the queue's maximum size.",
  ServiceBusServerBusyError: "Throttled: the namespace is busy. Deliveries are retried; if it lasts, raise the namespace's tier or messaging units.",
  OperationTimeoutError: "Network: the namespace did not answer in time. Deliveries are retried; if it lasts, check the namespace's network rules.",
  TimeoutError: "Network: the namespace did not answer in time. Deliveries are retried; if it lasts, check the namespace's network rules.",
  Timeout: "Network: the namespace did not answer in time. Deliveries are retried; if it lasts, check the namespace's network rules.",
  ServiceBusConnectionError: "Network: the namespace could not be reached. Deliveries are retried; check its firewall and private endpoints.",
  ServiceBusCommunicationError: "Network: the namespace could not be reached. Deliveries are retried; check its host name, firewall and private endpoints.",
  CircuitOpen: "Network: deliveries to this namespace keep failing, so they pause briefly. They are retried; nothing to do if it passes.",
  EndpointRefused: "Address: the host name points to an address the service never connects to. Use the namespace's public name.",
  SessionRequired: "Sessions: the queue requires sessions. Choose a session id source in the connection's settings.",
  gaierror: "Network: the namespace's host name does not resolve. Check the name in the connection string.",
  UnresolvedHost: "Network: the namespace's host name does not resolve. Check the name in the connection string.",
  ConnectionStringError: "Settings: the connection string is not valid. Paste it again from the Azure portal and save.",
  ConnectionSuspended: "Suspended: the connection is suspended, so events are kept, not sent. Fix it and save, or resume; then replay the kept events.",
};
const BY_CATEGORY = {
  Configuration: "Fix the connection: the namespace refuses deliveries. They are retried, and the connection is suspended if they keep failing.",
  Transient: "Usually nothing: failures that pass (busy, timeouts, network) are retried on their schedule.",
  TooLarge: "Too large: the event is larger than the queue allows and is not retried. Set a claim check container, or use a namespace that takes larger messages.",
  Suspended: BY_TYPE.ConnectionSuspended,
};

// Types of the TooLarge category (shared/endpoints.py's texts): the category's advice.
BY_TYPE.MessageSizeExceededError = BY_CATEGORY.TooLarge;
BY_TYPE.TooLarge = BY_CATEGORY.TooLarge;

export function whatToDo(error) {
  return BY_TYPE[error.Type] || BY_CATEGORY[error.Category] || "Check the connection's settings and the delivery log.";
}

const STATE_TEXT = {
  Healthy: "Deliveries succeed.",
  Degraded: "The last deliveries failed for reasons that pass; they are retried.",
  Failing: "Every delivery fails: the namespace refuses them. Deliveries are retried.",
  Suspended: "Suspended: events are kept, not sent, until you fix the connection or resume it.",
};

// `actions` are extra elements (the Resume button where the connection is suspended).
export function healthCard(health, ...actions) {
  if (!health) return null;
  const row = (k, v) => [h("dt", {}, k), h("dd", {}, v)];
  const error = health.LastError;
  // An error is "current" unless a success came after it (then it is history, with its time).
  const current = error && health.Status !== "Healthy";
  return h("section", { class: `health-card health-${health.Status}`, "aria-labelledby": "health-title" },
    h("h2", { id: "health-title" }, "Health: ", h("span", { class: health.Status }, health.Status)),
    h("p", {}, STATE_TEXT[health.Status] || ""),
    h("dl", {},
      row("Since", when(health.Since)),
      row("Last success", when(health.LastSuccessAt)),
      row("Failures since", String(health.ConsecutiveFailures ?? 0))),
    error ? h("div", { class: "last-error" },
      h("h3", {}, current ? "Last error" : "Earlier error (resolved)"),
      h("p", {}, h("strong", {}, `${error.Category} · ${error.Type}`), `: ${error.Message}, at `,
        when(health.LastFailureAt)),
      h("p", { class: "todo" }, h("strong", {}, "What to do: "), current ? whatToDo(error) : "Nothing: deliveries succeeded after it."))
      : null,
    actions.some(Boolean) ? h("p", {}, ...actions) : null);
}

// Changed within a day, and not the quiet start of a connection that never failed.
const RECENT_MS = 24 * 3600e3;
export function changedRecently(health, now = Date.now()) {
  if (!health || !health.Since) return false;
  const fresh = now - new Date(health.Since).getTime() < RECENT_MS;
  return fresh && (health.Status !== "Healthy" || Boolean(health.LastFailureAt));
}

function noticeText(c) {
  const health = c.Health;
  if (health.Status === "Healthy") return " recovered: deliveries succeed again";
  const error = health.LastError;
  return ` became ${health.Status}${error ? `: ${error.Message}` : ""}`;
}

// The notices of the list page: one line per connection whose health changed in the last day.
export function healthNotices(connections, now = Date.now()) {
  const changed = connections.filter((c) => changedRecently(c.Health, now))
    .sort((a, b) => new Date(b.Health.Since) - new Date(a.Health.Since));
  if (!changed.length) return null;
  return h("section", { class: "notices", "aria-labelledby": "notices-title" },
    h("h2", { id: "notices-title" }, "Health changes in the last 24 hours"),
    h("ul", {}, changed.map((c) => h("li", { class: c.Health.Status },
      h("a", { href: `#/connections/${c.Uid}` }, c.Title || c.Uid), noticeText(c), " — ",
      when(c.Health.Since), ` (${ago(c.Health.Since, now)})`))));
}

// The list's health cell: the status, and since when for a change of the last day.
export function healthCell(health, now = Date.now()) {
  if (!health) return "—";
  if (!changedRecently(health, now)) return health.Status;
  return [health.Status, h("span", { class: "note" }, " since "), when(health.Since)];
}
