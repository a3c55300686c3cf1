// The connection's deliveries per hour over 14 days (GET .../stats): succeeded and failed
// stacked per hour with axes and labels, latency (p50, p95) in a second small chart, and the
// same figures as a table for those who do not read charts.
import { call, h } from "./ui.js";
import { when } from "./time.js";

const NS = "http://www.w3.org/2000/svg";
const W = 720, LEFT = 52, RIGHT = 8, TOP = 8, BOTTOM = 30;
const DAYS = 14;

function svgEl(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text != null) el.textContent = text;
  return el;
}

// The smallest of 1, 2, 5 x 10^n at or above `value`: round axis ends.
export function niceMax(value) {
  if (value <= 1) return 1;
  const step = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 5, 10].map((m) => m * step).find((m) => m >= value);
}

function sum(hours, key) { return hours.reduce((s, x) => s + (x[key] || 0), 0); }

// An empty plot: the y axis with ticks at 0, half and top, the x axis with one tick per
// local day labelled with the date; `y(v)` and `x(i)` place values.
function axes(hours, height, top, unit, title) {
  const plotW = W - LEFT - RIGHT;
  const x = (i) => LEFT + (i * plotW) / hours.length;
  const y = (v) => TOP + height - (v / top) * height;
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${TOP + height + BOTTOM}`, role: "img", class: "chart" });
  for (const v of [0, top / 2, top].filter(Number.isInteger)) {
    svg.append(svgEl("line", { x1: LEFT, x2: W - RIGHT, y1: y(v), y2: y(v), class: v ? "grid" : "axis" }));
    svg.append(svgEl("text", { x: LEFT - 4, y: y(v) + 3, "text-anchor": "end" }, `${v}${unit}`));
  }
  svg.append(svgEl("line", { x1: LEFT, x2: LEFT, y1: TOP, y2: TOP + height, class: "axis" }));
  hours.forEach((hour, i) => {
    const d = new Date(hour.Hour);
    // A tick where the local date changes (at midnight, or at :30 in a half-hour zone).
    if (i === 0 || d.toDateString() === new Date(hours[i - 1].Hour).toDateString()) return;
    svg.append(svgEl("line", { x1: x(i), x2: x(i), y1: TOP + height, y2: TOP + height + 4, class: "axis" }));
    svg.append(svgEl("text", { x: x(i), y: TOP + height + 15, "text-anchor": "middle" },
      d.toLocaleDateString(undefined, { month: "short", day: "numeric" })));
  });
  svg.append(svgEl("text", { x: LEFT, y: TOP + height + 28, class: "axis-title" }, title));
  return { svg, x, y, barW: plotW / hours.length };
}

function countsChart(hours, summary) {
  const top = niceMax(Math.max(1, ...hours.map((x) => x.Succeeded + x.Failed)));
  const { svg, x, y, barW } = axes(hours, 140, top, "", "Deliveries per hour (your time zone); green: delivered, red: failed");
  svg.setAttribute("aria-label", summary);
  hours.forEach((hour, i) => {
    if (!hour.Succeeded && !hour.Failed) return;
    const g = svgEl("g");
    g.append(svgEl("title", {}, `${new Date(hour.Hour).toLocaleString()}: ${hour.Succeeded} delivered, ${hour.Failed} failed`));
    const okTop = y(hour.Succeeded), failTop = y(hour.Succeeded + hour.Failed);
    const width = Math.max(barW - 0.5, 1);
    if (hour.Succeeded) g.append(svgEl("rect", { x: x(i), y: okTop, width, height: y(0) - okTop, class: "bar-ok" }));
    if (hour.Failed) g.append(svgEl("rect", { x: x(i), y: failTop, width, height: okTop - failTop, class: "bar-failed" }));
    svg.append(g);
  });
  return svg;
}

// Latency per hour as two lines, broken where an hour had no delivery.
function latencyChart(hours, summary) {
  const top = niceMax(Math.max(1, ...hours.map((x) => x.LatencyMsP95 || 0)));
  const { svg, x, y, barW } = axes(hours, 70, top, " ms", "Latency per hour, ms (line: median; dashed: 95th percentile)");
  svg.setAttribute("aria-label", summary);
  for (const [key, cls] of [["LatencyMsP95", "line-p95"], ["LatencyMsP50", "line-p50"]]) {
    let d = "", open = false;
    hours.forEach((hour, i) => {
      const v = hour[key];
      if (v == null) { open = false; return; }
      const px = x(i) + barW / 2;
      d += `${open ? "L" : "M"}${px.toFixed(1)},${y(v).toFixed(1)}h${Math.max(barW, 1).toFixed(1)}`;
      open = true;
    });
    if (d) svg.append(svgEl("path", { d, class: cls }));
  }
  return svg;
}

function figuresTable(hours) {
  const busy = hours.filter((x) => x.Succeeded || x.Failed);
  if (!busy.length) return h("p", {}, "No deliveries in these 14 days.");
  return h("details", {}, h("summary", {}, `The figures of the ${busy.length} hours with deliveries`),
    h("table", {}, h("caption", {}, "Deliveries per hour"),
      h("thead", {}, h("tr", {}, ["Hour", "Delivered", "Failed", "Latency p50 (ms)", "Latency p95 (ms)"]
        .map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, busy.map((x) => h("tr", {}, h("td", {}, when(x.Hour)), h("td", {}, String(x.Succeeded)),
        h("td", {}, String(x.Failed)), h("td", {}, String(x.LatencyMsP50 ?? "—")), h("td", {}, String(x.LatencyMsP95 ?? "—")))))));
}

export async function chart(uid, api) {
  const until = new Date(Math.ceil(Date.now() / 3600e3) * 3600e3);
  const since = new Date(until.getTime() - DAYS * 24 * 3600e3);
  const q = new URLSearchParams({ since: since.toISOString(), until: until.toISOString() });
  const r = await call("GET", `${api}/${uid}/stats?${q}`);
  if (!r.ok || !r.data || !r.data.Hours) return h("p", {}, "No delivery stats are available.");
  const hours = r.data.Hours;
  const total = sum(hours, "Succeeded") + sum(hours, "Failed"), failed = sum(hours, "Failed");
  const peak = Math.max(0, ...hours.map((x) => x.Succeeded + x.Failed));
  const p95s = hours.map((x) => x.LatencyMsP95).filter((v) => v != null);
  const counts = `Deliveries per hour over ${DAYS} days: ${total} in all, ${failed} failed, at most ${peak} in an hour`;
  const latency = p95s.length
    ? `Latency per hour over ${DAYS} days: the 95th percentile at most ${Math.max(...p95s)} ms`
    : `Latency per hour over ${DAYS} days: no deliveries`;
  return h("figure", { class: "stats" }, countsChart(hours, counts), latencyChart(hours, latency),
    h("figcaption", {}, h("span", { class: "key-ok" }, "Delivered"), " ", h("span", { class: "key-failed" }, "Failed"),
      ` · ${total} deliveries, ${failed} failed, between `, when(since), " and ", when(until), "."),
    figuresTable(hours));
}
