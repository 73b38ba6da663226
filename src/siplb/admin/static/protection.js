// siplb dashboard, protection panel: requests refused by reason, the bans in force, pending
// transactions. It reads GET /api/protection every few seconds while the page is visible, with
// the token dashboard.js keeps (authHeaders), and bans or unbans through dashboard.js's change(),
// which asks for the token when it is missing or refused. Summed refusals, bans and lifts also
// reach the event list through the stream (kinds "refused", "ban", "unban").
"use strict";

const PROTECTION_EVERY = 5000;  // ms between two reads
const BANS_LISTED = 50;

const shield = {  // the protection panel's state
  timer: null,
  last: null,         // {at, refused} of the previous read: rates per reason
  rates: {},
};

async function readProtection() {
  clearTimeout(shield.timer);
  shield.timer = null;
  if (document.hidden) return;  // resumed by visibilitychange
  let response;
  try {
    response = await fetch(`/api/protection?limit=${BANS_LISTED}`, { headers: authHeaders(), cache: "no-store" });
  } catch (err) {
    setProtectionNote("unreachable");
    return readProtectionLater();
  }
  if (response.status === 401) {
    setProtectionNote("needs the admin token");  // dashboard.js asks for it
    return readProtectionLater();
  }
  if (!response.ok) {
    setProtectionNote(`HTTP ${response.status}`);
    return readProtectionLater();
  }
  renderProtection(await response.json());
  readProtectionLater();
}

function readProtectionLater() {
  if (!document.hidden) shield.timer = setTimeout(readProtection, PROTECTION_EVERY);
}

function setProtectionNote(text) { $("p-note").textContent = text; }

function renderProtection(p) {
  const now = Date.now() / 1000;
  if (shield.last) {
    const dt = now - shield.last.at;
    shield.rates = {};
    for (const [reason, count] of Object.entries(p.refused)) {
      const grew = count - (shield.last.refused[reason] || 0);
      shield.rates[reason] = dt > 0 && grew > 0 ? grew / dt : 0;
    }
  }
  shield.last = { at: now, refused: p.refused };
  const pending = p.pending;
  setProtectionNote(p.admission ? "" : "admission stage off");
  $("p-refused-total").textContent = p.refused_total;
  $("p-bans-total").textContent = p.bans_active;
  $("p-pending").textContent = `${pending.transactions} / ${pending.max}`;
  const streams = Object.values(p.streams.refused).reduce((a, b) => a + b, 0);
  $("p-streams").textContent = `${p.streams.inbound} in · ${p.streams.outbound} out · ${streams} refused`;
  renderRefused(p.refused);
  renderBans(p.bans, p.bans_active);
  const top = pending.top_sources.slice(0, 3).map((s) => `${s.host} ${s.pending}`).join(", ");
  $("p-top").textContent = top ? "most pending: " + top : "";
}

function renderRefused(refused) {
  const list = $("p-reasons");
  list.replaceChildren();
  const entries = Object.entries(refused);
  if (!entries.length) {
    list.appendChild(emptyItem("nothing refused"));
    return;
  }
  const most = Math.max(...entries.map(([, n]) => n));
  for (const [reason, count] of entries) {
    const li = el("li");
    const name = el("span", "p-reason");
    name.textContent = reason;
    const bar = el("div", "bar");
    const fill = el("div", "fill refused");
    fill.style.width = (100 * count / most).toFixed(1) + "%";
    const txt = el("span", "txt");
    const rate = shield.rates[reason];
    txt.textContent = String(count) + (rate ? ` · ${fmtNum(rate)}/s` : "");
    bar.append(fill, txt);
    li.append(name, bar);
    list.appendChild(li);
  }
}

function renderBans(bans, total) {
  const body = $("p-bans");
  body.replaceChildren();
  for (const b of bans) {
    const tr = el("tr");
    const host = el("td", "uri");
    host.textContent = b.host;
    const reason = el("td");
    reason.textContent = b.reason;
    const left = el("td", "num");
    left.textContent = duration(b.seconds_left);
    const offences = el("td", "num");
    offences.textContent = b.offences;
    const cell = el("td");
    const button = el("button");
    button.type = "button";
    button.textContent = "unban";
    button.addEventListener("click", () => unbanHost(b.host));
    cell.appendChild(button);
    tr.append(host, reason, left, offences, cell);
    body.appendChild(tr);
  }
  $("p-bans-more").textContent = total > bans.length ? `${total - bans.length} more not listed` : "";
  $("p-bans-empty").hidden = bans.length > 0;
}

function emptyItem(text) {
  const li = el("li", "muted");
  li.textContent = text;
  return li;
}

async function banHost() {
  const host = await ask("Ban a source", "Its requests are dropped until the ban ends (IP address).");
  if (!host) return;
  const minutes = await ask("Ban for how long?", `Minutes to ban ${host} for.`, { type: "number", value: "60" });
  if (minutes === null || minutes === "") return;
  const seconds = Number(minutes) * 60;
  if (!(seconds > 0)) { toast("the time is a number of minutes above 0", true); return; }
  const data = await change("POST", "/api/bans", { host, seconds, reason: "operator" });
  if (data) { toast(`${data.host} banned for ${duration(data.seconds_left)}`); readProtection(); }
}

async function unbanHost(host) {
  const data = await change("DELETE", `/api/bans/${encodeURIComponent(host)}`);
  if (data) { toast(`ban on ${data.host} lifted`); readProtection(); }
}

$("p-ban").addEventListener("click", banHost);
document.addEventListener("visibilitychange", () => { if (!document.hidden) readProtection(); });
readProtection();
