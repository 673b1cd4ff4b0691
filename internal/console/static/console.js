// The Switchboard console: every action is one call of the @connections API
// (docs/api.md), made with the token the user signed in with.
"use strict";

const $ = (sel) => document.querySelector(sel);
let token = sessionStorage.getItem("switchboard-token");
let view = "cluster";
let timer = null;

async function call(method, path, body, headers) {
  const h = Object.assign({}, headers || {});
  if (token) h["Authorization"] = "Bearer " + token;
  const res = await fetch(path, { method, headers: h, body, cache: "no-store" });
  let data = null;
  const text = res.status === 204 ? "" : await res.text();
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (!res.ok) {
    const err = new Error((data && data.message) || res.statusText || String(res.status));
    err.status = res.status;
    throw err;
  }
  return data;
}

const enc = encodeURIComponent;

// ---- login ----
async function signIn(t, quiet) {
  token = t;
  try {
    await call("GET", "/@connections");
  } catch (e) {
    token = null;
    sessionStorage.removeItem("switchboard-token");
    if (!quiet) $("#login-error").textContent = e.status === 403 ? "Refused: wrong or missing token." : "Error: " + e.message;
    showLogin();
    return;
  }
  if (t) sessionStorage.setItem("switchboard-token", t);
  $("#login").hidden = true;
  $("#tabs").hidden = false;
  $("#logout").hidden = false;
  show(location.hash.slice(1) || "cluster");
}

function showLogin() {
  $("#login").hidden = false;
  $("#tabs").hidden = true;
  $("#logout").hidden = true;
  document.querySelectorAll(".view").forEach((v) => (v.hidden = true));
  stopTail();
}

$("#login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  $("#login-error").textContent = "";
  signIn($("#token").value.trim());
});
$("#logout").addEventListener("click", () => {
  token = null;
  sessionStorage.removeItem("switchboard-token");
  showLogin();
});

// ---- views ----
function show(name) {
  if (!document.getElementById("view-" + name)) name = "cluster";
  view = name;
  location.hash = name;
  document.querySelectorAll(".view").forEach((v) => (v.hidden = v.id !== "view-" + name));
  document.querySelectorAll("#tabs button").forEach((b) => b.classList.toggle("on", b.dataset.view === name));
  clearInterval(timer);
  if (name === "cluster") {
    refreshCluster();
    timer = setInterval(refreshCluster, 2000);
  }
}
document.querySelectorAll("#tabs button").forEach((b) => b.addEventListener("click", () => show(b.dataset.view)));

// ---- cluster ----
function fmtAge(ms) {
  if (ms < 0) return "–";
  return ms < 1000 ? ms + " ms" : (ms / 1000).toFixed(1) + " s";
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
}

async function refreshCluster() {
  try {
    const [count, nodes] = await Promise.all([call("GET", "/@connections"), call("GET", "/@nodes")]);
    $("#cluster-count").textContent = count.count;
    $("#node-count").textContent = nodes.nodes.length;
    $("#cluster-updated").textContent = "updated " + new Date().toLocaleTimeString();
    const tb = $("#nodes tbody");
    tb.replaceChildren();
    const sel = $("#chart-node");
    const chosen = sel.value;
    const ids = [];
    for (const n of nodes.nodes) {
      const tr = document.createElement("tr");
      tr.dataset.node = n.nodeId;
      cell(tr, n.nodeId);
      cell(tr, n.role);
      cell(tr, n.version);
      cell(tr, n.connections, "connections");
      cell(tr, fmtAge(n.leaseAgeMs));
      cell(tr, n.draining ? "draining" : n.ready ? "ready" : "not ready", n.ready && !n.draining ? "ok" : "error");
      cell(tr, n.eventsQueued);
      cell(tr, n.eventsDropped);
      tb.appendChild(tr);
      ids.push(n.nodeId);
    }
    // The first choice, "*" (the default; never a node ID), is the whole cluster.
    const opts = ["*"].concat(ids);
    if (sel.options.length !== opts.length || [...sel.options].some((o, i) => o.value !== opts[i])) {
      sel.replaceChildren(...opts.map((id) => new Option(id === "*" ? "the whole cluster" : id, id)));
      sel.value = opts.includes(chosen) ? chosen : "*";
    }
    if (Date.now() - chartAt >= chartEvery) await refreshCharts(sel.value);
  } catch (e) {
    if (e.status === 403) return showLogin();
    $("#cluster-updated").textContent = "error: " + e.message;
  }
}

