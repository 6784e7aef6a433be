/* Live panels: one WebSocket per page, JSON events, small DOM updates, no framework.
   The one place that formats figures and decides badges: pages render empty fields and the latest
   sample and operation of each instance as JSON (#live-state), applied here like any later event. */
(function () {
  "use strict";
  const DASH = "–";
  const labels = JSON.parse((document.getElementById("status-labels") || {}).textContent || "{}");
  const words = JSON.parse((document.getElementById("live-words") || {}).textContent || "{}");
  const word = (w) => words[w] || w;
  // A stored sentence (console/sentences.py) in the page's language: {id, params}, or plain text.
  function say(s) {
    if (!s || typeof s !== "object") return s || "";
    if (Array.isArray(s)) return s.map(say).join("; ");
    const params = s.params || {};
    return word(s.id).replace(/%\((\w+)\)(\.\d+)?([sdfr])/g, (_, name, precision, kind) => {
      const v = typeof params[name] === "object" ? say(params[name]) : params[name];
      return kind === "f" && precision ? Number(v).toFixed(Number(precision.slice(1))) : String(v);
    });
  }
  const gib = (v) => (v == null ? DASH : (v / 2 ** 30).toFixed(1));
  const ms = (v) => (v == null ? DASH : v >= 10 ? v.toFixed(0) + " ms" : v.toFixed(1) + " ms");
  const count = (v) => (v == null ? DASH : String(v));
  const percent = (v) => (v == null ? DASH : (v * 100).toFixed(v < 0.1 ? 1 : 0) + " %");
  const pad = (n) => String(n).padStart(2, "0");
  // `fn` once in the next animation frame however often this is called before it: the DOM is
  // written at most once a frame, and not at all while the tab is hidden.
  function perFrame(fn) {
    let asked = false;
    return () => {
      if (asked) return;
      asked = true;
      requestAnimationFrame(() => { asked = false; fn(); });
    };
  }
  function uptime(s) {
    if (s == null) return DASH;
    s = Math.floor(s);
    if (s < 3600) return Math.floor(s / 60) + "m " + pad(s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h " + pad(Math.floor((s % 3600) / 60)) + "m";
    return Math.floor(s / 86400) + "d " + pad(Math.floor((s % 86400) / 3600)) + "h";
  }
  const root = document.querySelector("[data-live]");
  if (!root) return;
  const kind = root.dataset.live;
  const liveState = document.querySelector("[data-live-state]");
  const samples = {};  // instance name -> its latest sample
  const running = {};  // instance name -> its queued or running operation
  const initial = JSON.parse((document.getElementById("live-state") || {}).textContent || "{}");
  // A sample counts this long; after it the badge says "no data" and the host, offline. Ages are
  // kept on this browser's clock (received = now - age at render), so clocks need not agree.
  const staleMs = (initial.stale_seconds || 90) * 1000;
  const hostSeen = {};  // host name -> when its worker last reported, on this browser's clock
  Object.entries(initial.hosts || {}).forEach(([h, age]) => { if (age != null) hostSeen[h] = Date.now() - age * 1000; });
  const ageOf = (received) => Math.round((Date.now() - received) / 1000);

  function scopeOf(name) {
    if (kind === "dashboard") return document.querySelector('[data-instance="' + CSS.escape(name) + '"]');
    return document.querySelector('[data-instance="' + CSS.escape(name) + '"]') ? document : null;
  }
  function setField(scope, name, text) {
    scope.querySelectorAll('[data-field="' + name + '"]').forEach((el) => {
      if (el.textContent !== text) el.textContent = text;
    });
  }
  // The badge: what the latest sample saw, unless the console is operating on the instance.
  function renderBadge(name) {
    const scope = scopeOf(name);
    if (!scope) return;
    const op = running[name], d = samples[name];
    const stale = d && Date.now() - d.received > staleMs;
    const status = op ? "restarting" : d && !stale ? d.status : "unknown";
    scope.querySelectorAll('[data-field="status"]').forEach((el) => {
      el.className = "badge " + status;
      el.textContent = labels[status] || status;
    });
    const silent = { id: "no report from host %(host)s for %(seconds)s s", params: { host: d && d.host, seconds: d && ageOf(d.received) } };
    setField(scope, "detail", op ? (op.kind_display || op.kind) + " · " + (op.state_display || op.state) : d ? say(stale ? silent : d.detail_said || d.detail) : "");
    renderSummary();
  }
  // The dashboard's summary: how many instances are in each state, worst first, and on hold; a
  // state clicked shows only its rows (clicked again, all). Read from the badges as written.
  const summary = document.getElementById("status-summary");
  const ORDER = ["down", "degraded", "restarting", "draining", "loading", "unknown", "ready", "hold"];
  let only = "";
  const statusOf = (row) => (row.querySelector('[data-field="status"]') || { className: "" }).className.replace("badge ", "");
  const held = (row) => Boolean(row.querySelector('[data-field="hold"]:not([hidden])'));
  const renderSummary = perFrame(() => {
    if (!summary) return;
    const rows = [...document.querySelectorAll("#instances tbody tr[data-instance]")];
    const counts = {};
    rows.forEach((row) => {
      const status = statusOf(row);
      counts[status] = (counts[status] || 0) + 1;
      if (held(row)) counts.hold = (counts.hold || 0) + 1;
    });
    if (only && !counts[only]) only = "";
    summary.replaceChildren(...ORDER.filter((s) => counts[s]).map((s) => {
      const chip = document.createElement("button");
      chip.type = "button";
      chip.className = "chip " + s;
      chip.dataset.status = s;
      chip.setAttribute("aria-pressed", String(only === s));
      chip.textContent = counts[s] + " " + (s === "hold" ? word("on hold") : labels[s] || s);
      chip.onclick = () => { only = only === s ? "" : s; renderSummary(); };
      return chip;
    }));
    rows.forEach((row) => { row.hidden = Boolean(only) && (only === "hold" ? !held(row) : statusOf(row) !== only); });
  });
  // Host cards: online while their worker's reports keep coming.
  function renderHosts() {
    document.querySelectorAll("[data-host-card]").forEach((card) => {
      const seen = hostSeen[card.dataset.hostCard];
      if (seen == null) return;
      const online = Date.now() - seen <= staleMs;
      const badge = card.querySelector('[data-field="host-state"]');
      badge.className = "badge " + (online ? "ready" : "down");
      badge.textContent = word(online ? "online" : "offline");
      card.querySelector('[data-field="host-seen"]').textContent = say({ id: "reported %(seconds)s s ago", params: { seconds: ageOf(seen) } });
    });
  }

  // -- samples: badges and figures. A sample is kept when it arrives (and charted on its
  // instance's page); the DOM is written once per animation frame with each instance's latest, so
  // a dashboard of hundreds of rows does its work at most once a frame however often batches
  // come, and a hidden tab does none until it is shown.
  const toRender = new Set();
  function takeSample(name, d, live) {
    d.received = Date.now() - (d.age || 0) * 1000;
    samples[name] = d;
    if (d.host && (hostSeen[d.host] == null || hostSeen[d.host] < d.received)) hostSeen[d.host] = d.received;
    if (live && kind === "instance") charts.push(d);
    toRender.add(name);
    renderSoon();
  }
  const renderSoon = perFrame(renderFrame);
  function renderFrame() {
    const names = [...toRender];
    toRender.clear();
    names.forEach(renderSample);
    renderHosts();
    if (names.length) document.dispatchEvent(new CustomEvent("console:rendered", { detail: names.map((n) => samples[n]) }));
  }
  function renderSample(name) {
    const scope = scopeOf(name), d = samples[name];
    if (!scope || !d) return;
    renderBadge(name);
    setField(scope, "gpu", gib(d.gpu_used) + " / " + gib(d.gpu_total) + " GiB");
    const bar = scope.querySelector('[data-field="gpu_bar"]');
    if (bar) bar.style.width = (d.gpu_used && d.gpu_total ? Math.min(100, Math.round((d.gpu_used * 100) / d.gpu_total)) : 0) + "%";
    setField(scope, "allocator", gib(d.reserved) + " / " + gib(d.allocated) + " GiB");
    setField(scope, "latency", ms(d.p50_ms) + " / " + ms(d.p95_ms));
    setField(scope, "p95_ms", ms(d.p95_ms));
    setField(scope, "rps", count(d.rps));
    setField(scope, "in_flight", count(d.in_flight));
    setField(scope, "connections", count(d.established) + " / " + count(d.close_wait));
    setField(scope, "uptime", uptime(d.uptime));
    setField(scope, "probe_ms", ms(d.probe_ms));
    setField(scope, "nvml", say(d.nvml_said || d.nvml));
    renderStandby(scope, d.standby);
    const e = d.engine || {};  // an engine's own figures (vLLM), where the page shows them
    setField(scope, "kv_cache", percent(e.kv_cache_usage));
    setField(scope, "queue", count(e.running) + " / " + count(e.waiting));
    setField(scope, "tokens_per_second", d.tokens_per_second == null ? DASH : d.tokens_per_second.toFixed(1));
    setField(scope, "ttft", ms(d.ttft_ms) + " / " + ms(e.ttft_p95_ms));
    setField(scope, "preemptions", count(e.preemptions));
    setField(scope, "prefix_hits", percent(e.prefix_cache_hit_rate));
    scope.querySelectorAll("[data-sampled-at]").forEach((el) => (el.dataset.sampledAt = d.at));
  }

  // The supervisor's standby model process (HANDOVER_STANDBY): its state; why, where it failed.
  function renderStandby(scope, s) {
    const el = scope.querySelector('[data-field="standby"]');
    if (!el) return;
    if (!s) { el.textContent = DASH; el.title = ""; return; }
    el.textContent = s.state === "ready" && s.load_seconds != null
      ? say({ id: "ready, loaded in %(seconds).1f s", params: { seconds: s.load_seconds } })
      : word(s.state);
    el.title = s.why || (s.pid != null ? "pid " + s.pid : "");
  }

  // -- holds: an instance someone is working on; the marker goes when the hold ends or passes.
  // Hold cards (an instance's, a host's) are fetched again (hx-trigger="hold-updated from:body").
  const holds = {};  // instance name -> its hold
  function applyHold(name, d, live) {
    if (d && d.until) holds[name] = d;
    else delete holds[name];
    renderHold(name);
    if (live) document.body.dispatchEvent(new CustomEvent("hold-updated"));
  }
  function renderHold(name) {
    const scope = scopeOf(name);
    if (!scope) return;
    const h = holds[name];
    const left = h ? h.until_ts * 1000 - Date.now() : 0;
    renderSummary();
    scope.querySelectorAll('[data-field="hold"]').forEach((el) => {
      el.hidden = left <= 0;
      el.title = left > 0 ? say({ id: "until %(until)s, by %(by)s", params: { until: new Date(h.until_ts * 1000).toLocaleString(), by: h.by } }) + ": " + h.reason : "";
    });
    if (left > 0) setTimeout(() => passed(name), Math.min(left + 500, 2 ** 31 - 1));
  }
  function passed(name) {  // a hold's time is up (or it was replaced): its marker, and the page's card
    renderHold(name);
    const h = holds[name];
    if (h && h.until_ts * 1000 <= Date.now()) document.body.dispatchEvent(new CustomEvent("hold-updated"));
  }

  // -- operations: the badge, the dashboard's last-operation cell; on other pages htmx fetches
  // the operation's card and rows again (hx-trigger="operation-updated from:body")
  function applyOperation(name, d, live) {
    if (d.state === "queued" || d.state === "running") running[name] = d;
    else delete running[name];
    renderBadge(name);
    const row = kind === "dashboard" ? scopeOf(name) : null;
    const cell = row && row.querySelector('[data-field="operation"]');
    if (cell) {
      const a = document.createElement("a");
      a.href = "/operations/" + d.id + "/";
      a.textContent = d.kind_display || d.kind;
      const badge = document.createElement("span");
      badge.className = "badge " + d.state;
      badge.textContent = d.state_display || d.state;
      cell.replaceChildren(a, " ", badge);
    }
    if (live && kind !== "dashboard") document.body.dispatchEvent(new CustomEvent("operation-updated", { detail: d }));
  }

  // -- an operator's try: the answer streams into its card
  function applyTrial(d) {
    const card = document.querySelector('[data-trial="' + CSS.escape(d.trial) + '"]');
    if (!card) return;
    const field = (n) => card.querySelector('[data-field="trial-' + n + '"]');
    card.dataset.state = d.state;
    if (d.text) field("answer").textContent += d.text;
    if (d.request_id) field("request").textContent = d.request_id;
    if (d.ttft_ms != null) field("ttft").textContent = ms(d.ttft_ms);
    if (d.per_second != null) field("rate").textContent = String(d.per_second);
    if (d.error) field("error").textContent = d.error;
    field("state").textContent = word(d.state);
  }

  Object.entries(initial.operations || {}).forEach(([name, d]) => applyOperation(name, d, false));
  Object.entries(initial.samples || {}).forEach(([name, d]) => takeSample(name, d, false));
  Object.entries(initial.holds || {}).forEach(([name, d]) => applyHold(name, d, false));
  renderFrame();  // the page's first figures now, not a frame after it shows empty fields
  setInterval(() => { Object.keys(samples).forEach(renderBadge); renderHosts(); }, 5000);

  // -- log panel: bounded, filterable, follow or pause; JSON lines in columns unless "raw"
  const logs = (function () {
    const pre = document.getElementById("log-lines");
    if (!pre) return { add() {} };
    const max = parseInt(pre.dataset.maxLines || "2000", 10);
    const tool = (n) => document.querySelector('[data-log="' + n + '"]');
    const levels = ["debug", "info", "warning", "error", "critical"];
    let entries = JSON.parse((document.getElementById("log-initial") || {}).textContent || "[]");
    let follow = true, pending = [], regex = null, held = 0;
    const status = (t) => { const s = tool("status"); if (s) s.textContent = t; };
    function visible(e) {
      if (levels.indexOf(e.level) < levels.indexOf(tool("level").value)) return false;
      const needle = tool("filter").value;
      if (!needle) return true;
      return regex ? regex.test(e.text) : e.text.includes(needle);
    }
    function cell(className, text) {
      const span = document.createElement("span");
      span.className = className;
      span.textContent = text;
      return span;
    }
    function lineNode(e) {
      const span = document.createElement("span");
      span.className = "line " + e.level;
      const f = e.fields;
      if (!f || tool("raw").checked) {
        span.textContent = e.text + "\n";
        return span;
      }
      span.classList.add("structured");
      span.append(
        cell("t", (f.time || "").replace(/^\d{4}-\d{2}-\d{2}T/, "")), " ",
        cell("lv", e.level.toUpperCase()), " ",
        cell("lg", f.logger), " ",
        cell("m", f.message), " ",
        cell("rid", f.request_id), " ",
        cell("kv", f.extra),
        f.exc ? cell("exc", "\n" + f.exc) : "",
        "\n"
      );
      return span;
    }
    function render() {
      const frag = document.createDocumentFragment();
      entries.filter(visible).forEach((e) => frag.appendChild(lineNode(e)));
      pre.replaceChildren(frag);
      if (follow) pre.scrollTop = pre.scrollHeight;
    }
    const flushSoon = perFrame(flush);
    function flush() {
      if (!follow) { status(held + " new lines (paused)"); return; }
      const batch = pending; pending = []; held = 0;
      const frag = document.createDocumentFragment();
      batch.filter(visible).forEach((e) => frag.appendChild(lineNode(e)));
      pre.appendChild(frag);
      while (pre.childNodes.length > max) pre.removeChild(pre.firstChild);
      pre.scrollTop = pre.scrollHeight;
      status("");
    }
    // A pattern is tried in a worker first: one that takes too long (catastrophic
    // backtracking) is refused instead of freezing the page.
    function checkRegex(pattern) {
      return new Promise((resolve) => {
        let re;
        try { re = new RegExp(pattern, "i"); } catch (err) { resolve({ error: err.message }); return; }
        const src = "onmessage=(m)=>{const re=new RegExp(m.data.p,'i');let n=0;for(const t of m.data.lines){if(re.test(t))n++}postMessage(n)}";
        const worker = new Worker(URL.createObjectURL(new Blob([src], { type: "text/javascript" })));
        const timer = setTimeout(() => { worker.terminate(); resolve({ error: "pattern too slow" }); }, 300);
        worker.onmessage = () => { clearTimeout(timer); worker.terminate(); resolve({ re }); };
        const probe = entries.map((e) => e.text);
        probe.push("a".repeat(64) + "!", "x".repeat(2000));
        worker.postMessage({ p: pattern, lines: probe });
      });
    }
    async function refilter() {
      regex = null;
      if (tool("regex").checked && tool("filter").value) {
        const result = await checkRegex(tool("filter").value);
        if (result.error) { status("regex refused: " + result.error); tool("filter").classList.add("invalid"); return; }
        regex = result.re;
      }
      tool("filter").classList.remove("invalid");
      status("");
      render();
    }
    tool("filter").addEventListener("input", refilter);
    tool("regex").addEventListener("change", refilter);
    tool("level").addEventListener("change", refilter);
    tool("raw").addEventListener("change", () => render());
    tool("follow").addEventListener("click", (ev) => {
      follow = !follow;
      ev.currentTarget.classList.toggle("on", follow);
      if (follow) { render(); pending = []; held = 0; status(""); }
    });
    tool("download").addEventListener("click", (ev) => {
      const url = new URL(ev.currentTarget.href, location.href);
      url.searchParams.set("level", tool("level").value);
      if (!tool("regex").checked) url.searchParams.set("contains", tool("filter").value);
      ev.currentTarget.href = url.pathname + url.search;
    });
    render();
    return {
      add(lines) {
        entries = entries.concat(lines);
        if (entries.length > max) entries = entries.slice(entries.length - max);
        pending = pending.concat(lines);
        if (pending.length > max) pending = pending.slice(pending.length - max);
        held += lines.length;
        flushSoon();
      },
    };
  })();

  // -- charts (instance page)
  const charts = (function () {
    const section = document.getElementById("charts");
    if (!section || !window.uPlot) return { push() {} };
    const GiB = 2 ** 30;
    const defs = {
      memory: { series: [[word("used"), "gpu_used", GiB], [word("total"), "gpu_total", GiB], [word("reserved"), "reserved", GiB], [word("in tensors"), "allocated", GiB]] },
      latency: { series: [["p50", "p50_ms", 1], ["p95", "p95_ms", 1]] },
      rps: { series: [[word("req/s"), "rps", 1]] },
      connections: { series: [[word("established"), "established", 1], [word("close-wait"), "close_wait", 1], [word("time-wait"), "time_wait", 1]] },
    };
    const colours = ["#1a5fb4", "#888", "#c64600", "#1f7a3a"];
    let range = "15m", plots = {}, data = {};
    const spans = { "15m": 900, "6h": 21600, "24h": 86400, "7d": 604800 };
    function build(columns) {
      Object.entries(defs).forEach(([name, def]) => {
        const el = section.querySelector('[data-chart="' + name + '"]');
        data[name] = [columns.t.slice()].concat(def.series.map(([, col, div]) => columns[col].map((v) => (v == null ? null : v / div))));
        if (plots[name]) { plots[name].setData(data[name]); return; }
        const opts = {
          width: Math.max(260, el.clientWidth || 400), height: 170, legend: { live: false },
          series: [{}].concat(def.series.map(([label], i) => ({ label, stroke: colours[i % colours.length], width: 1.5, spanGaps: false }))),
          axes: [{ stroke: "#888" }, { stroke: "#888", size: 50 }],
        };
        plots[name] = new uPlot(opts, data[name], el);
      });
      section.dataset.points = String(columns.t.length);
    }
    async function load() {
      const response = await fetch(section.dataset.series + "?range=" + range, { credentials: "same-origin" });
      if (response.ok) build((await response.json()).columns);
    }
    section.querySelectorAll("[data-range]").forEach((b) =>
      b.addEventListener("click", () => {
        range = b.dataset.range;
        section.querySelectorAll("[data-range]").forEach((x) => x.classList.toggle("on", x === b));
        load();
      })
    );
    window.addEventListener("resize", () => Object.entries(plots).forEach(([name, p]) => {
      const el = section.querySelector('[data-chart="' + name + '"]');
      p.setSize({ width: Math.max(260, el.clientWidth), height: 170 });
    }));
    load();
    setInterval(() => { if (range !== "15m") load(); }, 60000);
    return {
      push(d) {
        if (range !== "15m" || !data.memory) return;
        const cutoff = d.at - spans[range];
        Object.entries(defs).forEach(([name, def]) => {
          const cols = data[name];
          cols[0].push(d.at);
          def.series.forEach(([, col, div], i) => cols[i + 1].push(d[col] == null ? null : d[col] / div));
          while (cols[0].length && cols[0][0] < cutoff) cols.forEach((c) => c.shift());
          plots[name].setData(cols);
        });
        section.dataset.points = String(data.memory[0].length);
      },
    };
  })();

  // -- the connection, resumed after any drop without a reload
  const path = kind === "dashboard" ? "/ws/dashboard/" : root.dataset.ws;
  let delay = 500, dropped = false;
  function connect() {
    const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + path);
    ws.onopen = () => {
      delay = 500;
      if (liveState) { liveState.textContent = liveState.dataset.textOn || "live"; liveState.className = "live on"; }
      // Events sent while the connection was down are lost: fetch the operation's card again.
      if (dropped && kind !== "dashboard") document.body.dispatchEvent(new CustomEvent("operation-updated"));
    };
    ws.onmessage = (m) => {
      const ev = JSON.parse(m.data);
      if (ev.type === "sample") takeSample(ev.instance, ev.data, true);
      else if (ev.type === "samples") ev.data.samples.forEach((s) => takeSample(s.instance, s.data, true));
      else if (ev.type === "operation.updated") applyOperation(ev.instance, ev.data, true);
      else if (ev.type === "log.lines") logs.add(ev.data.lines);
      else if (ev.type === "trial.update") applyTrial(ev.data);
      else if (ev.type === "instance.hold") applyHold(ev.instance, ev.data, true);
      document.dispatchEvent(new CustomEvent("console:event", { detail: ev }));
    };
    ws.onclose = (e) => {
      dropped = true;
      if (liveState) { liveState.textContent = e.code === 4401 ? liveState.dataset.textOut || "signed out" : liveState.dataset.textOff || "reconnecting…"; liveState.className = "live off"; }
      if (e.code === 4401) return;
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 10000);
    };
  }
  connect();
})();
