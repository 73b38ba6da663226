// siplb dashboard: one Server-Sent Events stream (/api/stream, read with fetch()), no polling,
// no libraries.
// "snapshot" rebuilds the page; "tick" (every second) updates values in place.
"use strict";

const TOKEN_KEY = "siplb.admin.token";
const PALETTE = ["#38bdf8", "#a78bfa", "#f472b6", "#34d399", "#fbbf24", "#fb923c", "#60a5fa", "#e879f9"];
const EVENTS_SHOWN = 200;
// The columns of a set's table: [class of its cells, header]. On a narrow table the CSS hides
// the less important ones (dashboard.css, container queries on .set); never the actions.
const COLUMNS = [
  ["state", "state"], ["uri", "destination"], ["weight", "weight"], ["prio", "prio"],
  ["calls", "calls / max"], ["cps", "cps"], ["spark", "last minute"], ["latency", "probe ms avg / p95"],
  ["fails", "fails"], ["since", "since"], ["cause", "cause"], ["actions", ""],
];
const NUMERIC = new Set(["cps", "latency", "fails"]);

const $ = (id) => document.getElementById(id);
const view = {
  status: null,
  sets: [],          // as the API gives them
  rows: [],          // one per destination, in the stream's order: {set, uri, el, cells, spark}
  chart: { times: [], sets: {} },
  sparks: {},        // uri -> last 60 per-second values
  setMax: {},        // set -> most active calls on one destination (bars without max_calls)
  stream: null,      // AbortController of the open event stream
  lastEventId: 0,
};

// ---- token and requests ---------------------------------------------------------------------
function token() { return localStorage.getItem(TOKEN_KEY) || ""; }
function setToken(value) {
  if (value) localStorage.setItem(TOKEN_KEY, value); else localStorage.removeItem(TOKEN_KEY);
}
function authHeaders() { return token() ? { Authorization: "Bearer " + token() } : {}; }

function ask(title, text, { type = "text", value = "" } = {}) {
  const dialog = $("ask");
  $("ask-title").textContent = title;
  $("ask-text").textContent = text;
  const input = $("ask-input");
  input.type = type;
  input.value = value;
  // Enter in the input submits the form with its default button, OK; Cancel is no submit
  // button (it would be the default, being first) and Escape closes the dialog as cancelled.
  $("ask-cancel").onclick = () => dialog.close("cancel");
  return new Promise((resolve) => {
    dialog.onclose = () => resolve(dialog.returnValue === "ok" ? input.value.trim() : null);
    dialog.returnValue = "";
    dialog.showModal();
    input.focus();
    input.select();
  });
}

async function askToken(reason) {
  const value = await ask("Admin token", reason, { type: "password" });
  if (value === null) return false;
  setToken(value);
  return true;
}

function toast(text, error = false) {
  const el = document.createElement("div");
  el.className = "toast" + (error ? " error" : "");
  el.textContent = text;
  $("toasts").appendChild(el);
  setTimeout(() => el.remove(), error ? 7000 : 3500);
}

function destPath(set, uri) {
  return `/api/sets/${encodeURIComponent(set)}/destinations/${encodeURIComponent(uri)}`;
}

// A change: asks for the token when none is stored or the stored one is refused.
async function change(method, path, body) {
  if (!token() && !(await askToken("Changes need the admin token ([admin] token in siplb's config)."))) return null;
  for (let attempt = 0; attempt < 3; attempt++) {
    const headers = { ...authHeaders() };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (err) {
      toast("cannot reach siplb: " + err, true);
      return null;
    }
    if (response.status === 401) {
      setToken("");
      if (!(await askToken("That token was refused; try again."))) return null;
      continue;
    }
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      toast(data.error || `HTTP ${response.status}`, true);
      return null;
    }
    return data;
  }
  return null;
}

async function destAction(set, uri, action) {
  const data = await change("POST", `${destPath(set, uri)}/${action}`);
  if (data) toast(`${uri}: ${data.state}`);
}