// The charts (of one node, or of the whole cluster: every node's history
// summed by GET /@stats) span what a node keeps (historySize samples
// sampleIntervalMs apart: 10 minutes by default) on a fixed time axis ending
// at the latest reading, so a young node's few samples sit at the right edge instead of
// being stretched across the chart.
// The charts are asked for at most once a sample interval (at least every
// 2 s): between samples only the latest reading changes.
let chartAt = 0, chartEvery = 0;

async function refreshCharts(node) {
  chartAt = Date.now();
  const st = await call("GET", node === "*" ? "/@stats" : "/@nodes/" + enc(node));
  chartEvery = Math.max(2000, st.sampleIntervalMs || 0) - 100;
  const h = st.history || [];
  const now = h.length ? h[h.length - 1].t : 0;
  const span = (st.sampleIntervalMs * st.historySize) || 600000;
  const rate = (key) => h.slice(1).map((s, i) => [s.t, Math.max(0, (s[key] - h[i][key]) / Math.max(0.001, (s.t - h[i].t) / 1000))]);
  draw("#chart-connections", h.map((s) => [s.t, s.connections]), now, span);
  draw("#chart-connects", rate("connects"), now, span);
  draw("#chart-messages", rate("messages"), now, span);
  draw("#chart-errors", rate("errors"), now, span);
}

function fmtSpan(ms) {
  return ms >= 120000 ? Math.round(ms / 60000) + " min" : Math.round(ms / 1000) + " s";
}

function fmtNum(v) { return Number.isInteger(v) ? String(v) : String(+v.toFixed(2)); }

function svgEl(name, attrs, text) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", name);
  for (const k in attrs) el.setAttribute(k, attrs[k]);
  if (text !== undefined) el.textContent = text;
  return el;
}

function draw(sel, pts, now, span) {
  const svg = $(sel);
  const W = 300, H = 80, top = 16, bottom = 12;
  if (pts.length === 0) { svg.replaceChildren(); delete svg.dataset.last; return; }
  const last = pts[pts.length - 1][1];
  svg.dataset.last = last;
  svg.dataset.peak = Math.max(...pts.map((p) => p[1]));
  const t0 = now - span;
  const peak = Math.max(...pts.map((p) => p[1]));
  const scale = peak > 0 ? peak : 1;
  const base = H - bottom;
  const xy = pts.filter((p) => p[0] >= t0).map((p) => [((p[0] - t0) / span) * (W - 4) + 2, base - (p[1] / scale) * (base - top)]);
  const coords = (ps) => ps.map((p) => p[0].toFixed(1) + "," + p[1].toFixed(1)).join(" ");
  const end = xy[xy.length - 1];
  svg.replaceChildren(
    svgEl("text", { x: 2, y: 10 }, "peak " + fmtNum(peak) + " · now " + fmtNum(last)),
    svgEl("line", { x1: 0, y1: base, x2: W, y2: base, class: "axis" }),
    svgEl("polygon", { points: coords([[xy[0][0], base], ...xy, [end[0], base]]), class: "area" }),
    svgEl("polyline", { points: coords(xy) }),
    svgEl("circle", { cx: end[0].toFixed(1), cy: end[1].toFixed(1), r: 2 }),
    svgEl("text", { x: 2, y: H - 1, class: "tick" }, "−" + fmtSpan(span)),
    svgEl("text", { x: W - 2, y: H - 1, class: "tick end" }, "now"),
  );
}
$("#chart-node").addEventListener("change", () => refreshCharts($("#chart-node").value));

// ---- connections ----
let connCursor = null, connPath = null;

