// One event's delivery with every attempt at it (GET .../deliveries/{messageId}), and the
// re-send of an attempt, confirmed first.
import { call, h, problemText, say, show } from "./ui.js";
import { confirmAction } from "./confirm.js";
import { when, zoneNote } from "./time.js";

export const STATUS = { 1: "Succeeded", 2: "Failed" };

export function metadataOf(m) {
  try { return JSON.parse(m.RequestMetadata) || {}; } catch { return {}; }
}

export function deliveryLink(uid, m, label = "All attempts") {
  const id = (m.Delivery && m.Delivery.MessageId) || metadataOf(m).MessageId;
  return id ? h("a", { href: `#/connections/${uid}/deliveries/${encodeURIComponent(id)}` }, label) : null;
}

const STATE_TEXT = {
  Pending: "Not delivered yet: the next automatic attempt is scheduled.",
  Delivered: "Delivered: an attempt reached the queue.",
  Failed: "Not delivered, and nothing more is scheduled: re-send it, or replay it once the cause is fixed.",
};

// Retries, re-sends and replays all name the attempt they follow (the API does not say
// which of them an attempt was): shown as that attempt's number.
function follows(m, byUid) {
  const parent = m.ParentServiceBusMessageUid && byUid.get(m.ParentServiceBusMessageUid);
  if (!m.ParentServiceBusMessageUid) return "—";
  return parent ? `Attempt ${metadataOf(parent).Attempt ?? "?"}` : "an earlier attempt";
}

export async function deliveryPage(api, uid, messageId) {
  const r = await call("GET", `${api}/${uid}/deliveries/${encodeURIComponent(messageId)}`);
  if (!r.ok) return show("Delivery", h("p", { class: "error" }, problemText(r.data)));
  const d = r.data;
  const attempts = d.Messages || [];
  const latest = attempts[attempts.length - 1];
  const byUid = new Map(attempts.map((m) => [m.Uid, m]));
  const row = (k, v) => [h("dt", {}, k), h("dd", {}, v ?? "—")];
  show(`Delivery of ${latest ? latest.EventKey : "an event"}`,
    h("p", {}, h("a", { href: `#/connections/${uid}/log` }, "Back to the delivery log")),
    h("dl", {}, row("State", h("span", { class: d.State }, d.State)), row("What it means", STATE_TEXT[d.State]),
      row("Message id", d.MessageId), row("Attempts", String(d.Attempts)),
      d.NextAttemptAt ? row("Next attempt", when(d.NextAttemptAt)) : null),
    h("p", { class: "note" }, zoneNote()),
    h("table", {}, h("caption", {}, "Attempts, oldest first"),
      h("thead", {}, h("tr", {}, ["Attempt", "Sent", "Sent again after", "Status", "Milliseconds", "Error", "Message"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, attempts.map((m) => {
        const meta = metadataOf(m);
        return h("tr", {}, h("td", {}, String(meta.Attempt ?? "—")), h("td", {}, when(m.RequestTimestamp)),
          h("td", {}, follows(m, byUid)), h("td", { class: STATUS[m.Status] }, STATUS[m.Status]),
          h("td", {}, String(m.ElapsedMilliseconds)),
          h("td", {}, meta.Error ? `${meta.Error.Category}: ${meta.Error.Message}` : "—"),
          h("td", {}, h("a", { href: `#/connections/${uid}/messages/${m.Uid}` }, "Details")));
      }))),
    latest ? h("button", { type: "button", onclick: () => resend(api, uid, latest) }, "Re-send") : null);
}

// Re-send one attempt after saying what will go where; then shows the new attempt.
export async function resend(api, uid, m) {
  const meta = metadataOf(m);
  const sure = await confirmAction("Re-send this message?",
    [h("p", {}, `The ${m.EventKey} event's stored body is sent again now, to the connection as it is configured now` +
      `${meta.QueueName ? ` (queue ${meta.QueueName})` : ""}, with the same message id ${meta.MessageId || ""}.`),
    h("p", {}, "A queue with duplicate detection drops it if an earlier copy arrived within its detection window.")],
    "Yes, re-send");
  if (!sure) { say("Nothing was sent."); return; }
  const r = await call("POST", `${api}/${uid}/messages/${m.Uid}/retry`);
  say(r.ok ? `Re-sent: ${STATUS[r.data.Status]}.` : problemText(r.data));
  if (r.ok) location.hash = `#/connections/${uid}/messages/${r.data.Uid}`;
}