async function changeWeight(set, uri, current) {
  const value = await ask("Weight", `${uri} in set ${set} (until the next reload)`, { type: "number", value: String(current) });
  if (value === null || value === "") return;
  const weight = Number(value);
  if (!Number.isInteger(weight) || weight < 1) { toast("the weight is a whole number from 1", true); return; }
  const data = await change("PUT", `${destPath(set, uri)}/weight`, { weight });
  if (data) toast(`${uri}: weight ${data.weight}`);
}

// ---- the stream -----------------------------------------------------------------------------
// Read with fetch() rather than EventSource: EventSource cannot send the Authorization header,
// and the API refuses a token in the URL (URLs end up in history, logs and Referer headers).
async function connect() {
  if (view.stream) view.stream.abort();
  const stream = new AbortController();
  view.stream = stream;
  const again = (delay) => setTimeout(() => { if (view.stream === stream) connect(); }, delay);
  let response;
  try {
    response = await fetch("/api/stream", {
      headers: { Accept: "text/event-stream", ...authHeaders() },
      cache: "no-store",
      signal: stream.signal,
    });
  } catch (err) {
    if (!stream.signal.aborted) { setConn(false, "unreachable"); again(2000); }
    return;
  }
  if (response.status === 401) {
    setConn(false, "token needed");
    if (await askToken("This siplb needs its admin token to show anything.")) connect();
    return;
  }
  if (!response.ok) {
    const data = await response.json().catch(() => ({}));
    setConn(false, `HTTP ${response.status}`);
    toast(data.error || `the event stream was refused (HTTP ${response.status})`, true);
    return;
  }
  setConn(true, "live");
  try {
    await readEvents(response.body, (event, data) => {
      if (event === "snapshot") { setConn(true, "live"); snapshot(JSON.parse(data)); }
      else if (event === "tick") tick(JSON.parse(data));
    });
  } catch (err) {
    // the connection broke (or was aborted for a new one): reconnect below unless aborted
  }
  if (!stream.signal.aborted) { setConn(false, "reconnecting"); again(2000); }
}

// Server-Sent Events framing: "event:" and "data:" lines, a blank line ends a message.
async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(event, data.join("\n"));
    }
  }
}

function setConn(on, text) {
  const el = $("conn");
  el.className = "conn " + (on ? "conn-on" : "conn-off");
  el.textContent = text;
}

// ---- snapshot: build everything ---------------------------------------------------------------
function snapshot(data) {
  view.status = data.status;
  view.sets = data.sets;
  view.chart = { times: data.history.times.slice(), sets: {} };
  for (const [name, values] of Object.entries(data.history.sets)) view.chart.sets[name] = values.slice();
  view.sparks = {};
  for (const [uri, values] of Object.entries(data.history.destinations)) view.sparks[uri] = values.slice();
  renderStatus(data.status);
  buildSets(data.sets);
  $("events").replaceChildren();
  view.lastEventId = 0;
  addEvents(data.events);
  drawChart();
}

function buildSets(sets) {
  view.setMax = {};
  for (const set of sets) view.setMax[set.name] = Math.max(0, ...set.destinations.map((d) => d.active_calls));
  const container = $("sets");
  container.replaceChildren();
  view.rows = [];
  sets.forEach((set, index) => {
    const section = el("section", "set" + (set.removed ? " removed" : ""));
    section.dataset.set = set.name;
    const head = el("div", "set-head");
    const title = el("h2");
    title.textContent = set.name;
    const summary = el("span", "muted set-summary");
    head.append(title, summary);
    const table = el("table");
    const headRow = el("tr");
    for (const [name, label] of COLUMNS) {
      const th = el("th", name + (NUMERIC.has(name) ? " num" : ""));
      th.textContent = label;
      headRow.appendChild(th);
    }
    table.appendChild(el("thead")).appendChild(headRow);
    const body = el("tbody");
    for (const dest of set.destinations) body.appendChild(buildRow(set, dest));
    table.appendChild(body);
    section.append(head, table);
    section._summary = summary;
    section._set = set;
    section._color = PALETTE[index % PALETTE.length];
    container.appendChild(section);
    updateSetSummary(section, set);
  });
  applyFilter();
  renderLegend();
}

