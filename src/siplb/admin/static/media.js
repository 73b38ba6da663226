// siplb dashboard, media panel: the rtpengines of [media] (state, calls anchored on each, offer
// latency p50/max, failures by command) and the engine client's drops. It reads GET /api/status
// (its "media" object) every two seconds while the page is visible, with the token dashboard.js
// keeps (authHeaders); the panel stays hidden, and stops asking, when the balancer has no [media]
// (adding it needs a restart). It builds its own rows inside <section id="media">.
"use strict";

const MEDIA_EVERY = 2000;  // ms between two reads

const mediaPanel = { timer: null, off: false, built: false };

async function readMedia() {
  clearTimeout(mediaPanel.timer);
  mediaPanel.timer = null;
  if (document.hidden || mediaPanel.off) return;  // resumed by visibilitychange
  let response;
  try {
    response = await fetch("/api/status", { headers: authHeaders(), cache: "no-store" });
  } catch (err) {
    setMediaNote("unreachable");
    return readMediaLater();
  }
  if (!response.ok) {
    setMediaNote(response.status === 401 ? "needs the admin token" : `HTTP ${response.status}`);
    return readMediaLater();
  }
  const status = await response.json();
  if (!status.media) {
    $("media").hidden = true;
    mediaPanel.off = true;
    return;
  }
  renderMedia(status.media);
  readMediaLater();
}

function readMediaLater() {
  if (!document.hidden && !mediaPanel.off) mediaPanel.timer = setTimeout(readMedia, MEDIA_EVERY);
}

function setMediaNote(text) {
  if (mediaPanel.built) $("m-note").textContent = text;
}

function buildMedia() {
  const card = $("media");
  const head = el("div", "card-head");
  const title = el("h2");
  title.textContent = "Media engines";
  const sub = el("span", "muted");
  sub.textContent = "rtpengine, ng control protocol";
  const note = el("span", "muted");
  note.id = "m-note";
  head.append(title, sub, note);
  const figures = el("div", "p-figures");
  for (const [id, label] of [["m-up", "engines up"], ["m-calls", "calls anchored"],
    ["m-pending", "commands waiting"], ["m-dropped", "replies dropped"]]) {
    const box = el("div");
    const span = el("span", "label");
    span.textContent = label;
    const value = el("b");
    value.id = id;
    value.textContent = "-";
    box.append(span, value);
    figures.appendChild(box);
  }
  const table = el("table", "c-members");
  const row = el("tr");
  for (const [name, cls] of [["engine", ""], ["state", ""], ["weight", "num"], ["calls", "num"],
    ["offers", "num"], ["p50 ms", "num"], ["max ms", "num"], ["failures", "num"], ["since", "num"]]) {
    const th = el("th", cls);
    th.textContent = name;
    row.appendChild(th);
  }
  const thead = el("thead");
  thead.appendChild(row);
  const body = el("tbody");
  body.id = "m-rows";
  table.append(thead, body);
  card.append(head, figures, table);
  mediaPanel.built = true;
}

function renderMedia(m) {
  if (!mediaPanel.built) buildMedia();
  $("media").hidden = false;
  setMediaNote("");
  const up = m.engines.filter((e) => e.state === "up").length;
  $("m-up").textContent = `${up} / ${m.engines.length}`;
  $("m-calls").textContent = m.calls;
  $("m-pending").textContent = m.pending;
  const dropped = (m.counters.unknown_cookie || 0) + (m.counters.malformed || 0);
  $("m-dropped").textContent = dropped;
  $("m-dropped").title = `unknown cookie ${m.counters.unknown_cookie || 0}, malformed ${m.counters.malformed || 0}`;
  const body = $("m-rows");
  body.replaceChildren();
  const now = Date.now() / 1000;
  for (const e of m.engines) {
    const tr = el("tr", e.state === "up" ? "" : "gone");
    const failures = Object.entries(e.failures);
    const cells = [
      [e.address, "uri"],
      [e.state, e.state === "up" ? "alive" : e.state === "down" ? "dead" : ""],
      [String(e.weight), "num"],
      [String(e.calls), "num"],
      [String(e.offers), "num"],
      [e.offer_p50_ms === null ? "-" : fmtMs(e.offer_p50_ms), "num"],
      [e.offer_max_ms === null ? "-" : fmtMs(e.offer_max_ms), "num"],
      [String(failures.reduce((sum, [, n]) => sum + n, 0)), "num"],
      [duration(Math.max(0, now - e.since)), "num"],
    ];
    for (const [value, cls] of cells) {
      const td = el("td", cls);
      td.textContent = value;
      tr.appendChild(td);
    }
    tr.title = failures.map(([op, n]) => `${op} ${n}`).join(", ") || "no failure";
    body.appendChild(tr);
  }
}

document.addEventListener("visibilitychange", () => { if (!document.hidden) readMedia(); });
readMedia();
