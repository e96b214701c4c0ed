// sentistream dashboard: polls the JSON API and draws it with uPlot (vendored, no network needed).
// Everything that comes from posts or alerts is inserted with textContent, never as markup.
// window.sentistream.state holds exactly what the charts were drawn from (tests read it).
"use strict";

(function () {
  const PALETTE = ["#2b6cb0", "#c0392b", "#2f855a", "#b7791f", "#6b46c1", "#0987a0", "#d53f8c", "#4a5568",
                   "#dd6b20", "#38a169"];
  const state = { config: null, series: null, alerts: [], detail: null, loadedAt: null, error: null };
  const charts = { compare: null, topics: new Map() };
  let timer = null;

  const $ = (id) => document.getElementById(id);
  const pct = (x) => (x === null || x === undefined ? "–" : (100 * x).toFixed(1) + "%");
  const num = (x) => (x === null || x === undefined ? "–" : Number(x).toLocaleString("en-US"));
  const utc = (iso) => (iso ? iso.replace("T", " ").replace(/:\d\d(\.\d+)?\+00:00$/, "").replace(/\+00:00$/, "") : "–");
  const tzDate = (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC");

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    Object.entries(props || {}).forEach(([k, v]) => {
      if (k === "class") node.className = v;
      else if (k === "dataset") Object.assign(node.dataset, v);
      else node.setAttribute(k, v);
    });
    children.flat().forEach((c) => node.append(c instanceof Node ? c : document.createTextNode(String(c ?? ""))));
    return node;
  }

  async function getJSON(url) {
    const response = await fetch(url, { cache: "no-store" });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
    return body;
  }

  function query() {
    return { since: $("since").value, bucket: $("bucket").value };
  }

  async function load() {
    const q = query();
    try {
      const [series, alerts] = await Promise.all([
        getJSON(`/api/series?since=${encodeURIComponent(q.since)}&bucket=${encodeURIComponent(q.bucket)}`),
        getJSON(`/api/alerts?since=${encodeURIComponent(q.since)}`),
      ]);
      state.series = series;
      state.alerts = alerts.alerts;
      state.error = null;
      state.loadedAt = new Date();
      render();
      setStatus(`updated ${state.loadedAt.toISOString().slice(11, 19)} UTC` +
                ($("live").checked ? ` · every ${state.config.refresh_s} s` : " · paused"));
    } catch (err) {
      state.error = String(err.message || err);
      setStatus(`could not refresh: ${state.error}`, true);
    }
    document.body.dataset.loaded = String((Number(document.body.dataset.loaded) || 0) + 1);
  }

  function setStatus(text, isError) {
    const s = $("status");
    s.textContent = text;
    s.classList.toggle("error", Boolean(isError));
  }

  function render() {
    const topics = state.series.topics;
    $("thin-below").textContent = state.series.thin_below;
    renderCompare(topics);
    renderTopics(topics);
    renderAlerts();
  }

  function chartWidth(container) {
    return Math.max(320, container.clientWidth || 600);
  }

  const two = (n) => String(n).padStart(2, "0");

  // Tick labels in UTC, 24-hour: the time of day, with the date where it changes (and on days alone).
  function timeLabels(u, splits) {
    let lastDay = null;
    return splits.map((ts) => {
      const d = new Date(ts * 1e3);
      const day = `${d.getUTCFullYear()}-${two(d.getUTCMonth() + 1)}-${two(d.getUTCDate())}`;
      const time = `${two(d.getUTCHours())}:${two(d.getUTCMinutes())}`;
      const bucket = state.series ? state.series.bucket : "hour";
      const label = bucket === "day" ? day.slice(5) : (day !== lastDay ? `${time}\n${day.slice(5)}` : time);
      lastDay = day;
      return label;
    });
  }

  function timeAxis() {
    return { stroke: "#6b7785", grid: { stroke: "#eef1f4" }, ticks: { stroke: "#e3e8ee" }, values: timeLabels,
             space: 55, size: 44 };
  }

  function shareAxis() {
    return { stroke: "#6b7785", grid: { stroke: "#eef1f4" }, ticks: { stroke: "#e3e8ee" }, size: 48,
             values: (u, vals) => vals.map((v) => (100 * v).toFixed(0) + "%") };
  }

  function renderCompare(topics) {
    const box = $("compare-chart");
    const t = topics.length ? topics[0].t : [];
    const data = [t, ...topics.map((tp) => solidShare(tp))];
    const key = topics.map((tp) => tp.topic).join("\u0000");
    if (charts.compare && charts.compare.key === key) {
      charts.compare.chart.setData(data);
      return;
    }
    if (charts.compare) charts.compare.chart.destroy();
    box.textContent = "";
    if (!topics.length) {
      box.append(el("p", { class: "empty" }, "No posts in this span."));
      charts.compare = null;
      return;
    }
    const opts = {
      width: chartWidth(box), height: 240, tzDate,
      scales: { y: { range: [0, 1] } },
      axes: [timeAxis(), shareAxis()],
      series: [{ label: "time (UTC)" }, ...topics.map((tp, i) => ({
        label: tp.topic, stroke: PALETTE[i % PALETTE.length], width: 2, spanGaps: false,
        value: (u, v) => pct(v), points: { show: true, size: 6, fill: PALETTE[i % PALETTE.length] },
      }))],
      legend: { live: true },
    };
    charts.compare = { key, chart: new uPlot(opts, data, box) };
  }

  function thinPoints(tp) {
    return tp.negative_share.map((v, i) => (tp.thin[i] ? v : null));
  }

  function solidShare(tp) {
    return wellSampled(tp, tp.negative_share);
  }

  // A thin bucket's share swings between 0 and 100 % and its interval spans most of that: the line, the
  // band and the whiskers are drawn through well-sampled buckets only; thin ones are hollow points.
  function wellSampled(tp, values) {
    return values.map((v, i) => (tp.thin[i] ? null : v));
  }

  function alertWindows(topic) {
    return state.alerts.filter((a) => a.topic === topic)
      .map((a) => [a.t, a.t + Number(a.window_seconds)]);
  }

  function shadeAlerts(topic) {
    return (u) => {
      const ctx = u.ctx;
      ctx.save();
      ctx.fillStyle = "rgba(192, 57, 43, 0.10)";
      for (const [start, end] of alertWindows(topic)) {
        const x0 = u.valToPos(start, "x", true), x1 = u.valToPos(end, "x", true);
        const left = Math.max(u.bbox.left, Math.min(x0, x1));
        const right = Math.min(u.bbox.left + u.bbox.width, Math.max(x0, x1, x0 + 2));
        if (right > left) ctx.fillRect(left, u.bbox.top, right - left, u.bbox.height);
      }
      ctx.restore();
    };
  }

  function renderTopics(topics) {
    const root = $("topics");
    const wanted = new Set(topics.map((tp) => tp.topic));
    for (const [name, entry] of charts.topics) {
      if (!wanted.has(name)) {
        entry.share.destroy(); entry.volume.destroy(); entry.card.remove(); charts.topics.delete(name);
      }
    }
    topics.forEach((tp, i) => {
      const color = PALETTE[i % PALETTE.length];
      const shareData = [tp.t, solidShare(tp), wellSampled(tp, tp.low), wellSampled(tp, tp.high), solidShare(tp),
                         thinPoints(tp)];
      const volumeData = [tp.t, tp.n_posts];
      let entry = charts.topics.get(tp.topic);
      if (!entry) {
        entry = buildCard(tp, color);
        charts.topics.set(tp.topic, entry);
        root.append(entry.card);
        entry.share = new uPlot(shareOptions(tp, color, entry.shareBox), shareData, entry.shareBox);
        entry.volume = new uPlot(volumeOptions(tp, entry.volumeBox), volumeData, entry.volumeBox);
        wireBucketClick(entry.share, tp.topic);
        wireBucketClick(entry.volume, tp.topic);
      } else {
        entry.share.setData(shareData);
        entry.volume.setData(volumeData);
      }
      root.append(entry.card);  // keep the server's topic order
      fillStats(entry, tp);
    });
  }

  function buildCard(tp, color) {
    const card = el("article", { class: "card", dataset: { topic: tp.topic } });
    const badge = el("span", { class: "alert-badge" });
    const title = el("h2", {}, el("span", { class: "topic-name" }, tp.topic), badge);
    title.querySelector(".topic-name").style.color = color;
    const stats = el("div", { class: "stats" });
    const readoutLine = el("p", { class: "readout" }, "Hover a bucket for its numbers; click it for its posts.");
    const shareBox = el("div", { class: "chart share-chart" });
    const volumeBox = el("div", { class: "chart volume-chart" });
    const key = el("p", { class: "chart-title" }, "negative share with its 95% interval · ",
                   el("span", { class: "key-solid" }), ` ≥ ${state.series.thin_below} scored · `,
                   el("span", { class: "key-hollow" }), ` fewer (thin) · `, el("span", { class: "key-alert" }), " alert");
    card.append(title, stats, readoutLine, key, shareBox, el("p", { class: "chart-title" }, "posts per bucket"),
                volumeBox);
    for (const span of card.querySelectorAll(".key-solid, .key-hollow")) span.style.borderColor = color;
    card.querySelector(".key-solid").style.background = color;
    return { card, stats, badge, shareBox, volumeBox, readout: readoutLine };
  }

  function fillStats(entry, tp) {
    entry.stats.textContent = "";
    const stat = (value, label, cls) => el("div", { class: "stat" }, el("span", { class: "value " + (cls || "") }, value),
                                           el("span", { class: "label" }, label));
    entry.stats.append(
      stat(num(tp.total_posts), "posts", ""),
      stat(pct(tp.total_share), "negative", "neg"),
      stat(tp.total_low === null ? "–" : `${pct(tp.total_low)} – ${pct(tp.total_high)}`, "95% interval", ""),
      stat(num(tp.total_scored), "scored", ""),
    );
    entry.stats.dataset.totalPosts = tp.total_posts;
    const n = state.alerts.filter((a) => a.topic === tp.topic).length;
    entry.badge.textContent = n ? `${n} alert event${n > 1 ? "s" : ""}` : "";
    entry.badge.hidden = !n;
  }

  function shareOptions(tp, color, box) {
    return {
      width: chartWidth(box), height: 170, tzDate,
      scales: { y: { range: [0, 1] } },
      axes: [timeAxis(), shareAxis()],
      series: [
        { label: "time (UTC)" },
        { label: "negative share", stroke: color, width: 1.5, value: (u, v) => pct(v), points: { show: false } },
        { label: "low", stroke: "transparent", width: 0, points: { show: false }, value: (u, v) => pct(v) },
        { label: "high", stroke: "transparent", width: 0, points: { show: false }, value: (u, v) => pct(v) },
        { label: `n ≥ ${state.series.thin_below}`, stroke: color, paths: () => null,
          points: { show: true, size: 6, width: 1, fill: color, stroke: color }, value: (u, v) => pct(v) },
        { label: `thin (n < ${state.series.thin_below})`, stroke: color, paths: () => null,
          points: { show: true, size: 7, width: 1.5, fill: "#ffffff", stroke: color }, value: (u, v) => pct(v) },
      ],
      bands: [{ series: [3, 2], fill: hexAlpha(color, 0.16) }],
      hooks: { drawClear: [shadeAlerts(tp.topic)], draw: [whiskers(color)], setCursor: [readout(tp.topic)] },
      legend: { show: false },
    };
  }

  function volumeOptions(tp, box) {
    return {
      width: chartWidth(box), height: 110, tzDate,
      scales: { y: { range: (u, min, max) => [0, Math.max(1, max) * 1.1] } },
      axes: [timeAxis(), { stroke: "#6b7785", grid: { stroke: "#eef1f4" }, size: 48 }],
      series: [
        { label: "time (UTC)" },
        { label: "posts", stroke: "#6f8eae", fill: "rgba(143, 169, 196, 0.75)", width: 1,
          paths: uPlot.paths.bars({ size: [0.85, 40] }), points: { show: false } },
      ],
      hooks: { drawClear: [shadeAlerts(tp.topic)], setCursor: [readout(tp.topic)] },
      legend: { show: false },
    };
  }

  // The 95 % interval as a whisker on every bucket with a share: visible even on isolated buckets,
  // where a band between neighbours has nothing to span.
  function whiskers(color) {
    return (u) => {
      const [t, , low, high] = u.data;
      const ctx = u.ctx;
      ctx.save();
      ctx.strokeStyle = hexAlpha(color, 0.55);
      ctx.lineWidth = 1.5 * devicePixelRatio;
      for (let i = 0; i < t.length; i++) {
        if (low[i] === null || high[i] === null) continue;
        const x = u.valToPos(t[i], "x", true);
        const y0 = u.valToPos(low[i], "y", true), y1 = u.valToPos(high[i], "y", true);
        const cap = 3 * devicePixelRatio;
        ctx.beginPath();
        ctx.moveTo(x, y0); ctx.lineTo(x, y1);
        ctx.moveTo(x - cap, y0); ctx.lineTo(x + cap, y0);
        ctx.moveTo(x - cap, y1); ctx.lineTo(x + cap, y1);
        ctx.stroke();
      }
      ctx.restore();
    };
  }

  // What the cursor is on, in words, under the card's title (both charts of a card share it).
  function readout(topic) {
    return (u) => {
      const entry = charts.topics.get(topic);
      const idx = u.cursor.idx;
      if (!entry) return;
      const tp = state.series.topics.find((x) => x.topic === topic);
      if (idx === null || idx === undefined || !tp || idx >= tp.t.length) {
        entry.readout.textContent = "Hover a bucket for its numbers; click it for its posts.";
        return;
      }
      const d = new Date(tp.t[idx] * 1e3).toISOString();
      const share = tp.negative_share[idx];
      entry.readout.textContent = `${d.slice(0, 10)} ${d.slice(11, 16)} UTC · ${num(tp.n_posts[idx])} posts, ` +
        (share === null ? "none scored" : `${pct(share)} negative of ${num(tp.n_scored[idx])} scored ` +
         `(95%: ${pct(tp.low[idx])} – ${pct(tp.high[idx])})${tp.thin[idx] ? " · thin" : ""}`);
    };
  }

  function hexAlpha(hex, alpha) {
    const v = parseInt(hex.slice(1), 16);
    return `rgba(${(v >> 16) & 255}, ${(v >> 8) & 255}, ${v & 255}, ${alpha})`;
  }

  function wireBucketClick(chart, topic) {
    chart.over.addEventListener("click", () => {
      const idx = chart.cursor.idx;
      if (idx === null || idx === undefined) return;
      const start = chart.data[0][idx];
      const step = { minute: 60, hour: 3600, day: 86400 }[state.series.bucket];
      showBucket(topic, start, start + step);
    });
  }

  function renderAlerts() {
    const body = $("alerts").querySelector("tbody");
    body.textContent = "";
    $("alerts-empty").hidden = state.alerts.length > 0;
    for (const a of state.alerts) {
      const incident = a.incident ? `#${a.incident.id} ${a.incident.status || ""}` : "–";
      const row = el("tr", { dataset: { alertId: a.id } },
        el("td", {}, `${utc(a.window_start)} · ${Math.round(a.window_seconds / 60)} min`),
        el("td", {}, a.topic),
        el("td", {}, el("span", { class: `event ${a.event || ""}` }, a.event || a.kind || "alert")),
        el("td", { class: "num" }, pct(a.observed)),
        el("td", { class: "num" }, pct(a.expected)),
        el("td", { class: "num" }, `${num(a.n_negative)} / ${num(a.n_posts)}`),
        el("td", { class: "num" }, a.score === null || a.score === undefined ? "–" : Number(a.score).toFixed(1)),
        el("td", {}, incident));
      if (state.detail && state.detail.alert && state.detail.alert.id === a.id) row.classList.add("selected");
      row.addEventListener("click", () => showAlert(a.id));
      body.append(row);
    }
  }

  // Nested objects (the detector's evidence) become dotted keys, two levels deep; lists stay JSON.
  function flatten(obj, prefix, depth) {
    const out = [];
    Object.entries(obj || {}).forEach(([k, v]) => {
      const key = prefix ? `${prefix}.${k}` : k;
      if (v && typeof v === "object" && !Array.isArray(v) && depth < 2) out.push(...flatten(v, key, depth + 1));
      else out.push([key, v]);
    });
    return out;
  }

  function kvRows(table, obj, skip) {
    const body = table.querySelector("tbody");
    body.textContent = "";
    flatten(obj, "", 0).filter(([k]) => !(skip || []).includes(k)).forEach(([k, v]) => {
      let shown = v;
      if (v === null || v === undefined) shown = "–";
      else if (typeof v === "number") shown = Number.isInteger(v) ? num(v) : v.toPrecision(4);
      else if (typeof v === "object") shown = JSON.stringify(v);
      else if (typeof v === "string" && /^\d{4}-\d\d-\d\dT\d\d:\d\d/.test(v)) shown = utc(v) + " UTC";
      body.append(el("tr", { dataset: { key: k } }, el("th", {}, k), el("td", {}, shown)));
    });
  }

  async function showAlert(id) {
    try {
      const detail = await getJSON(`/api/alerts/${encodeURIComponent(id)}`);
      state.detail = detail;
      const a = detail.alert;
      $("detail-title").textContent = `${a.event ? a.event[0].toUpperCase() + a.event.slice(1) + " alert" : "Alert"} · ${a.topic}`;
      const explanation = typeof a.explanation === "string" ? a.explanation
        : (a.incident && typeof a.incident.explanation === "string" ? a.incident.explanation : null);
      $("detail-summary").textContent = explanation ||
        `${pct(a.observed)} negative of ${num(a.n_posts)} posts in the ${Math.round(a.window_seconds / 60)}-minute ` +
        `window from ${utc(a.window_start)} UTC; baseline ${pct(a.expected)} (score ${Number(a.score).toFixed(1)}).`;
      renderExplanation((a.evidence && a.evidence.explanation) || (a.incident && a.incident.evidence
        && a.incident.evidence.explanation) || null);
      const evidence = Object.assign({}, a.evidence || {});
      delete evidence.explanation;  // shown above in words
      const known = ["evidence", "incident", "t", "window_end", "topic", "id"];
      Object.entries(a).forEach(([k, v]) => { if (!known.includes(k) && !(k in evidence)) evidence[k] = v; });
      kvRows($("detail-evidence"), evidence);
      const incident = a.incident ? Object.assign({}, a.incident) : { incident: "none" };
      if (incident.evidence) incident.evidence = "the latest event's, shown on the left";
      kvRows($("detail-incident"), incident);
      renderPosts(detail, `Posts behind this alert: ${utc(detail.posts_start)} – ${utc(detail.posts_end)} UTC`);
      renderAlerts();
    } catch (err) {
      setStatus(`could not load alert ${id}: ${err.message || err}`, true);
    }
  }

  // The detector's explanation (stream/alert_explanation.py): over-represented terms and hashtags, with
  // how often each appeared in the incident and the week before; anything else in it stays in the table.
  function renderExplanation(explanation) {
    const box = $("detail-explanation");
    box.textContent = "";
    const terms = explanation && Array.isArray(explanation.terms) ? explanation.terms : [];
    const tags = explanation && Array.isArray(explanation.hashtags) ? explanation.hashtags : [];
    box.hidden = !(terms.length || tags.length || (explanation && explanation.attended_tokens_note));
    const chips = (items) => items.map((t) => el("span", { class: "term", title:
      `z = ${Number(t.z).toFixed(1)}; ${t.incident_count} incident posts vs ${t.baseline_count} in the week before` },
      String(t.term)));
    if (terms.length) box.append(el("div", {}, el("span", { class: "k" }, "Over-represented terms"), ...chips(terms)));
    if (tags.length) box.append(el("div", {}, el("span", { class: "k" }, "Hashtags"), ...chips(tags)));
    if (explanation && explanation.terms_method) box.append(el("p", { class: "hint" }, explanation.terms_method));
  }

  async function showBucket(topic, start, end) {
    const iso = (ts) => new Date(ts * 1e3).toISOString();
    try {
      const detail = await getJSON(`/api/posts?topic=${encodeURIComponent(topic)}&start=${iso(start)}&end=${iso(end)}`);
      state.detail = detail;
      $("detail-title").textContent = `Bucket · ${topic}`;
      $("detail-summary").textContent = `${num(detail.posts_total)} posts from ${utc(detail.start)} to ${utc(detail.end)} UTC.`;
      renderExplanation(null);
      kvRows($("detail-evidence"), { topic, start: detail.start, end: detail.end, posts: detail.posts_total });
      kvRows($("detail-incident"), { incident: "none (a bucket, not an alert)" });
      renderPosts(detail, "Posts in this bucket");
      renderAlerts();
    } catch (err) {
      setStatus(`could not load posts: ${err.message || err}`, true);
    }
  }

  function safeLink(url) {
    try {
      const parsed = new URL(url);
      if (parsed.protocol !== "https:" && parsed.protocol !== "http:") return null;
      const a = el("a", { href: parsed.href, rel: "noopener noreferrer nofollow", target: "_blank" }, "open");
      return a;
    } catch (e) {
      return null;
    }
  }

  function renderPosts(detail, title) {
    const section = $("detail");
    section.hidden = false;
    const shown = detail.posts.length;
    $("detail-posts-title").textContent = `${title} (${shown < detail.posts_total ? `${shown} of ` : ""}${num(detail.posts_total)}, most negative first)`;
    const body = $("detail-posts").querySelector("tbody");
    body.textContent = "";
    for (const p of detail.posts) {
      const weights = p.modality_weights && Object.keys(p.modality_weights).length
        ? " (" + Object.entries(p.modality_weights).map(([k, w]) => `${k} ${Number(w).toFixed(2)}`).join(", ") + ")" : "";
      const media = (p.media || []).map((m) => `${m.kind || "media"}: ${m.status}`).join(", ");
      body.append(el("tr", { dataset: { postId: p.post_id, platform: p.platform } },
        el("td", {}, utc(p.created_at)),
        el("td", {}, p.platform),
        el("td", { class: "text" }, p.text),
        el("td", {}, p.label ? el("span", { class: `label ${p.label}` }, p.label) : (p.unscored_reason || "not scored")),
        el("td", { class: "num" }, p.p_negative === null ? "–" : p.p_negative.toFixed(2)),
        el("td", { class: "num" }, p.intensity === null ? "–" : p.intensity.toFixed(2)),
        el("td", { class: "modalities" }, (p.modalities.join(" + ") || "–") + weights + (media ? ` · ${media}` : "")),
        el("td", {}, (p.url && safeLink(p.url)) || "–")));
    }
    section.scrollIntoView({ behavior: "smooth", block: "start" });
  }

  function schedule() {
    if (timer) clearInterval(timer);
    timer = $("live").checked ? setInterval(load, 1000 * state.config.refresh_s) : null;
  }

  function resizeAll() {
    if (charts.compare) charts.compare.chart.setSize({ width: chartWidth($("compare-chart")), height: 240 });
    for (const entry of charts.topics.values()) {
      entry.share.setSize({ width: chartWidth(entry.shareBox), height: 170 });
      entry.volume.setSize({ width: chartWidth(entry.volumeBox), height: 110 });
    }
  }

  async function start() {
    try {
      state.config = await getJSON("/api/config");
    } catch (err) {
      state.config = { refresh_s: 10, thin_below: 10 };
      setStatus(`could not read the configuration: ${err.message || err}`, true);
    }
    $("since").addEventListener("change", () => { rebuildAll(); load(); });
    $("bucket").addEventListener("change", () => { rebuildAll(); load(); });
    $("live").addEventListener("change", () => { schedule(); load(); });
    $("detail-close").addEventListener("click", () => { $("detail").hidden = true; state.detail = null; renderAlerts(); });
    window.addEventListener("resize", resizeAll);
    await load();
    schedule();
  }

  function rebuildAll() {
    if (charts.compare) { charts.compare.chart.destroy(); charts.compare = null; }
    for (const entry of charts.topics.values()) { entry.share.destroy(); entry.volume.destroy(); entry.card.remove(); }
    charts.topics.clear();
  }

  window.sentistream = { state, charts, refresh: load, showAlert, showBucket };
  document.addEventListener("DOMContentLoaded", start);
})();
