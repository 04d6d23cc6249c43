/* fastflow dashboard: plain JavaScript, no build step, nothing loaded from elsewhere.
 *
 * Listens to the collector (server-sent events) and polls the rest every POLL_MS:
 *   /dashboard/stream (server-sent events)    managed services: the server-kept trend (history
 *                                             first, then live points), scaler state, decisions
 *   /flow/<name>/json (PUT), /activeflows/…     top flows for the chosen keys
 *   /agents/json, /flowstats/json              agents and their datagram / loss counters
 * Every endpoint is optional: a missing one shows "not available" and the page carries on.
 * Mutating calls send "Authorization: Bearer <token>" when the operator has entered a token.
 */
"use strict";

(function () {
  const POLL_MS = 5000;             // flows and agents tables (services come live over SSE)
  const HISTORY_S = 3600;           // seconds of history shown per service chart
  const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                  "#7f7f7f", "#bcbd22", "#17becf"];

  const state = {
    services: {},         // name -> {history: [{t, replicas, util, bytesIn, bytesOut, per: {host: util}}], ...}
    events: [],
    flowName: null,
    flowDef: null,
    flowKeys: [],
    busy: false,
  };

  const $ = (id) => document.getElementById(id);

  function token() {
    return ($("token").value || "").trim();
  }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const c of children) if (c != null) e.append(c);
    return e;
  }

  /* fetch JSON; never throws: {ok, status, data, error} */
  async function api(path, opts) {
    const o = Object.assign({ method: "GET", headers: {} }, opts || {});
    if (o.body !== undefined && typeof o.body !== "string") {
      o.body = JSON.stringify(o.body);
      o.headers["Content-Type"] = "application/json";
    }
    if (o.auth && token()) o.headers["Authorization"] = "Bearer " + token();
    delete o.auth;
    try {
      const r = await fetch(path, o);
      let data = null;
      const text = await r.text();
      if (text) {
        try { data = JSON.parse(text); } catch (e) { data = text; }
      }
      const error = r.ok ? null : ((data && data.error) || r.statusText || ("HTTP " + r.status));
      return { ok: r.ok, status: r.status, data: data, error: error };
    } catch (e) {
      return { ok: false, status: 0, data: null, error: "collector unreachable" };
    }
  }

  function unavailable(res) {
    return res.status === 404 ? "not available" : ("not available (" + res.error + ")");
  }

  function fmtSI(v, unit) {
    if (v == null || !isFinite(v)) return "–";
    const a = Math.abs(v);
    const p = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
    for (const [m, s] of p) if (a >= m) return (v / m).toFixed(a / m >= 100 ? 0 : 1) + " " + s + unit;
    return (a >= 100 ? v.toFixed(0) : v.toFixed(a >= 10 ? 1 : 2)) + " " + unit;
  }

  // ---------------------------------------------------------------------------------- charts
  /* spec: {tmin, tmax, left: {max, label, fmt}, right: {max, label}, series: [{pts: [[t, v]],
   *        color, width, axis, step, dash}], hlines: [{v, axis, color, label}],
   *        markers: [{t, label, color}]} */
  function drawChart(canvas, spec) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 600, h = canvas.clientHeight || 220;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    if (!ctx) return;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const L = 52, R = 40, T = 10, B = 22;
    const pw = Math.max(10, w - L - R), ph = Math.max(10, h - T - B);
    const span = Math.max(1, spec.tmax - spec.tmin);
    const x = (t) => L + ((t - spec.tmin) / span) * pw;
    const yl = (v) => T + ph - (v / (spec.left.max || 1)) * ph;
    const yr = (v) => T + ph - (v / ((spec.right && spec.right.max) || 1)) * ph;
    ctx.font = "11px sans-serif";
    ctx.strokeStyle = "#ddd";
    ctx.fillStyle = "#555";
    ctx.lineWidth = 1;
    // grid + left axis labels
    for (let i = 0; i <= 4; i++) {
      const v = (spec.left.max * i) / 4, y = yl(v);
      ctx.beginPath(); ctx.moveTo(L, y); ctx.lineTo(L + pw, y); ctx.stroke();
      ctx.textAlign = "right";
      ctx.fillText((spec.left.fmt || ((n) => n.toFixed(0)))(v), L - 4, y + 4);
      if (spec.right) {
        ctx.textAlign = "left";
        ctx.fillText(((spec.right.max * i) / 4).toFixed(spec.right.max >= 8 ? 0 : 1), L + pw + 4, y + 4);
      }
    }
    // time labels
    ctx.textAlign = "center";
    for (let i = 0; i <= 4; i++) {
      const t = spec.tmin + (span * i) / 4;
      const d = new Date(t * 1000);
      ctx.fillText(d.toLocaleTimeString([], { hour12: false }), x(t), h - 6);
    }
    if (spec.left.label) { ctx.textAlign = "left"; ctx.fillText(spec.left.label, L + 4, T + 10); }
    if (spec.right && spec.right.label) { ctx.textAlign = "right"; ctx.fillText(spec.right.label, L + pw - 4, T + 10); }
    // thresholds
    for (const hl of spec.hlines || []) {
      const y = (hl.axis === "right" ? yr : yl)(hl.v);
      ctx.save();
      ctx.strokeStyle = hl.color; ctx.setLineDash([6, 4]);
      ctx.beginPath(); ctx.moveTo(L, y); ctx.lineTo(L + pw, y); ctx.stroke();
      ctx.restore();
      ctx.fillStyle = hl.color; ctx.textAlign = "left";
      ctx.fillText(hl.label, L + 4, y - 3);
    }
    // series
    for (const s of spec.series) {
      const pts = s.pts.filter((p) => p[1] != null && isFinite(p[1]) && p[0] >= spec.tmin);
      if (!pts.length) continue;
      const y = s.axis === "right" ? yr : yl;
      ctx.save();
      ctx.strokeStyle = s.color; ctx.lineWidth = s.width || 1.5;
      if (s.dash) ctx.setLineDash(s.dash);
      ctx.beginPath();
      pts.forEach((p, i) => {
        if (i === 0) ctx.moveTo(x(p[0]), y(p[1]));
        else {
          if (s.step) ctx.lineTo(x(p[0]), y(pts[i - 1][1]));
          ctx.lineTo(x(p[0]), y(p[1]));
        }
      });
      ctx.stroke();
      ctx.restore();
    }
    // decisions on the time axis
    for (const m of spec.markers || []) {
      if (m.t < spec.tmin || m.t > spec.tmax) continue;
      ctx.save();
      ctx.strokeStyle = m.color; ctx.fillStyle = m.color; ctx.lineWidth = 1.5;
      ctx.beginPath(); ctx.moveTo(x(m.t), T); ctx.lineTo(x(m.t), T + ph); ctx.stroke();
      ctx.textAlign = "left";
      ctx.fillText(m.label, x(m.t) + 3, T + 22);
      ctx.restore();
    }
    ctx.strokeStyle = "#999";
    ctx.strokeRect(L, T, pw, ph);
  }

  // ---------------------------------------------------------------------------------- services
  function serviceCard(name) {
    let card = document.querySelector('.service[data-service="' + CSS.escape(name) + '"]');
    if (card) return card;
    const toggle = el("button", { class: "toggle", type: "button", onclick: () => toggleService(name) },
                      "…");
    card = el("article", { class: "service", "data-service": name },
      el("header", {},
         el("h3", { text: name }),
         el("span", { class: "replicas" }),
         el("span", { class: "enabled badge" }),
         toggle),
      el("p", { class: "reason muted" }),
      el("div", { class: "legend" }),
      el("canvas", { class: "chart util", width: "800", height: "220" }),
      el("canvas", { class: "chart bytes", width: "800", height: "120" }),
      el("table", { class: "data containers" },
         el("thead", {}, el("tr", {}, el("th", { text: "container" }), el("th", { text: "agent" }),
                            el("th", { text: "CPU %" }), el("th", { text: "bytes in/s" }),
                            el("th", { text: "bytes out/s" }))),
         el("tbody", {})),
      el("p", { class: "toggle-message muted" }));
    $("services").append(card);
    return card;
  }

  async function toggleService(name) {
    const svc = state.services[name];
    if (!svc || !svc.info) return;
    const card = serviceCard(name);
    const want = !svc.info.enabled;
    const res = await api("/scaler/" + encodeURIComponent(name) + "/json",
                          { method: "PUT", body: { enabled: want }, auth: true });
    const msg = card.querySelector(".toggle-message");
    if (res.ok) {
      svc.info = res.data;
      msg.textContent = "scaler " + (want ? "enabled" : "disabled") + " for " + name;
      renderService(name);
    } else if (res.status === 401) {
      msg.textContent = "the scaler needs the API token: enter it at the top of the page";
    } else {
      msg.textContent = "change refused: " + res.error;
    }
  }

  function renderService(name) {
    const svc = state.services[name];
    const info = svc.info || {};
    const cfg = info.config || {};
    const card = serviceCard(name);
    card.querySelector(".replicas").textContent =
      "replicas " + (info.current == null ? "?" : info.current) +
      (info.desired != null && info.desired !== info.current ? " → " + info.desired : "") +
      "  (" + (cfg.replicas_min != null ? cfg.replicas_min : "?") + "–" +
      (cfg.replicas_max != null ? cfg.replicas_max : "?") + ")";
    const en = card.querySelector(".enabled");
    en.textContent = info.enabled ? "scaling on" : "scaling off";
    en.classList.toggle("on", !!info.enabled);
    const btn = card.querySelector(".toggle");
    btn.textContent = info.enabled ? "Disable scaler" : "Enable scaler";
    btn.dataset.enabled = info.enabled ? "true" : "false";
    card.querySelector(".reason").textContent = (info.mode ? info.mode + ": " : "") +
      (info.reason || info.status || "");

    const now = Date.now() / 1000;
    const hist = svc.history;
    const tmin = Math.max(hist.length ? hist[0].t : now - 60, now - HISTORY_S);
    const hosts = Object.keys(svc.latest || {}).sort();
    const series = hosts.map((hname, i) => ({
      pts: hist.map((p) => [p.t, (p.per || {})[hname]]), color: COLORS[i % COLORS.length], width: 1,
    }));
    series.push({ pts: hist.map((p) => [p.t, p.util]), color: "#000", width: 2.5 });
    const maxRep = Math.max(1, cfg.replicas_max || 1, ...hist.map((p) => p.replicas || 0));
    series.push({ pts: hist.map((p) => [p.t, p.replicas]), color: "#6a3d9a", width: 2, axis: "right",
                  step: true, dash: [2, 2] });
    const hlines = [];
    if (cfg.mode === "target" && cfg.target != null) {
      hlines.push({ v: cfg.target, color: "#2ca02c", label: "target " + cfg.target + "%" });
    } else {
      if (cfg.util_max != null) hlines.push({ v: cfg.util_max, color: "#d62728", label: "util max " + cfg.util_max + "%" });
      if (cfg.util_min != null) hlines.push({ v: cfg.util_min, color: "#1f77b4", label: "util min " + cfg.util_min + "%" });
    }
    const markers = state.events.filter((e) => e.service === name).map((e) => ({
      t: e.time, label: (e.from != null ? e.from : "?") + "→" + e.to + (e.dry_run ? " (dry run)" : ""),
      color: e.to > e.from ? "#d62728" : "#1f77b4",
    }));
    drawChart(card.querySelector("canvas.util"), {
      tmin: tmin, tmax: now, left: { max: 100, label: "CPU utilisation %" },
      right: { max: maxRep, label: "replicas" }, series: series, hlines: hlines, markers: markers,
    });
    const bmax = Math.max(1, ...hist.map((p) => Math.max(p.bytesIn || 0, p.bytesOut || 0))) * 1.1;
    const bh = [];
    if (cfg.bytes_max != null) bh.push({ v: cfg.bytes_max, color: "#d62728", label: "bytes max" });
    if (cfg.bytes_min != null) bh.push({ v: cfg.bytes_min, color: "#1f77b4", label: "bytes min" });
    drawChart(card.querySelector("canvas.bytes"), {
      tmin: tmin, tmax: now, left: { max: Math.max(bmax, ...(bh.map((x) => x.v * 1.1))), label: "bytes/s in (blue) out (orange)",
                                      fmt: (v) => fmtSI(v, "") },
      series: [{ pts: hist.map((p) => [p.t, p.bytesIn]), color: "#1f77b4" },
               { pts: hist.map((p) => [p.t, p.bytesOut]), color: "#ff7f0e" }],
      hlines: bh, markers: markers,
    });
    const legend = card.querySelector(".legend");
    legend.replaceChildren(...hosts.map((hname, i) =>
      el("span", { class: "key", style: "border-color:" + COLORS[i % COLORS.length], text: hname })),
      el("span", { class: "key avg", text: "average" }),
      el("span", { class: "key rep", text: "replicas" }));
    const tbody = card.querySelector("table.containers tbody");
    tbody.replaceChildren(...hosts.map((hname) => {
      const c = svc.latest[hname];
      return el("tr", {}, el("td", { text: hname }), el("td", { text: c.agent || "" }),
                el("td", { class: "num", text: c.cpu == null ? "–" : c.cpu.toFixed(1) }),
                el("td", { class: "num", text: fmtSI(c.in, "B") }),
                el("td", { class: "num", text: fmtSI(c.out, "B") }));
    }));
    if (!hosts.length) {
      tbody.append(el("tr", {}, el("td", { colspan: "5", class: "muted",
                                          text: "no container metrics for pattern " + (cfg.pattern || "") })));
    }
  }

  /* Live updates: server-sent events from /dashboard/stream. The server keeps each service's
   * trend (replicas, mean CPU, bytes, per-container CPU), so a page opened late starts with the
   * history ("history" event) and then gets one "sample" event per point. */
  // HA (docs/ha.md): which instance scales; absent when this instance runs alone
  function renderLease(lease) {
    const badge = $("scaler-lease");
    if (!badge) return;
    if (!lease || typeof lease !== "object") { badge.hidden = true; return; }
    badge.hidden = false;
    badge.classList.toggle("on", !!lease.held);
    const who = lease.holder_node || lease.holder;
    badge.textContent = lease.held ? "this instance scales (lease holder)"
      : who ? "standby: " + String(who) + " scales" : "standby: no lease holder yet";
    badge.title = "lease " + String(lease.mode) + ": holder " + String(lease.holder || "none") +
      (lease.error ? "; error: " + String(lease.error) : "");
  }

  function applyScaler(sc, events) {
    const master = $("scaler-master");
    if (!sc || typeof sc !== "object" || !sc.services) {
      $("scaler-message").textContent = "scaler not available (fastflow run --no-scaler?)";
      master.textContent = "";
      return;
    }
    master.textContent = sc.enabled ? "scaler running" : "scaler off (master switch)";
    master.classList.toggle("on", !!sc.enabled);
    if (sc.dry_run) master.textContent += ", dry run";
    renderLease(sc.lease);
    const services = sc.services || {};
    const names = Object.keys(services);
    $("scaler-message").textContent = names.length ? "" : "no managed services configured";
    state.events = Array.isArray(events) ? events : [];
    for (const name of names) {
      const svc = state.services[name] || (state.services[name] = { history: [], latest: {} });
      svc.info = services[name];
    }
    for (const card of document.querySelectorAll(".service")) {
      if (!(card.dataset.service in services)) card.remove();
    }
  }

  function applyDetail(detail) {
    for (const [name, hosts] of Object.entries(detail || {})) {
      const svc = state.services[name] || (state.services[name] = { history: [], latest: {} });
      svc.latest = hosts || {};
    }
  }

  function renderAll() {
    for (const name of Object.keys(state.services)) {
      if (state.services[name].info) renderService(name);
    }
  }

  function onHistory(data) {
    applyScaler(data.scaler, data.events);
    for (const [name, pts] of Object.entries(data.history || {})) {
      const svc = state.services[name] || (state.services[name] = { history: [], latest: {} });
      svc.history = Array.isArray(pts) ? pts.slice() : [];
    }
    applyDetail(data.detail);
    state.streamPoints = 0;
    renderAll();
  }

  function onSample(data) {
    applyScaler(data.scaler, data.events);
    for (const [name, p] of Object.entries(data.points || {})) {
      const svc = state.services[name] || (state.services[name] = { history: [], latest: {} });
      svc.history.push(p);
      const cutoff = p.t - HISTORY_S;
      while (svc.history.length && svc.history[0].t < cutoff) svc.history.shift();
    }
    applyDetail(data.detail);
    state.streamPoints = (state.streamPoints || 0) + 1;
    $("status").textContent = "live " + new Date().toLocaleTimeString([], { hour12: false });
    renderAll();
  }

  function connectStream() {
    if (!window.EventSource) {
      $("status").textContent = "this browser has no EventSource: live updates unavailable";
      return;
    }
    const es = new EventSource("/dashboard/stream");
    state.stream = es;
    const parse = (fn) => (ev) => {
      try { fn(JSON.parse(ev.data)); } catch (e) {
        $("status").textContent = "dashboard error: " + (e && e.message ? e.message : e);
      }
    };
    es.addEventListener("history", parse(onHistory));
    es.addEventListener("sample", parse(onSample));
    es.onerror = () => { $("status").textContent = "live updates interrupted, reconnecting…"; };
  }

  // ---------------------------------------------------------------------------------- flows
  function flowDefinition() {
    const keys = $("flow-keys").value.split(",").map((s) => s.trim()).filter(Boolean).join(",");
    const def = { keys: keys, value: $("flow-value").value, t: 2, n: 100 };
    const f = $("flow-filter").value.trim();
    if (f) def.filter = f;
    return def;
  }

  function hashName(def) {
    const s = JSON.stringify(def);
    let h = 5381;
    for (let i = 0; i < s.length; i++) h = ((h * 33) ^ s.charCodeAt(i)) >>> 0;
    return "dashboard_" + h.toString(16);
  }

  async function defineFlow() {
    const def = flowDefinition();
    const name = hashName(def);
    const res = await api("/flow/" + name + "/json", { method: "PUT", body: def, auth: true });
    if (!res.ok) {
      state.flowName = null;
      $("flow-message").textContent = res.status === 401
        ? "defining flows needs the API token: enter it at the top of the page"
        : (res.status === 404 ? "top flows " + unavailable(res) : "flow definition refused: " + res.error);
      $("flows-table").querySelector("tbody").replaceChildren();
      return false;
    }
    state.flowName = name;
    state.flowDef = def;
    state.flowKeys = def.keys.split(",");
    $("flow-message").textContent = "";
    const head = el("tr", {}, ...state.flowKeys.map((k) => el("th", { text: k })),
                    el("th", { text: def.value + "/s" }), el("th", { text: "agent" }), el("th", {}));
    $("flows-table").querySelector("thead").replaceChildren(head);
    return true;
  }

  async function pollFlows() {
    if (!state.flowName && !(await defineFlow())) return;
    const max = Math.max(1, Math.min(100, parseInt($("flow-max").value, 10) || 20));
    let res = await api("/activeflows/ALL/" + state.flowName + "/json?maxFlows=" + max);
    if (res.status === 404 && (await defineFlow())) {   // definition expired or server restarted
      res = await api("/activeflows/ALL/" + state.flowName + "/json?maxFlows=" + max);
    }
    const tbody = $("flows-table").querySelector("tbody");
    if (!res.ok || !Array.isArray(res.data)) {
      $("flow-message").textContent = "top flows " + unavailable(res);
      tbody.replaceChildren();
      return;
    }
    const flows = res.data;
    const top = flows.length ? flows[0].value : 1;
    const unit = state.flowDef && state.flowDef.value === "bytes" ? "B/s" : "fps";
    tbody.replaceChildren(...flows.map((f) => {
      const parts = String(f.key).split(",");
      return el("tr", { class: "flow" },
        ...state.flowKeys.map((_, i) => el("td", { text: parts[i] != null ? parts[i] : "" })),
        el("td", { class: "num", text: fmtSI(f.value, unit) }),
        el("td", { text: (f.agent || "") + (f.dataSource ? " / " + f.dataSource : "") }),
        el("td", { class: "bar" }, el("span", { style: "width:" + Math.max(1, (100 * f.value) / (top || 1)).toFixed(1) + "%" })));
    }));
    if (!flows.length) {
      tbody.append(el("tr", {}, el("td", { colspan: String(state.flowKeys.length + 3), class: "muted",
                                          text: "no flows yet" })));
    }
  }

  // ---------------------------------------------------------------------------------- agents
  function cellText(v) {
    if (v == null) return "";
    if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(2);
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }

  async function pollAgents() {
    const res = await api("/agents/json");
    const table = $("agents-table");
    if (!res.ok || !res.data || typeof res.data !== "object") {
      $("agents-message").textContent = "agents " + unavailable(res);
      table.querySelector("thead").replaceChildren();
      table.querySelector("tbody").replaceChildren();
    } else {
      let rows = res.data;
      if (rows.agents && typeof rows.agents === "object") rows = rows.agents;
      const entries = Array.isArray(rows)
        ? rows.map((r) => [r.agent || r.address || "", r])
        : Object.entries(rows);
      const cols = [];
      for (const [, r] of entries) {
        if (r && typeof r === "object") {
          for (const k of Object.keys(r)) if (!cols.includes(k) && cols.length < 10 && k !== "agent") cols.push(k);
        }
      }
      $("agents-message").textContent = entries.length ? "" : "no agents yet";
      table.querySelector("thead").replaceChildren(
        el("tr", {}, el("th", { text: "agent" }), ...cols.map((c) => el("th", { text: c }))));
      table.querySelector("tbody").replaceChildren(...entries.map(([a, r]) =>
        el("tr", { class: "agent" }, el("td", { text: a }),
           ...cols.map((c) => el("td", { class: typeof (r || {})[c] === "number" ? "num" : "",
                                         text: cellText((r || {})[c]) })))));
    }
    const fs = await api("/flowstats/json");
    $("flowstats").textContent = fs.ok && fs.data
      ? "flow samples " + fs.data.samples + ", lost (sequence gaps) " + fs.data.lostSamples +
        ", flow definitions " + fs.data.definitions
      : "";
  }

  // ---------------------------------------------------------------------------------- main loop
  async function tick() {
    if (state.busy) return;
    state.busy = true;
    try {
      const v = await api("/version");
      if (v.status === 0) $("status").textContent = "collector unreachable";
      if (v.ok && v.data != null && !$("version").textContent) {
        $("version").textContent = typeof v.data === "string" ? v.data : (v.data.version || "");
      }
      await Promise.all([pollFlows(), pollAgents()]);
    } catch (e) {
      $("status").textContent = "dashboard error: " + (e && e.message ? e.message : e);
    } finally {
      state.busy = false;
    }
  }

  function init() {
    try {
      $("token").value = sessionStorage.getItem("fastflow.token") || "";
    } catch (e) { /* storage disabled */ }
    $("token").addEventListener("change", () => {
      try { sessionStorage.setItem("fastflow.token", token()); } catch (e) { /* ignore */ }
      if (!state.flowName) defineFlow();
    });
    $("flow-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      state.flowName = null;
      if (await defineFlow()) await pollFlows();
    });
    window.addEventListener("resize", () => {
      for (const name of Object.keys(state.services)) if (state.services[name].info) renderService(name);
    });
    connectStream();
    tick();
    setInterval(tick, POLL_MS);
  }

  window.fastflowDashboard = { state: state, tick: tick, renderAll: renderAll };
  document.addEventListener("DOMContentLoaded", init);
})();
