// The Volley dashboard: polls /api/state once a second and keeps the last five minutes of
// samples in the page. The token (when the server needs one) comes from the page's URL
// (?token=…) and is sent as a bearer token.
"use strict";

const WINDOW_SECONDS = 300;
const token = new URLSearchParams(location.search).get("token");
const headers = token ? { Authorization: "Bearer " + token } : {};
const samples = []; // { t, read, written, lag, state, checkpoint, letters, model }
let previous = null;
const charts = {};

function metric(job, component, name) {
  return job.metrics.filter((m) => m.component === component && m.metric === name);
}

function sum(rows) {
  return rows.reduce((total, row) => total + row.value, 0);
}

function sample(job, now) {
  const read = sum(metric(job, "source", "rows_in"));
  const written = sum(metric(job, "sink", "rows_out"));
  const lags = job.metrics
    .filter((m) => m.component === "source" && m.metric === "watermark_ms")
    .map((w) => {
      const newest = metric(job, "source", "max_event_time_ms").find((m) => m.name === w.name);
      return newest ? (newest.value - w.value) / 1000 : null;
    })
    .filter((v) => v !== null);
  const models = metric(job, "model", "latency_ms_p99").map((m) => m.value);
  const last = job.checkpoints.length ? job.checkpoints[job.checkpoints.length - 1] : null;
  const rates = previous && now > previous.t
    ? [(read - previous.readTotal) / (now - previous.t), (written - previous.writtenTotal) / (now - previous.t)]
    : [0, 0];
  previous = { t: now, readTotal: read, writtenTotal: written };
  return {
    t: now,
    read: Math.max(0, rates[0]),
    written: Math.max(0, rates[1]),
    lag: lags.length ? Math.max(...lags) : null,
    state: sum(metric(job, "operator", "state_bytes")) / 1024,
    checkpoint: last ? last.duration_ms : null,
    letters: job.dead_letter_total,
    model: models.length ? Math.max(...models) : null,
  };
}

function chart(id, series) {
  const el = document.getElementById(id);
  const opts = {
    width: Math.max(360, el.clientWidth || 400),
    height: 160,
    series: [{}].concat(series.map((s) => ({ label: s.label, stroke: s.color, width: 2, spanGaps: true }))),
    axes: [{}, { size: 60 }],
    legend: { show: true },
  };
  const data = [[]].concat(series.map(() => []));
  charts[id] = { plot: new uPlot(opts, data, el), series };
  el.classList.remove("empty");
}

function redraw() {
  for (const [id, c] of Object.entries(charts)) {
    const data = [samples.map((s) => s.t)].concat(c.series.map((s) => samples.map((x) => x[s.key])));
    c.plot.setData(data);
    document.getElementById(id).dataset.points = String(samples.length);
  }
  document.body.dataset.samples = String(samples.length);
  if (previous) document.body.dataset.readTotal = String(previous.readTotal);
}

function text(tag, content, attrs) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (content !== undefined) el.textContent = content;
  return el;
}

