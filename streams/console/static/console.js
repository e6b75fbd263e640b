// chatstream console: one page over the console's JSON API (all aggregation happens server-side).
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { tab: "turns", token: null, charts: {}, selected: null, timer: null, letters: [] };
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const SERVICE_COLORS = {};

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
function fmt(v, digits = 0) { return v === null || v === undefined ? "–" : Number(v).toFixed(digits); }
function ago(ms) {
  if (!ms) return "–";
  const s = Math.max(0, (Date.now() - ms) / 1000);
  return s < 60 ? `${s.toFixed(0)} s ago` : s < 3600 ? `${(s / 60).toFixed(0)} min ago` : new Date(ms).toLocaleTimeString();
}

// --- token and API ---------------------------------------------------------------------------
// The fragment may carry token=..., tab=turns|metrics|questions|deadletters and trace=<message, session or trace id>
// (fragments never reach a server or its logs); the token moves to sessionStorage and leaves the address bar.
function takeFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  if (params.get("token")) sessionStorage.setItem("chatstream-console-token", params.get("token"));
  if (location.hash) history.replaceState(null, "", location.pathname);
  state.token = sessionStorage.getItem("chatstream-console-token");
  return { tab: params.get("tab"), trace: params.get("trace") };
}
async function api(path, options = {}) {
  const resp = await fetch(path, {
    ...options,
    headers: { ...(options.headers || {}), Authorization: `Bearer ${state.token}`, "Content-Type": "application/json" },
  });
  if (resp.status === 401) { askToken("the operator token was refused"); throw new Error("unauthorized"); }
  const body = await resp.json();
  if (!resp.ok) throw new Error(body.error || `HTTP ${resp.status}`);
  return body;
}
function askToken(why) {
  $("#token-box").classList.remove("hidden");
  $("#token-error").textContent = why || "";
}
$("#token-save").onclick = () => {
  sessionStorage.setItem("chatstream-console-token", $("#token-input").value.trim());
  state.token = $("#token-input").value.trim();
  $("#token-box").classList.add("hidden");
  refresh();
};

// --- tabs and refresh ------------------------------------------------------------------------
document.querySelectorAll("#tabs button").forEach((b) => b.onclick = () => {
  document.querySelectorAll("#tabs button").forEach((x) => x.classList.toggle("active", x === b));
  state.tab = b.dataset.tab;
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("hidden", t.id !== `tab-${state.tab}`));
  refresh();
});
$("#range").onchange = () => refresh();
$("#auto").onchange = () => schedule();
function schedule() {
  clearInterval(state.timer);
  if ($("#auto").checked) state.timer = setInterval(() => refresh(true), 5000);
}
async function refresh(auto = false) {
  if (!state.token) { askToken(); return; }
  try {
    await refreshStatus();
    if (state.tab === "turns") await loadTurns();
    else if (state.tab === "metrics") await loadMetrics();
    else if (state.tab === "questions") await loadQuestions();
    else if (state.tab === "deadletters" && !auto) await loadLetters();
  } catch (e) {
    $("#status").textContent = `error: ${e.message}`;
  }
}
async function refreshStatus() {
  const s = await api("/api/status");
  state.jaegerUi = s.jaeger_ui;
  $("#status").textContent = `${s.store_turns} turns in store · tail ${s.tail_ready ? "following" : "starting"} · ` +
    `Jaeger ${s.jaeger}${s.jaeger_ui ? "" : " (query API only, no UI)"}${s.topic_prefix ? " · prefix " + s.topic_prefix : ""}`;
  document.body.dataset.ready = "1";
}