function buildRow(set, dest) {
  const tr = el("tr", "dest");
  tr.dataset.set = set.name;
  tr.dataset.uri = dest.uri;
  const cells = {};
  for (const [name] of COLUMNS) {
    cells[name] = el("td", name + (NUMERIC.has(name) ? " num" : ""));
    tr.appendChild(cells[name]);
  }
  const uri = el("div", "uri-text");
  uri.textContent = dest.uri;
  uri.title = dest.uri;
  const details = el("div", "details");  // the cause (when its column is hidden) and attrs
  const cause = el("span", "cause-text");
  details.appendChild(cause);
  for (const [key, value] of Object.entries(dest.attrs || {})) {
    const attr = el("span", "attr");
    attr.textContent = `${key}=${value}`;
    details.appendChild(attr);
  }
  cells.uri.append(uri, details);
  cells.prio.textContent = dest.priority;
  const badge = el("span", "badge");
  cells.state.appendChild(badge);
  const bar = el("div", "bar");
  const fill = el("div", "fill");
  const txt = el("span", "txt");
  bar.append(fill, txt);
  cells.calls.appendChild(bar);
  const spark = document.createElement("canvas");
  spark.className = "spark";
  cells.spark.appendChild(spark);
  if (!set.removed && !dest.removed) {
    const weight = el("button", "weight");
    weight.type = "button";
    weight.title = "change the weight";
    weight.textContent = dest.weight;
    weight.addEventListener("click", () => changeWeight(set.name, dest.uri, dest.weight));
    cells.weight.appendChild(weight);
    const actions = el("div", "actions");
    for (const action of ["drain", "enable", "disable"]) {
      const button = el("button");
      button.type = "button";
      button.dataset.action = action;
      button.textContent = action;
      button.addEventListener("click", () => destAction(set.name, dest.uri, action));
      actions.appendChild(button);
    }
    cells.actions.appendChild(actions);
  } else {
    cells.weight.textContent = dest.weight;
    cells.actions.textContent = "removed";
    cells.actions.classList.add("muted");
  }
  const row = { set: set.name, uri: dest.uri, dest, el: tr, cells, badge, fill, txt, spark, cause };
  view.rows.push(row);
  updateRow(row, dest);
  return tr;
}

function updateRow(row, d) {
  row.dest = d;
  const cls = "s-" + d.state;
  if (row.state !== d.state) {
    row.state = d.state;
    row.el.className = "dest " + cls + " state-" + d.state + (row.el.classList.contains("hidden") ? " hidden" : "");
    row.el.dataset.state = d.state;
    row.badge.className = "badge " + cls;
    row.badge.textContent = d.state;
    const buttons = row.cells.actions.querySelectorAll("button");
    for (const b of buttons) {
      const a = b.dataset.action;
      b.disabled = (a === "drain" && (d.state === "draining" || d.state === "drained")) ||
        (a === "disable" && d.state === "disabled") || (a === "enable" && d.admin === null);
    }
  }
  const cap = d.max_calls;
  const scale = cap || Math.max(10, view.setMax[row.set] || 0);
  const share = Math.min(1, d.active_calls / scale);
  row.fill.style.width = (100 * share).toFixed(1) + "%";
  row.fill.className = "fill" + (cap && share >= 1 ? " full" : cap && share >= 0.9 ? " warn" : "");
  row.txt.textContent = cap ? `${d.active_calls} / ${cap}` : `${d.active_calls}`;
  row.cells.cps.textContent = d.cps.toFixed(1);
  row.cells.latency.textContent = d.latency_ms ? `${fmtMs(d.latency_ms.avg)} / ${fmtMs(d.latency_ms.p95)}` : "-";
  row.cells.fails.textContent = d.failures;
  row.cells.since.textContent = ago(d.since);
  row.cells.since.title = new Date(d.since * 1000).toLocaleString();
  row.cells.cause.textContent = d.cause;
  row.cells.cause.title = d.cause;
  row.cause.textContent = d.cause;
  drawSpark(row.spark, view.sparks[d.uri] || []);
}

