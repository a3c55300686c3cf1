// Times as the viewer reads them: in the browser's time zone, with the UTC instant on hover
// (and in the element's datetime, for assistive technology and copying).
import { h } from "./ui.js";

const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;

export function utcText(date) { return `${date.toISOString().replace("T", " ").slice(0, 19)} UTC`; }

// A <time> element for an API timestamp; "—" when there is none.
export function when(value) {
  if (!value) return "—";
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return h("time", { datetime: date.toISOString(), title: utcText(date) }, date.toLocaleString());
}

// How long ago, in words ("5 minutes ago"), for notices; `now` is injectable for tests.
export function ago(value, now = Date.now()) {
  const seconds = Math.max(0, Math.round((now - new Date(value).getTime()) / 1000));
  const units = [["day", 86400], ["hour", 3600], ["minute", 60]];
  for (const [unit, size] of units) {
    const n = Math.floor(seconds / size);
    if (n >= 1) return `${n} ${unit}${n === 1 ? "" : "s"} ago`;
  }
  return "just now";
}

export function zoneNote() { return `Times are in your time zone (${zone}); hover a time for UTC.`; }
