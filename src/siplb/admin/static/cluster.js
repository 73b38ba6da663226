// siplb dashboard, cluster panel: the members this node sees (alive, last heard, calls, the
// config each runs, a config other than this node's marked), the Redis link, the node-to-node
// channel. It reads GET /api/cluster every two seconds while the page is visible, with the token
// dashboard.js keeps (authHeaders); the panel stays hidden when the balancer has no [cluster]
// (then it stops asking: a cluster needs a restart).
"use strict";

const CLUSTER_EVERY = 2000;  // ms between two reads

const ring = { timer: null, off: false };  // the cluster panel's state

async function readCluster() {
  clearTimeout(ring.timer);
  ring.timer = null;
  if (document.hidden || ring.off) return;  // resumed by visibilitychange
  let response;
  try {
    response = await fetch("/api/cluster", { headers: authHeaders(), cache: "no-store" });
  } catch (err) {
    setClusterNote("unreachable");
    return readClusterLater();
  }
  if (response.status === 404) { ring.off = true; return; }  // a balancer without the API
  if (!response.ok) {
    setClusterNote(response.status === 401 ? "needs the admin token" : `HTTP ${response.status}`);
    return readClusterLater();
  }
  const c = await response.json();
  if (!c.enabled) {
    $("cluster").hidden = true;
    ring.off = true;
    return;
  }
  renderCluster(c);
  readClusterLater();
}

function readClusterLater() {
  if (!document.hidden && !ring.off) ring.timer = setTimeout(readCluster, CLUSTER_EVERY);
}

function setClusterNote(text) { $("c-note").textContent = text; }

function renderCluster(c) {
  $("cluster").hidden = false;
  setClusterNote("");
  $("c-me").textContent = `this is ${c.me}`;
  const redis = $("c-redis");
  redis.className = "c-redis " + (c.redis.up ? "up" : "down");
  redis.textContent = c.redis.up ? `Redis up · ${c.redis.where}` : `Redis DOWN · ${c.redis.where}`;
  redis.title = c.redis.up
    ? `${c.redis.errors} failed batches, ${c.redis.reconnects} reconnects`
    : (c.redis.last_error || "no answer") + ": balancing on the last state known";
  $("c-nodes").textContent = c.totals.nodes;
  $("c-members").textContent = c.totals.members;
  $("c-calls").textContent = c.totals.calls;
  $("c-handed").textContent = `${c.channel.handed_over} · ${c.channel.taken_over}`;
  const rejected = Object.entries(c.channel.rejected).filter(([, n]) => n > 0);
  const $rejected = $("c-rejected");
  $rejected.textContent = rejected.reduce((sum, [, n]) => sum + n, 0);
  $rejected.title = rejected.map(([reason, n]) => `${reason} ${n}`).join(", ") || "none";
  const skew = $("c-skew");
  skew.hidden = !c.totals.skewed;
  skew.textContent = c.totals.skewed
    ? `config skew: ${c.totals.skewed} live member(s) run another config than this node (${c.config_hash.slice(0, 12)})`
    : "";
  renderMembers(c.members, c.me);
}

function renderMembers(members, me) {
  const body = $("c-rows");
  body.replaceChildren();
  const now = Date.now() / 1000;
  for (const m of members) {
    const tr = el("tr", (m.member === me ? "me " : "") + (m.alive ? "" : "gone"));
    const cells = [
      [m.member, ""],
      [m.peer || "-", "uri"],
      [m.alive ? "alive" : "gone", m.alive ? "alive" : "dead"],
      [m.last_seen === null ? "-" : `${m.last_seen.toFixed(1)} s`, "num"],
      [String(m.calls), "num"],
      [(m.config_hash || "-").slice(0, 12) + (m.config_matches === false ? " (differs)" : ""),
        m.config_matches === false ? "skew" : ""],
      [m.started === null ? "-" : duration(now - m.started), "num"],
    ];
    for (const [value, cls] of cells) {
      const td = el("td", cls);
      td.textContent = value;
      tr.appendChild(td);
    }
    tr.title = m.config_hash ? `config ${m.config_hash}` : "";
    body.appendChild(tr);
  }
}

document.addEventListener("visibilitychange", () => { if (!document.hidden) readCluster(); });
readCluster();