function drawGraph(graph) {
  const host = document.getElementById("graph");
  if (!graph || host.dataset.drawn === "1") return;
  const columns = { source: 0, lookup: 0, query: 1, sink: 2 };
  const byColumn = [[], [], []];
  for (const node of graph.nodes) byColumn[columns[node.kind] ?? 1].push(node);
  const boxW = 300, gapX = 90, lineH = 16;
  const heightOf = (n) => 28 + n.detail.length * lineH;
  const place = {};
  let height = 0;
  byColumn.forEach((nodes, col) => {
    let y = 10;
    for (const node of nodes) {
      place[node.id] = { x: 10 + col * (boxW + gapX), y, h: heightOf(node) };
      y += heightOf(node) + 14;
    }
    height = Math.max(height, y);
  });
  const svg = text("svg", undefined, { width: 3 * boxW + 2 * gapX + 20, height, id: "plan" });
  const colors = { source: "#e6f0ff", lookup: "#eef7e9", query: "#fff5e0", sink: "#f3e9ff" };
  for (const [from, to] of graph.edges) {
    const a = place[from], b = place[to];
    if (!a || !b) continue;
    svg.appendChild(text("line", undefined, {
      x1: a.x + boxW, y1: a.y + 14, x2: b.x, y2: b.y + 14, stroke: "#8a93a6", "stroke-width": 1.5,
    }));
  }
  for (const node of graph.nodes) {
    const p = place[node.id];
    const g = text("g", undefined, { class: "node " + node.kind, "data-id": node.id });
    g.appendChild(text("rect", undefined, {
      x: p.x, y: p.y, width: boxW, height: p.h, rx: 5, fill: colors[node.kind] || "#fff", stroke: "#b5bccb",
    }));
    g.appendChild(text("text", node.kind + ": " + node.label, { x: p.x + 8, y: p.y + 18, "font-weight": 600 }));
    node.detail.forEach((line, i) => {
      g.appendChild(text("text", line, { x: p.x + 14, y: p.y + 18 + (i + 1) * lineH, fill: "#4a5366" }));
    });
    svg.appendChild(g);
  }
  host.textContent = "";
  host.classList.remove("empty");
  host.appendChild(svg);
  host.dataset.drawn = "1";
}

function table(rows, columns) {
  const t = document.createElement("table");
  const head = t.insertRow();
  for (const c of columns) head.appendChild(Object.assign(document.createElement("th"), { textContent: c.title }));
  for (const row of rows) {
    const tr = t.insertRow();
    for (const c of columns) {
      const td = tr.insertCell();
      td.textContent = c.value(row);
      if (c.className) td.className = c.className;
    }
  }
  return t;
}

function show(job) {
  document.getElementById("pipeline").textContent = "pipeline " + job.pipeline + (job.instance ? " / " + job.instance : "");
  document.getElementById("state").textContent = job.state;
  document.getElementById("epoch").textContent = "epoch " + job.epoch;
  drawGraph(job.graph);
  const cp = document.getElementById("checkpoint");
  const last = job.checkpoints[job.checkpoints.length - 1];
  if (last) {
    cp.classList.remove("empty");
    cp.textContent = "epoch " + last.epoch + ", " + last.duration_ms + " ms, " + last.bytes + " bytes, at " +
      new Date(last.written_at_ms).toLocaleTimeString() + " (" + job.checkpoints.length + " recent)";
  }
  const letters = document.getElementById("letters");
  if (job.dead_letters.length) {
    letters.classList.remove("empty");
    letters.textContent = "";
    letters.appendChild(table(job.dead_letters, [
      { title: "epoch", value: (l) => l.epoch },
      { title: "source", value: (l) => l.source },
      { title: "reason", value: (l) => l.reason },
      { title: "position", value: (l) => l.position || "" },
      { title: "record", value: (l) => l.payload, className: "payload" },
    ]));
  }
}

async function poll() {
  try {
    const response = await fetch("api/state", { headers });
    if (!response.ok) throw new Error(response.status + " " + (await response.text()));
    const state = await response.json();
    const job = state.jobs[0];
    if (job) {
      const now = state.now_ms / 1000;
      samples.push(sample(job, now));
      while (samples.length && samples[0].t < now - WINDOW_SECONDS) samples.shift();
      show(job);
      redraw();
    }
  } catch (e) {
    document.getElementById("state").textContent = "unreachable: " + e.message;
  }
}

chart("chart-throughput", [
  { key: "read", label: "read", color: "#2f6fdf" },
  { key: "written", label: "written", color: "#d9822b" },
]);
chart("chart-lag", [{ key: "lag", label: "seconds", color: "#7a4fd6" }]);
chart("chart-state", [{ key: "state", label: "KiB", color: "#2b9a66" }]);
chart("chart-checkpoint", [{ key: "checkpoint", label: "ms", color: "#c2410c" }]);
chart("chart-letters", [{ key: "letters", label: "letters", color: "#b91c1c" }]);
chart("chart-model", [{ key: "model", label: "ms", color: "#0e7490" }]);
poll();
setInterval(poll, 1000);