function updateSetSummary(section, set) {
  const total = set.destinations.length;
  section._summary.textContent = (set.removed ? "removed by a reload · " : set.algorithm + " · ") +
    `${set.up}/${total} up · ${set.active_calls} calls · ${set.cps.toFixed(1)} cps`;
}

// ---- tick: update values in place -----------------------------------------------------------
function tick(data) {
  view.status = data.status;
  renderStatus(data.status);
  const sections = $("sets").querySelectorAll("section.set");
  data.sets.forEach((s, i) => {
    const section = sections[i];
    if (!section) return;
    Object.assign(section._set, { active_calls: s.active_calls, cps: s.cps, up: s.up });
    updateSetSummary(section, section._set);
    const name = section._set.name;
    (view.chart.sets[name] = view.chart.sets[name] || []).push(s.sample);
  });
  if (data.t !== null) view.chart.times.push(data.t);
  trimChart();
  view.setMax = {};
  data.destinations.forEach((values, i) => {
    const row = view.rows[i];
    if (row) view.setMax[row.set] = Math.max(view.setMax[row.set] || 0, values[1]);
  });
  data.destinations.forEach((values, i) => {
    const row = view.rows[i];
    if (!row) return;
    const [state, active, cps, latency, failures, since, cause, callsTotal, sample] = values;
    const spark = (view.sparks[row.uri] = view.sparks[row.uri] || []);
    spark.push(sample);
    if (spark.length > 60) spark.splice(0, spark.length - 60);
    const admin = state === "draining" || state === "drained" || state === "disabled" ? state : null;
    updateRow(row, { ...row.dest, state, active_calls: active, cps, latency_ms: latency, failures, since, cause, calls_total: callsTotal, admin });
  });
  addEvents(data.events);
  drawChart();
}

function trimChart() {
  const keep = 300;
  const extra = view.chart.times.length - keep;
  if (extra > 0) view.chart.times.splice(0, extra);
  for (const values of Object.values(view.chart.sets)) {
    if (values.length > keep) values.splice(0, values.length - keep);
  }
}

// ---- header and totals ----------------------------------------------------------------------
function renderStatus(s) {
  $("node").textContent = `node ${s.node_id} · v${s.version}`;
  const listeners = s.listeners.map((l) => `${l.transport} ${l.address}`).join(", ");
  $("meta").innerHTML = "";
  $("meta").append(
    text("up "), bold(duration(s.uptime_s)), text(" · config "), bold(s.config.file),
    text(` (${s.config.sha256.slice(0, 12)})`), text(" · "), bold(listeners),
    text(s.accepting ? "" : " · STOPPING: no new calls"),
  );
  const t = s.totals;
  $("t-calls").textContent = t.active_calls;
  $("t-cps").textContent = t.cps.toFixed(1);
  const up = t.states.up + t.states.suspect;
  $("t-up").textContent = `${up} / ${t.destinations}`;
  setCount("t-down", t.states.down);
  setCount("t-admin", t.states.draining + t.states.drained + t.states.disabled);
  $("t-txn").textContent = t.transactions.server + t.transactions.client;
  document.title = `siplb · ${up}/${t.destinations} up · ${t.active_calls} calls`;
}

function setCount(id, n) {
  const node = $(id);
  node.textContent = n;
  node.classList.toggle("nonzero", n > 0);
}

// ---- event log ------------------------------------------------------------------------------
function addEvents(events) {
  const list = $("events");
  for (const e of events) {
    if (e.id <= view.lastEventId) continue;
    view.lastEventId = e.id;
    const li = el("li", "k-" + e.kind + (e.kind === "state" ? " s-" + e.new : ""));
    const time = el("time");
    time.textContent = new Date(e.at * 1000).toLocaleTimeString([], { hour12: false });
    const kind = el("span", "kind");
    kind.textContent = e.kind === "state" ? e.new : e.kind;
    const msg = el("span", "msg");
    msg.textContent = e.message;
    li.append(time, kind, msg);
    list.prepend(li);
  }
  while (list.children.length > EVENTS_SHOWN) list.lastChild.remove();
  $("event-count").textContent = view.lastEventId ? `${view.lastEventId} so far` : "none yet";
}

