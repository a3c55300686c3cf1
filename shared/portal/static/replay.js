// Replay the failed deliveries of a time window, after a confirmation that shows the window
// and how many deliveries in it are not delivered now (the replay sends those).
import { call, h, problemText } from "./ui.js";
import { confirmAction } from "./confirm.js";
import { utcText } from "./time.js";

function localInput(d) {
  return new Date(d.getTime() - d.getTimezoneOffset() * 60e3).toISOString().slice(0, 16);
}

// Deliveries not delivered whose first attempt lies in the window: what an OnlyFailed replay
// matches (the API's own count, `Matched`, comes with the answer).
async function undeliveredIn(api, uid, body) {
  const q = new URLSearchParams({ undelivered: "true", since: body.Since, pageSize: 1, includeBody: "false" });
  if (body.Until) q.set("until", body.Until);
  const r = await call("GET", `${api}/${uid}/messages?${q}`);
  return r.ok ? r.data.TotalHits : null;
}

function windowText(body) {
  const at = (iso) => `${new Date(iso).toLocaleString()} (${utcText(new Date(iso))})`;
  return `From ${at(body.Since)} until ${body.Until ? at(body.Until) : "now"}.`;
}

export function replayForm(api, uid) {
  const since = h("input", { id: "replay-since", type: "datetime-local", required: true });
  const until = h("input", { id: "replay-until", type: "datetime-local" });
  since.value = localInput(new Date(Date.now() - 3600e3));
  const result = h("p", { role: "status" });
  return h("form", { onsubmit: async (e) => {
    e.preventDefault();
    const body = { Since: new Date(since.value).toISOString(), OnlyFailed: true };
    if (until.value) body.Until = new Date(until.value).toISOString();
    const count = await undeliveredIn(api, uid, body);
    const sure = await confirmAction("Replay failed messages?", [
      h("p", {}, windowText(body)),
      h("p", {}, count == null ? "The deliveries of this window that are not delivered are sent again, each once."
        : `${count} ${count === 1 ? "delivery" : "deliveries"} of this window ${count === 1 ? "is" : "are"} not delivered now: ` +
          "each is sent again once, to the connection as it is configured now."),
      h("p", {}, "Delivered ones are left alone.")], "Yes, replay");
    if (!sure) { result.textContent = "Nothing was replayed."; return; }
    const r = await call("POST", `${api}/${uid}/messages/replay`, body);
    result.textContent = r.ok ? `Replaying ${r.data.Matched} failed messages.` : problemText(r.data);
    if (r.ok) watchReplay(api, uid, r.data.ReplayId, result);
  } }, h("fieldset", {}, h("legend", {}, "Replay failed messages in a time window"),
    h("label", { for: "replay-since" }, "From (your time zone)"), since,
    h("label", { for: "replay-until" }, "Until (optional)"), until,
    h("button", { type: "submit" }, "Replay failed messages"), result));
}

async function watchReplay(api, uid, id, result) {
  for (let i = 0; i < 60; i++) {
    const r = await call("GET", `${api}/${uid}/replays/${id}`);
    if (!r.ok) return;
    result.textContent = `Replay: ${r.data.Sent} sent, ${r.data.Failed} failed of ${r.data.Matched}${r.data.Done ? " — done." : "…"}`;
    if (r.data.Done) return;
    await new Promise((ok) => setTimeout(ok, 1000));
  }
}