// --- turns and waterfall ---------------------------------------------------------------------
async function loadTurns() {
  const q = $("#find-input").value.trim();
  const data = await api(`/api/turns?limit=100${q ? "&q=" + encodeURIComponent(q) : ""}`);
  $("#turns-count").textContent = q ? `matching ${q}` : "(live)";
  $("#turns tbody").innerHTML = data.turns.map((t) => `
    <tr class="clickable ${t.message_id === state.selected ? "selected" : ""}" data-message-id="${esc(t.message_id)}">
      <td>${ago(t.seen_at)}</td><td>${esc(t.channel)}</td>
      <td class="status-${esc(t.status || "pending")}">${esc(t.status || "pending")}</td>
      <td>${t.latency_ms === null ? "–" : t.latency_ms + " ms"}</td>
      <td title="${esc(t.message_id)} · ${esc(t.session_id)}">${esc((t.question || "").slice(0, 80))}</td></tr>`).join("");
  document.querySelectorAll("#turns tbody tr").forEach((tr) => tr.onclick = () => showTrace(tr.dataset.messageId));
}
$("#find").onsubmit = async (ev) => {
  ev.preventDefault();
  const q = $("#find-input").value.trim();
  $("#find-error").textContent = "";
  await loadTurns();
  if (q) showTrace(q);
};
async function showTrace(ident) {
  state.selected = ident;
  $("#trace-title").textContent = `loading ${ident}…`;
  $("#span-detail").classList.add("hidden");
  let data;
  try {
    data = await api(`/api/trace?id=${encodeURIComponent(ident)}`);
  } catch (e) {
    $("#trace-title").textContent = "";
    $("#find-error").textContent = e.message;
    return;
  }
  const turn = data.turn || {};
  $("#trace-title").textContent = data.trace_id
    ? `${data.trace_id} · ${data.spans.length} spans${turn.status ? " · " + turn.status : ""}` : "";
  const link = $("#jaeger-link");
  link.classList.toggle("hidden", !data.jaeger_url);
  if (data.jaeger_url) link.href = data.jaeger_url;
  if (!data.spans.length) {
    $("#waterfall").innerHTML = `<p class="hint">${esc(data.error || "no spans")}</p>`;
    return;
  }
  renderWaterfall(data.spans);
}
function serviceColor(service) {
  if (!SERVICE_COLORS[service]) SERVICE_COLORS[service] = COLORS[Object.keys(SERVICE_COLORS).length % COLORS.length];
  return SERVICE_COLORS[service];
}
function renderWaterfall(spans) {
  const total = Math.max(...spans.map((s) => s.offset_us + s.duration_us), 1);
  $("#waterfall").innerHTML = `<div class="span-row"><b>span</b><b>service</b><b>0 … ${(total / 1000).toFixed(1)} ms</b><b>duration</b></div>` +
    spans.map((s, i) => {
      const left = (s.offset_us / total) * 100, width = Math.max(0.2, (s.duration_us / total) * 100);
      const events = s.events.map((e) => `<span class="evt" title="${esc(e.name)}" style="left:${(e.offset_us / total) * 100}%"></span>`).join("");
      return `<div class="span-row${s.error ? " err" : ""}" data-index="${i}" data-name="${esc(s.name)}" title="${esc(s.error || "")}">
        <span class="name" style="padding-left:${s.depth * 12}px">${esc(s.name)}</span>
        <span class="svc">${esc(s.service)}</span>
        <span class="lane"><span class="bar" style="left:${left}%;width:${width}%;background:${serviceColor(s.service)}"></span>${events}</span>
        <span class="dur">${(s.duration_us / 1000).toFixed(1)} ms</span></div>`;
    }).join("");
  document.querySelectorAll("#waterfall .span-row[data-index]").forEach((row) => row.onclick = () => {
    const s = spans[Number(row.dataset.index)];
    const detail = { name: s.name, service: s.service, offset_ms: s.offset_us / 1000, duration_ms: s.duration_us / 1000,
      error: s.error, attributes: s.attributes, events: s.events };
    $("#span-detail").textContent = JSON.stringify(detail, null, 2);
    $("#span-detail").classList.remove("hidden");
  });
}