function idButton(id, list) {
  const li = document.createElement("li");
  const b = document.createElement("button");
  b.textContent = id;
  b.dataset.id = id;
  b.addEventListener("click", () => openConn(id));
  li.appendChild(b);
  list.appendChild(li);
}

async function searchConns(more) {
  const by = $("#conn-by").value, q = $("#conn-q").value.trim();
  const list = $("#conn-results");
  if (!more) {
    list.replaceChildren();
    $("#conn-detail").hidden = true;
    connCursor = null;
  }
  $("#conn-status").textContent = "";
  if (!q) return;
  try {
    if (by === "id") {
      await call("HEAD", "/@connections/" + enc(q));
      idButton(q, list);
      $("#conn-status").textContent = "1 connection";
      return openConn(q);
    }
    connPath = "/@" + (by === "user" ? "users" : "groups") + "/" + enc(q);
    const [count, page] = await Promise.all([
      more ? null : call("GET", connPath),
      call("GET", connPath + "/connections?limit=50" + (connCursor ? "&cursor=" + enc(connCursor) : "")),
    ]);
    for (const id of page.connections || []) idButton(id, list);
    connCursor = page.cursor || null;
    $("#conn-more").hidden = !connCursor;
    if (count) $("#conn-status").textContent = count.connections + " connection(s)";
  } catch (e) {
    $("#conn-status").textContent = e.status === 410 || e.status === 404 ? "no such connection" : "error: " + e.message;
  }
}
$("#conn-form").addEventListener("submit", (ev) => { ev.preventDefault(); searchConns(false); });
$("#conn-more").addEventListener("click", () => searchConns(true));

let current = null;
async function openConn(id) {
  current = id;
  $("#d-result").textContent = "";
  try {
    const c = await call("GET", "/@connections/" + enc(id));
    $("#d-id").textContent = c.connectionId;
    $("#d-user").textContent = c.userId || "–";
    $("#d-groups").textContent = (c.groups || []).join(", ") || "–";
    $("#d-principal").textContent = c.principal ? JSON.stringify(c.principal, null, 2) : "–";
    $("#d-node").textContent = c.nodeId || "–";
    $("#d-ip").textContent = c.identity.sourceIp;
    $("#d-ua").textContent = c.identity.userAgent;
    $("#d-connected").textContent = c.connectedAt;
    $("#d-active").textContent = c.lastActiveAt;
    // A resumable connection whose client is away, within its resume window (docs/resume.md).
    $("#d-state").textContent = c.detached ? "detached" : "open";
    $("#conn-detail").hidden = false;
  } catch (e) {
    $("#d-state").textContent = e.status === 410 ? "gone" : "error: " + e.message;
  }
}

function b64bytes(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

$("#send-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const binary = $("#send-frame").value === "binary";
  try {
    const body = binary ? b64bytes($("#send-body").value.trim()) : $("#send-body").value;
    await call("POST", "/@connections/" + enc(current), body, { "X-Switchboard-Frame": binary ? "binary" : "text" });
    $("#d-result").textContent = "sent";
  } catch (e) {
    $("#d-result").textContent = "send failed: " + e.message;
  }
});

$("#close-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const q = "?code=" + enc($("#close-code").value) + "&reason=" + enc($("#close-reason").value);
  try {
    await call("DELETE", "/@connections/" + enc(current) + q);
    $("#d-result").textContent = "closed";
    // The close is asynchronous: look again until the registry forgets it.
    for (let i = 0; i < 20; i++) {
      try { await call("HEAD", "/@connections/" + enc(current)); } catch (e) { if (e.status === 410) break; }
      await new Promise((r) => setTimeout(r, 250));
    }
    $("#d-state").textContent = "gone";
    await searchConns(false);
  } catch (e) {
    $("#d-result").textContent = "close failed: " + e.message;
  }
});

// ---- groups and users ----
let gCursor = null;
function gPath() { return "/@" + $("#g-kind").value + "/" + enc($("#g-name").value.trim()); }