// ---- drawing ----------------------------------------------------------------------------------
function fitCanvas(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * ratio) || canvas.height !== Math.round(h * ratio)) {
    canvas.width = Math.round(w * ratio);
    canvas.height = Math.round(h * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, w, h);
  return [ctx, w, h];
}

function drawChart() {
  const canvas = $("chart");
  const [ctx, w, h] = fitCanvas(canvas);
  const left = 40, bottom = 18, top = 6, right = 8;
  const series = view.sets.map((s, i) => ({ name: s.name, color: PALETTE[i % PALETTE.length], values: view.chart.sets[s.name] || [] }));
  const n = 300;
  let max = 1;
  for (const s of series) for (const v of s.values) max = Math.max(max, v);
  const step = niceStep(max / 4);
  max = Math.ceil(max / step) * step;
  const plotW = w - left - right, plotH = h - top - bottom;
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#8b97b0";
  ctx.strokeStyle = "#24314f";
  ctx.lineWidth = 1;
  for (let v = 0; v <= max + 1e-9; v += step) {
    const y = top + plotH - (v / max) * plotH;
    ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(w - right, y); ctx.stroke();
    ctx.fillText(fmtNum(v), 4, y + 4);
  }
  for (let s = 0; s <= n; s += 60) {
    const x = left + plotW - (s / n) * plotW;
    ctx.fillText(s === 0 ? "now" : `-${s / 60}m`, x - 12, h - 4);
  }
  ctx.lineWidth = 2;
  for (const s of series) {
    const values = s.values.slice(-n);
    if (!values.length) continue;
    ctx.strokeStyle = s.color;
    ctx.beginPath();
    values.forEach((v, i) => {
      const x = left + plotW - ((values.length - 1 - i) / n) * plotW;
      const y = top + plotH - (v / max) * plotH;
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}

function renderLegend() {
  const legend = $("legend");
  legend.replaceChildren();
  view.sets.forEach((s, i) => {
    const item = el("span");
    item.style.setProperty("--c", PALETTE[i % PALETTE.length]);
    item.textContent = s.name;
    legend.appendChild(item);
  });
}

function drawSpark(canvas, values) {
  if (!canvas.isConnected || canvas.closest("tr.hidden")) return;
  const [ctx, w, h] = fitCanvas(canvas);
  const max = Math.max(1, ...values);
  ctx.strokeStyle = "#38bdf8";
  ctx.lineWidth = 1.2;
  ctx.beginPath();
  values.forEach((v, i) => {
    const x = w - ((values.length - 1 - i) / 59) * w;
    const y = h - 1 - (v / max) * (h - 2);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
}

// ---- filter ---------------------------------------------------------------------------------
function applyFilter() {
  const words = $("filter").value.toLowerCase().split(/\s+/).filter(Boolean);
  for (const row of view.rows) {
    const hay = `${row.set} ${row.uri} ${row.state}`.toLowerCase();
    row.el.classList.toggle("hidden", !words.every((w) => hay.includes(w)));
  }
}

// ---- small helpers --------------------------------------------------------------------------
function el(tag, cls) { const node = document.createElement(tag); if (cls) node.className = cls; return node; }
function text(s) { return document.createTextNode(s); }
function bold(s) { const b = document.createElement("b"); b.textContent = s; return b; }
function fmtMs(v) { return v < 10 ? v.toFixed(2) : v.toFixed(0); }
function fmtNum(v) { return v >= 10 || Number.isInteger(v) ? String(Math.round(v)) : v.toFixed(1); }
function niceStep(raw) {
  const p = Math.pow(10, Math.floor(Math.log10(Math.max(raw, 1e-9))));
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}
function duration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s % 60}s`;
  return `${s}s`;
}
function ago(epoch) { return duration(Date.now() / 1000 - epoch) + " ago"; }

$("filter").addEventListener("input", applyFilter);
$("token-button").addEventListener("click", async () => {
  if (await askToken("Stored in this browser; leave empty to forget it.")) connect();
});
window.addEventListener("resize", drawChart);
connect();