// --- metrics -----------------------------------------------------------------------------------
function chart(id, title, x, series, unit = "") {
  const names = Object.keys(series).sort();
  let box = document.getElementById(`chart-${id}`);
  if (!box) {
    box = document.createElement("div");
    box.className = "chart";
    box.id = `chart-${id}`;
    box.innerHTML = `<h3>${esc(title)}</h3><div class="plot"></div>`;
    $("#charts").appendChild(box);
  }
  const plot = box.querySelector(".plot");
  const key = names.join("|");
  const data = [x, ...names.map((n) => series[n])];
  const old = state.charts[id];
  if (!names.length || !x.length) {
    if (old) { old.plot.destroy(); delete state.charts[id]; }
    plot.innerHTML = `<div class="empty">no data in this range</div>`;
    return;
  }
  if (old && old.key === key) { old.plot.setData(data); return; }
  if (old) old.plot.destroy();
  plot.innerHTML = "";
  const opts = {
    width: Math.max(420, box.clientWidth - 10), height: 180,
    series: [{}, ...names.map((n, i) => ({ label: n, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true, points: { show: true, size: 3 },
      value: (u, v) => v === null || v === undefined ? "–" : `${v.toFixed(v < 10 ? 2 : 0)}${unit}` }))],
    axes: [{}, { size: 64 }],
    legend: { live: true },
  };
  state.charts[id] = { key, plot: new uPlot(opts, data, plot) };
}
function kpi(label, value) { return `<div class="kpi">${esc(label)}<b>${esc(value)}</b></div>`; }
async function loadMetrics() {
  const d = await api(`/api/overview?range=${$("#range").value}`);
  const t = d.totals, turns = d.turns, w = d.worker;
  $("#kpis").innerHTML = kpi("turns", t.turns) + kpi("escalation rate", t.escalation_rate === null ? "–" : fmt(t.escalation_rate, 1) + " %") +
    kpi("FALLBACK rate", t.fallback_rate === null ? "–" : fmt(t.fallback_rate, 1) + " %") + kpi("tokens", t.tokens) +
    kpi("cost", "$" + fmt(t.cost, 4)) + kpi("groundedness", fmt(t.groundedness, 2)) +
    kpi("thumbs up / down", `${t.thumbs_up} / ${t.thumbs_down}`) + kpi("CSAT", t.csat === null ? "–" : `${fmt(t.csat, 2)} (${t.csat_n})`) +
    kpi("circuits", Object.entries(w.circuit_now || {}).map(([p, v]) => `${p}: ${["closed", "half-open", "open"][v] || v}`).join(", ") || "–");
  $("#worker-error").textContent = w.error ? `worker: ${w.error}` : "";
  const lat = turns.latency;
  const pick = (obj, names) => Object.fromEntries(names.filter((n) => obj[n]).map((n) => [n, obj[n]]));
  chart("turns-status", "replies per bucket by status", turns.x, turns.status);
  chart("stage-rate", "records/s per stage (worker)", w.x, w.stage_rate || {}, "/s");
  chart("e2e", "end-to-end latency ms (p50/p95/p99)", turns.x, lat.e2e, " ms");
  chart("overhead", "pipeline overhead ms (latency minus LLM time)", turns.x, lat.overhead, " ms");
  chart("stage-p95", "per-stage latency p95 ms", turns.x,
    Object.fromEntries(["enrich", "retrieve", "generate", "llm", "validate"].map((s) => [s, lat[s].p95])), " ms");
  chart("stage-p50", "per-stage latency p50 ms", turns.x,
    Object.fromEntries(["enrich", "retrieve", "generate", "llm", "validate"].map((s) => [s, lat[s].p50])), " ms");
  chart("stage-p99", "per-stage latency p99 ms", turns.x,
    Object.fromEntries(["enrich", "retrieve", "generate", "llm", "validate"].map((s) => [s, lat[s].p99])), " ms");
  chart("tokens", "tokens per minute", turns.x, turns.tokens_per_min);
  chart("cost", "cost per minute (USD)", turns.x, { cost: turns.cost_per_min });
  chart("escalation", "escalation rate %", turns.x, { "escalated %": turns.escalation_rate }, " %");
  chart("feedback", "feedback per bucket by kind", d.feedback.x, d.feedback.series);
  chart("llm", "LLM calls/s by provider and outcome (worker)", w.x, w.llm_rate || {}, "/s");
  chart("circuit", "circuit state (0 closed, 1 half-open, 2 open)", w.x, w.circuit || {});
  chart("retrieval", "retrieval top score (mean per scrape)", w.x, w.retrieval_top_score || {});
  chart("deadletters", "dead letters per bucket by stage", d.deadletters.x, d.deadletters.series);
  chart("lag", "consumer lag by group and topic", w.x, w.lag || {});
  chart("inflight", "turns in each stage's window (worker)", w.x, pick(w.inflight || {}, Object.keys(w.inflight || {})));
}