async function loadGroup(more) {
  if (!$("#g-name").value.trim()) return;
  if (!more) { $("#g-members").replaceChildren(); gCursor = null; }
  try {
    if (!more) $("#g-count").textContent = (await call("GET", gPath())).connections;
    const page = await call("GET", gPath() + "/connections?limit=50" + (gCursor ? "&cursor=" + enc(gCursor) : ""));
    for (const id of page.connections || []) {
      const li = document.createElement("li");
      li.textContent = id;
      $("#g-members").appendChild(li);
    }
    gCursor = page.cursor || null;
    $("#g-more").hidden = !gCursor;
  } catch (e) {
    $("#g-result").textContent = "error: " + e.message;
  }
}
$("#g-form").addEventListener("submit", (ev) => { ev.preventDefault(); loadGroup(false); });
$("#g-more").addEventListener("click", () => loadGroup(true));
$("#g-send-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    await call("POST", gPath(), $("#g-body").value, { "X-Switchboard-Frame": "text" });
    $("#g-result").textContent = "sent to " + $("#g-kind").value.slice(0, -1) + " " + $("#g-name").value.trim();
  } catch (e) { $("#g-result").textContent = "send failed: " + e.message; }
});
$("#broadcast").addEventListener("click", async () => {
  if (!confirm("Send this message to every connection of the cluster?")) return;
  try {
    await call("POST", "/@broadcast", $("#g-body").value, { "X-Switchboard-Frame": "text" });
    $("#g-result").textContent = "broadcast sent";
  } catch (e) { $("#g-result").textContent = "broadcast failed: " + e.message; }
});

// ---- event tail (GET /@events, Server-Sent Events read with fetch) ----
let tailAbort = null;
const maxRows = 200;

function stopTail() {
  if (tailAbort) tailAbort.abort();
  tailAbort = null;
  $("#tail-toggle").textContent = "Start";
  $("#tail-status").textContent = "Paused.";
}

async function startTail() {
  const p = new URLSearchParams();
  if ($("#tail-route").value) p.set("route", $("#tail-route").value);
  if ($("#tail-user").value) p.set("user", $("#tail-user").value);
  if ($("#tail-conn").value) p.set("connection", $("#tail-conn").value);
  if ($("#tail-routes").checked) p.set("routes", "1");
  tailAbort = new AbortController();
  $("#tail-toggle").textContent = "Pause";
  $("#tail-status").textContent = "Connecting…";
  try {
    const res = await fetch("/@events?" + p, { headers: token ? { Authorization: "Bearer " + token } : {}, signal: tailAbort.signal });
    if (!res.ok) throw new Error(res.status === 429 ? "too many tails open on this node" : "HTTP " + res.status);
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (line.startsWith("data: ")) tailEvent(JSON.parse(line.slice(6)));
      }
    }
    stopTail();
  } catch (e) {
    if (e.name !== "AbortError") { stopTail(); $("#tail-status").textContent = "Stopped: " + e.message; }
  }
}

let dropped = 0;
function tailEvent(ev) {
  dropped += ev.dropped || 0;
  if (ev.type === "open") { $("#tail-status").textContent = "Live."; return; }
  $("#tail-status").textContent = "Live." + (dropped ? " " + dropped + " events skipped (sampling)." : "");
  if (ev.type === "tick") return;
  const tr = document.createElement("tr");
  tr.className = "ev-" + ev.type;
  cell(tr, new Date(ev.t).toLocaleTimeString());
  cell(tr, ev.type);
  cell(tr, ev.route || "");
  cell(tr, ev.connectionId || "");
  cell(tr, ev.userId || "");
  cell(tr, ev.nodeId || "");
  cell(tr, ev.type === "resume" ? "away " + (ev.detachedMs || 0) + " ms" : ev.preview || "");
  const tb = $("#tail tbody");
  tb.prepend(tr);
  while (tb.rows.length > maxRows) tb.deleteRow(-1);
}

$("#tail-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  if (tailAbort) stopTail(); else startTail();
});

signIn(token || "", true);