// --- the three questions -----------------------------------------------------------------------
async function loadQuestions() {
  const d = await api(`/api/questions?range=${$("#range").value}`);
  const rows = (sel, items, cells) => $(sel + " tbody").innerHTML = items.length
    ? items.map((it) => `<tr>${cells(it).map((c) => `<td>${c}</td>`).join("")}</tr>`).join("")
    : `<tr><td colspan="8" class="hint">nothing in this range</td></tr>`;
  rows("#q-failing", d.failing_questions, (q) => [esc(q.example || q.cluster), q.turns, q.problems, fmt(q.problem_rate, 0) + " %",
    q.fallback, q.escalated, q.blocked]);
  rows("#q-deps", d.dependencies, (x) => [esc(x.dependency), x.turns, fmt(x.mean_ms, 1), fmt(x.max_ms, 1)]);
  if (d.dependencies_error) $("#q-deps tbody").innerHTML = `<tr><td colspan="4" class="error">${esc(d.dependencies_error)}</td></tr>`;
  rows("#q-stages", Object.entries(d.stage_time), ([s, v]) => [s === "llm" ? "llm (inside generate)" : s, v.turns, fmt(v.mean, 1), fmt(v.p95, 0)]);
  rows("#q-docs", d.weak_documents, (x) => [esc(x.title || x.doc_id), x.citations, fmt(x.groundedness, 2),
    x.thumbs_down, x.thumbs_up, fmt(x.csat, 1)]);
}

// --- dead letters ------------------------------------------------------------------------------
async function loadLetters() {
  const d = await api("/api/deadletters?limit=200");
  state.letters = d.letters;
  $("#dl-result").textContent = d.error || `${d.letters.length} dead letters (newest first)`;
  $("#dl-table tbody").innerHTML = d.letters.map((l, i) => `
    <tr class="clickable" data-ref="${esc(l.ref)}" data-index="${i}">
      <td><input type="checkbox" class="dl-pick" value="${esc(l.ref)}"></td><td>${esc(l.ref)}</td>
      <td>${new Date(l.failed_at).toLocaleString()}</td><td>${esc(l.stage)}</td>
      <td>${esc(l.topic)}[${l.partition}]@${l.offset}</td><td>${esc(l.message_id || "–")}</td><td>${l.replay_count}</td>
      <td class="error">${esc(l.error_class)}: ${esc(l.error_message.slice(0, 160))}</td></tr>`).join("");
  document.querySelectorAll("#dl-table tbody tr").forEach((tr) => tr.onclick = (ev) => {
    if (ev.target.classList.contains("dl-pick")) { updateReplayButton(); return; }
    const l = state.letters[Number(tr.dataset.index)];
    $("#dl-detail").textContent = JSON.stringify({ error: `${l.error_class}: ${l.error_message}`, headers: l.headers,
      original: l.original }, null, 2);
    $("#dl-detail").classList.remove("hidden");
  });
  updateReplayButton();
}
function updateReplayButton() {
  $("#replay-btn").disabled = !document.querySelectorAll(".dl-pick:checked").length;
}
$("#dl-refresh").onclick = () => loadLetters();
$("#replay-btn").onclick = async () => {
  const refs = [...document.querySelectorAll(".dl-pick:checked")].map((c) => c.value);
  if (!refs.length) return;
  try {
    const r = await api("/api/deadletters/replay", { method: "POST", body: JSON.stringify({ refs }) });
    $("#dl-result").textContent = `replayed ${r.replayed.join(", ")} (message ids ${r.message_ids.join(", ")})`;
  } catch (e) {
    $("#dl-result").textContent = `replay failed: ${e.message}`;
  }
};

const wanted = takeFragment();
const tabButton = wanted.tab && document.querySelector(`#tabs button[data-tab="${CSS.escape(wanted.tab)}"]`);
if (tabButton) tabButton.click(); else refresh();
if (wanted.trace && state.token) showTrace(wanted.trace);
schedule();
