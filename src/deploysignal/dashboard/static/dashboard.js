/* deploysignal dashboard: one script for the service's /ui/, `deploysignal ui` and `deploysignal report`.
 *
 * Data: the views the server derives from the verified audit chain (GET /v1/analyses/{id}/view), or the same
 * views embedded in a report (<script id="ds-data" type="application/json">). Nothing is recomputed here.
 * Auth: a bearer token kept in sessionStorage (this tab only), sent in the Authorization header; never in a URL.
 * Live updates: the service's server-sent events (/v1/analyses/{id}/events) read with fetch (EventSource cannot
 * send a header); each event re-reads the view. Text from the data is inserted with textContent only.
 */
"use strict";
(function () {
  const EMBED = document.getElementById("ds-data");
  const DATA = EMBED ? JSON.parse(EMBED.textContent) : null;
  const TOKEN_KEY = "deploysignal.token";
  const COLORS = { rollback: "#c62828", proceed: "#2e7d32", extend: "#ef8f00", pending: "#8d8d94" };
  const PALETTE = ["#1a5fb4", "#c64600", "#26a269", "#9141ac", "#a51d2d", "#63452c", "#0e7c86", "#865e3c"];
  const $ = (id) => document.getElementById(id);
  let live = null;        // AbortController of the running event stream
  let plots = [];         // uPlot instances of the current page

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
    }
    for (const k of kids) if (k != null) e.append(k);
    return e;
  }
  function badge(v, big) { return el("span", { class: "badge v-" + (COLORS[v] ? v : "pending") + (big ? " verdict-big" : ""), text: String(v) }); }
  function fmt(x, d) { return x == null ? "–" : Number(x).toFixed(d == null ? 2 : d); }
  function age(created) {
    const t = Date.parse(created); if (isNaN(t)) return "–";
    const s = Math.max(0, (Date.now() - t) / 1000);
    return s < 120 ? Math.round(s) + " s" : s < 7200 ? Math.round(s / 60) + " min" : s < 172800 ? Math.round(s / 3600) + " h" : Math.round(s / 86400) + " d";
  }

  // ------------------------------------------------------------------ data access
  function token() { return sessionStorage.getItem(TOKEN_KEY); }
  async function api(path, opts) {
    const headers = Object.assign({}, (opts && opts.headers) || {});
    if (token()) headers.Authorization = "Bearer " + token();
    const r = await fetch("../" + path, Object.assign({}, opts || {}, { headers: headers, credentials: "omit", cache: "no-store" }));
    if (r.status === 401) { showLogin("the token was refused (401): paste a read token"); throw new Error("401"); }
    return r;
  }
  async function getJSON(path) {
    const r = await api(path);
    if (!r.ok) { let d = r.statusText; try { d = (await r.json()).detail || d; } catch (e) { /* not JSON */ } throw new Error(path + ": " + r.status + " " + d); }
    return r.json();
  }
  const source = {
    analyses: () => DATA ? Promise.resolve(DATA.analyses || []) : getJSON("v1/analyses"),
    view: (id) => DATA ? Promise.resolve(DATA.views[id]) : getJSON("v1/analyses/" + encodeURIComponent(id) + "/view"),
    sources: async () => {
      if (DATA) return { fleet: Object.keys(DATA.fleet || {}), migration: Object.keys(DATA.migration || {}) };
      const r = await api("v1/dashboard/sources");
      return r.ok ? r.json() : { fleet: [], migration: [] };
    },
    fleet: (n) => DATA ? Promise.resolve(DATA.fleet[n]) : getJSON("v1/dashboard/fleet/" + encodeURIComponent(n)),
    migration: (n) => DATA ? Promise.resolve(DATA.migration[n]) : getJSON("v1/dashboard/migration/" + encodeURIComponent(n)),
  };

  function download(name, text, type) {
    const url = URL.createObjectURL(new Blob([text], { type: type }));
    const a = el("a", { href: url, download: name }); document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }
  async function downloadAudit(id) {
    if (DATA) { download(id + ".audit.ndjson", DATA.audit[id], "application/x-ndjson"); return; }
    const r = await api("v1/analyses/" + encodeURIComponent(id) + "/audit");
    download(id + ".audit.ndjson", await r.text(), "application/x-ndjson");
  }
  async function downloadReport(id) {
    const r = await api("v1/analyses/" + encodeURIComponent(id) + "/report");
    download(id + ".report.html", await r.text(), "text/html");
  }

  // ------------------------------------------------------------------ plots
  function width(card) { return Math.max(320, card.clientWidth - 24); }
  function linePlot(card, title, xs, series, opts) {
    const holder = el("div", { class: "plot" });
    card.append(el("h3", { text: title }), holder);
    const o = {
      width: width(card), height: (opts && opts.height) || 190, legend: { show: true },
      scales: { x: { time: false } }, axes: [{ label: (opts && opts.xlabel) || "tick" }, { label: (opts && opts.ylabel) || "" }],
      series: [{ label: (opts && opts.xlabel) || "tick" }].concat(series.map((s, i) => ({
        label: s.label, stroke: s.color || PALETTE[i % PALETTE.length], width: s.width || 1.5, dash: s.dash, spanGaps: false,
        fill: s.fill, points: { show: false } }))),
    };
    const p = new uPlot(o, [xs].concat(series.map((s) => s.data)), holder);
    plots.push(p);
    return p;
  }
  function verdictStrip(card, ticks, verdicts, labels, axis) {
    const c = el("canvas", { class: "strip", height: "26" });
    card.append(c);
    const w = c.width = Math.max(320, card.clientWidth - 24);
    const g = c.getContext("2d");
    const n = verdicts.length || 1;
    for (let i = 0; i < verdicts.length; i++) {
      g.fillStyle = COLORS[verdicts[i]] || COLORS.pending;
      g.fillRect(Math.floor(i * w / n), 0, Math.ceil(w / n) + 1, 26);
    }
    const changes = el("p", { class: "legend muted" });
    let prev = null;
    const names = labels || verdicts;
    for (let i = 0; i < verdicts.length; i++) if (names[i] !== prev) { changes.append(el("span", { text: (axis || "tick") + " " + ticks[i] + ": " + names[i] })); prev = names[i]; }
    card.append(changes);
  }
  function heatMap(card, nodes, values, ticks) {
    const rowH = 16, left = 150;
    const c = el("canvas", { class: "heat" });
    card.append(c);
    const w = Math.max(320, card.clientWidth - 24);
    c.width = w; c.height = Math.max(1, nodes.length) * rowH + 18;
    const g = c.getContext("2d");
    let max = 0;
    for (const row of values) for (const v of row) if (v != null && v > max) max = v;
    const n = Math.max(1, ticks.length), cw = (w - left) / n;
    g.font = "11px sans-serif"; g.fillStyle = "#1d1d1f";
    nodes.forEach((name, r) => {
      g.fillStyle = "#1d1d1f"; g.fillText(name.slice(0, 22), 2, r * rowH + 12);
      values[r].forEach((v, j) => {
        if (v == null) return;
        const a = max > 0 ? Math.max(0, Math.min(1, v / max)) : 0;
        g.fillStyle = "rgba(198,40,40," + (0.08 + 0.92 * a).toFixed(3) + ")";
        g.fillRect(left + j * cw, r * rowH, Math.ceil(cw), rowH - 1);
      });
    });
    g.fillStyle = "#6b6b70";
    g.fillText("tick " + ticks[0] + " … " + ticks[ticks.length - 1] + "   (colour: log e, 0 … " + max.toFixed(1) + ")", left, nodes.length * rowH + 13);
  }

  // ------------------------------------------------------------------ pages
  function clear() {
    if (live) { live.abort(); live = null; }
    plots.forEach((p) => p.destroy()); plots = [];
    const page = $("page"); page.replaceChildren(); return page;
  }
  function fail(page, err) { page.append(el("p", { class: "error", text: String(err && err.message || err) })); }

  async function listPage() {
    const page = clear();
    page.append(el("h1", { text: "Analyses" }));
    let rows;
    try { rows = await source.analyses(); } catch (e) { if (String(e.message) !== "401") fail(page, e); return; }
    if (!rows.length) { page.append(el("p", { class: "muted", text: "no analyses yet" })); return; }
    const t = el("table", { id: "analyses" }, el("tr", {}, ...["analysis", "state", "verdict", "revision", "ticks", "age", "baseline"].map((h) => el("th", { text: h }))));
    for (const r of rows) {
      const s = r.summary || {};
      const rev = r.id.includes("@") ? r.id.slice(r.id.lastIndexOf("@") + 1) : "–";
      const state = r.integrity_error ? "refused" : s.final ? "final" : "live";
      t.append(el("tr", {},
        el("td", {}, el("a", { href: "#/a/" + encodeURIComponent(r.id), text: r.id })),
        el("td", { text: state }), el("td", {}, badge(s.verdict || "pending")), el("td", { text: rev }),
        el("td", { text: String(r.n_ticks) }), el("td", { text: age(r.created) }), el("td", { class: "muted", text: r.baseline_version || "" })));
    }
    page.append(t);
  }

  function eventText(ev) {
    if (ev.kind === "cut") return "cut back to tick " + ev.to_tick + " (stored entries " + (ev.superseded || []).map((r) => r[0] + "-" + r[1]).join(", ") +
      " superseded; not drawn), " + ev.at + " evaluated ticks kept: " + ev.reason;
    if (ev.kind === "void") return "voided after " + ev.at + " evaluated ticks: " + ev.reason;
    return "failed closed at tick " + ev.tick + ": " + ev.reason;
  }

  function renderAnalysis(page, v) {
    page.replaceChildren();
    plots.forEach((p) => p.destroy()); plots = [];
    page.append(el("h1", { text: "Analysis " + v.id }));
    if (!v.verified.ok) {
      page.append(el("div", { class: "bad", id: "unverified", text: "The audit chain does not verify (line " + v.verified.bad_line + ": " + v.verified.reason + "): nothing is drawn." }));
      return;
    }
    const last = v.last || {};
    const head = el("div", { class: "card", id: "summary" });
    head.append(el("div", { id: "verdict" }, badge(last.verdict || "pending", true), " ",
      el("span", { text: (last.final ? "final" : "not final") + (last.decided_at_tick != null ? ", decided at tick " + last.decided_at_tick : "") +
        ", " + v.ticks.length + " evaluated ticks" + (v.mode ? ", mode " + v.mode : "") })));
    if (last.fired_families && last.fired_families.length) head.append(el("p", { text: "fired: " + last.fired_families.join(", ") + (last.reason ? " — " + last.reason : "") }));
    if (v.fail_closed) head.append(el("div", { class: "warn", id: "fail-closed", text: "Failed closed (never promotes): " + v.fail_closed }));
    if (v.verified.note) {
      head.append(el("div", { class: "warn", id: "no-head", text: "audit chain verified up to its last line (" + v.verified.lines + " lines), " + v.verified.note + " (give the published head: --head)." }));
    } else {
      head.append(el("p", { class: "muted", text: "audit chain verified against the published head: " + v.verified.lines + " lines, head " + v.verified.head }));
    }
    if (v.id_note) head.append(el("p", { class: "muted", id: "id-note", text: "Analysis id " + v.id_note + "." }));
    const cert = v.header && v.header.certification;
    if (cert && cert.certified === false) head.append(el("div", { class: "warn", id: "uncertified", text: "Guarantee: " + cert.basis + ". " + (cert.reasons || []).join("; ") }));
    const actions = el("p", {});
    const ab = el("button", { type: "button", id: "audit-download", text: "Download audit log" }); ab.addEventListener("click", () => downloadAudit(v.id));
    actions.append(ab);
    if (!DATA) {
      const rb = el("button", { type: "button", id: "report-download", text: "Download report (HTML)" }); rb.addEventListener("click", () => downloadReport(v.id));
      actions.append(" ", rb, " ", el("span", { id: "live-status", class: "live", text: "" }));
    }
    head.append(actions);
    page.append(head);

    const tl = el("div", { class: "card" }); page.append(el("h2", { text: "Verdict timeline" }), tl);
    verdictStrip(tl, v.ticks, v.verdicts);
    for (const ev of v.events || []) tl.append(el("p", { class: "muted event", text: eventText(ev) }));

    page.append(el("h2", { text: "Log-evidence against its bound" }));
    const grid = el("div", { class: "grid", id: "evidence" }); page.append(grid);
    for (const f of v.families) {
      const card = el("div", { class: "card family" }); grid.append(card);
      const title = f.name + (f.fired_at != null ? " (fired at tick " + f.fired_at + ")" : "");
      if (f.evidence.every((x) => x == null) && f.statistic && f.statistic.some((x) => x != null)) {
        linePlot(card, title + ": rule statistic (no e-value)", v.ticks, [{ label: "statistic", data: f.statistic }], { ylabel: "statistic" });
      } else {
        linePlot(card, title, v.ticks, [{ label: "log evidence", data: f.evidence }, { label: "bound", data: f.bound, color: COLORS.rollback, dash: [6, 4], width: 1 }], { ylabel: "log e" });
      }
    }
    if (!v.families.length) grid.append(el("p", { class: "muted", text: "no evaluated tick yet" }));

    const effNames = Object.keys(v.effects || {});
    if (effNames.length) {
      page.append(el("h2", { text: "Effect sizes (canary / stable ratio) with confidence sequences" }));
      const eg = el("div", { class: "grid", id: "effects" }); page.append(eg);
      for (const n of effNames) {
        const e = v.effects[n], card = el("div", { class: "card" }); eg.append(card);
        linePlot(card, n, v.ticks, [{ label: "estimate", data: e.estimate }, { label: "lower", data: e.lower, color: "#888", dash: [4, 3], width: 1 },
          { label: "upper", data: e.upper, color: "#888", dash: [4, 3], width: 1 }], { ylabel: "ratio" });
      }
    }

    const sig = v.signals;
    page.append(el("h2", { text: "Signals" }));
    const sg = el("div", { class: "grid", id: "signals" }); page.append(sg);
    if (sig && sig.kind === "canary_control") {
      const driving = [...new Set(v.drivers.filter((d) => d.fire).flatMap((d) => d.drivers || []))];
      for (const n of driving.filter((x) => sig.names.includes(x)).concat(sig.names.filter((x) => !driving.includes(x)))) {
        const card = el("div", { class: "card" }); sg.append(card);
        const ss = [{ label: "canary", data: sig.canary[n], color: COLORS.rollback }];
        if (sig.control) ss.push({ label: "control", data: sig.control[n], color: "#1a5fb4" });
        linePlot(card, n + (driving.includes(n) ? " (driver)" : ""), v.ticks, ss, { height: 150 });
      }
    } else if (sig && sig.kind === "arms") {
      for (const n of sig.names) {
        const card = el("div", { class: "card" }); sg.append(card);
        linePlot(card, n, v.ticks, sig.arms.map((a, i) => ({ label: a, data: sig.series[a][n], color: i === 0 ? COLORS.rollback : "#1a5fb4" })), { height: 150 });
      }
    }

    page.append(el("h2", { text: "Drivers (last evaluated tick)" }));
    const dt = el("table", { id: "drivers" }, el("tr", {}, ...["family", "fired", "log e", "bound", "p-value", "drivers", "why"].map((h) => el("th", { text: h }))));
    for (const d of v.drivers) {
      dt.append(el("tr", {}, el("td", { text: d.family }), el("td", { text: d.fire ? "yes" : "no" }), el("td", { text: fmt(d.evidence) }),
        el("td", { text: fmt(d.bound) }), el("td", { text: d.p_value == null ? "–" : Number(d.p_value).toPrecision(3) }),
        el("td", { text: (d.drivers || []).join(", ") || "–" }), el("td", { text: d.reason || "" })));
    }
    page.append(dt);
    if ((v.notes || []).length) page.append(el("ul", { class: "notes" }, ...v.notes.map((n) => el("li", { text: n }))));
  }

  async function analysisPage(id) {
    const page = clear();
    let v;
    try { v = await source.view(id); } catch (e) { if (String(e.message) !== "401") fail(page, e); return; }
    if (!v) { fail(page, "no analysis " + id + " in this report"); return; }
    renderAnalysis(page, v);
    // live only for a stored analysis (an audit file has no stored_entries: nothing will be added to it)
    if (!DATA && v.verified.ok && v.stored_entries != null && !(v.last && v.last.final)) follow(id, page, v.stored_entries);
  }

  // server-sent events over fetch (a header can carry the token); each decision re-reads the verified view
  function follow(id, page, from) {
    const ctl = new AbortController(); live = ctl;
    const status = (t, on) => { const s = $("live-status"); if (s) { s.textContent = t; s.className = "live" + (on ? " on" : ""); } };
    // one view read at a time, the next at least 1 s and twice the last read's duration later: the server
    // rebuilds the view from the chain (docs/dashboard.md, cost), so a fast tick stream must not queue reads
    let pending = null, again = false, gap = 1000, lastEnd = -Infinity;
    const refresh = () => {
      if (pending) { again = true; return; }
      pending = setTimeout(async () => {
        const t0 = performance.now();
        try {
          if (live !== ctl) return;
          const v = await source.view(id);
          if (live !== ctl) return;
          renderAnalysis(page, v); status("live: tick " + (v.ticks.length ? v.ticks[v.ticks.length - 1] : "–"), true);
          if (v.last && v.last.final) { ctl.abort(); status("final", false); }
        } catch (e) { status("update failed: " + e.message, false); }
        finally {
          lastEnd = performance.now();
          gap = Math.max(1000, 2 * (lastEnd - t0));
          pending = null;
          if (again) { again = false; refresh(); }
        }
      }, Math.max(300, lastEnd + gap - performance.now()));
    };
    (async () => {
      let cursor = from;
      while (live === ctl) {
        try {
          const r = await api("v1/analyses/" + encodeURIComponent(id) + "/events?from_tick=" + cursor + "&timeout=60", { signal: ctl.signal, headers: { Accept: "text/event-stream" } });
          if (!r.ok) { status("live updates unavailable (" + r.status + ")", false); return; }
          status("live", true);
          const reader = r.body.getReader(), dec = new TextDecoder();
          let buf = "";
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buf += dec.decode(value, { stream: true });
            let i;
            while ((i = buf.indexOf("\n\n")) >= 0) {
              const block = buf.slice(0, i); buf = buf.slice(i + 2);
              const idLine = block.split("\n").find((l) => l.startsWith("id: "));
              if (idLine) { cursor = Number(idLine.slice(4)) + 1; refresh(); }
            }
          }
        } catch (e) {
          if (ctl.signal.aborted) return;
          status("reconnecting…", false);
          await new Promise((res) => setTimeout(res, 2000));
        }
      }
    })();
  }

  // the named fleet or migration view (the first one without a name) under its page title, or null
  async function namedView(kind, title, name, hint) {
    const page = clear();
    const src = await source.sources();
    name = name || src[kind][0];
    page.append(el("h1", { text: title + (name ? " " + name : "") }));
    if (!name) { page.append(el("p", { class: "muted", text: hint })); return null; }
    try { return [page, await source[kind](name)]; } catch (e) { fail(page, e); return null; }
  }

  async function fleetPage(name) {
    const got = await namedView("fleet", "Fleet", name, "no fleet observations loaded (deploysignal ui --fleet FILE, from `deploysignal fleet observe --jsonl`)");
    if (!got) return;
    const [page, f] = got;
    const s = el("div", { class: "card", id: "fleet-summary" });
    const alarm = f.flagged.length || f.fleet_fired;  // the observer flags shards; it gives no verdict
    s.append(el("p", {}, el("span", { class: "badge verdict-big " + (alarm ? "v-rollback" : "v-pending"), text: alarm ? "flagged" : "nothing flagged" }), " ",
      el("span", { text: f.flagged.length + " shard(s) flagged at FDR q = " + f.q + "; fleet-level event " + (f.fleet_fired ? "fired" : "not fired") })));
    if (f.frozen.length) s.append(el("div", { class: "warn", text: "frozen by cluster events: " + f.frozen.join(", ") + (f.active_events.length ? " (" + f.active_events.join(", ") + ")" : "") }));
    page.append(s);
    page.append(el("h2", { text: "Topology evidence (log e per node and tick)" }));
    const hc = el("div", { class: "card", id: "heat" }); page.append(hc);
    heatMap(hc, f.heat.nodes, f.heat.values, f.ticks);
    const grid = el("div", { class: "grid" }); page.append(el("h2", { text: "Fleet evidence" }), grid);
    const c1 = el("div", { class: "card" }), c2 = el("div", { class: "card" }); grid.append(c1, c2);
    linePlot(c1, "fleet-level log e", f.ticks, [{ label: "log e", data: f.fleet_log_e }], { ylabel: "log e" });
    linePlot(c2, "flagged shards", f.ticks, [{ label: "flagged", data: f.flagged_count, color: COLORS.rollback }], { ylabel: "shards" });
    page.append(el("h2", { text: "Attribution" }));
    const at = el("table", { id: "attributions" }, el("tr", {}, ...["kind", "level", "node", "shards", "log e"].map((h) => el("th", { text: h }))));
    for (const a of f.attributions) at.append(el("tr", {}, el("td", { text: a.kind }), el("td", { text: a.level }), el("td", { text: a.node }),
      el("td", { text: a.shards.length + ": " + a.shards.slice(0, 8).join(", ") + (a.shards.length > 8 ? " …" : "") }), el("td", { text: fmt(a.log_e) })));
    page.append(at);
    page.append(el("h2", { text: "Flagged shards" }));
    const ft = el("table", { id: "flagged" }, el("tr", {}, el("th", { text: "shard" }), el("th", { text: "first flagged at tick" })));
    for (const x of f.flagged) ft.append(el("tr", {}, el("td", { text: x.shard }), el("td", { text: String(x.first_tick) })));
    page.append(ft);
    page.append(el("ul", { class: "notes" }, ...f.notes.map((n) => el("li", { text: n }))));
  }

  async function migrationPage(name) {
    const got = await namedView("migration", "Migration", name, "no migration run loaded (deploysignal ui --migration FILE, from `deploysignal migrate run --json FILE`)");
    if (!got) return;
    const [page, m] = got;
    const s = el("div", { class: "card", id: "migration-summary" });
    const v = m.final_phase === "rolled_back" ? "rollback" : m.final_phase === "promoted" ? "proceed" : "extend";
    s.append(el("p", {}, badge(v, true), " ", el("span", { text: "final phase " + m.final_phase + "; " + m.pairs + " scored pairs, " + m.queries + " queries" +
      (m.rollback_reason ? "; rollback reason: " + m.rollback_reason : "") })));
    page.append(s);
    page.append(el("h2", { text: "Phase timeline" }));
    const pc = el("div", { class: "card", id: "phases" }); page.append(pc);
    const pv = m.phase_series.map((p) => p === "rolled_back" ? "rollback" : p === "promoted" ? "proceed" : p === "shadow" ? "pending" : "extend");
    verdictStrip(pc, m.pairs_axis, pv, m.phase_series, "pair");
    const pt = el("table", {}, el("tr", {}, el("th", { text: "from pair" }), el("th", { text: "phase" })));
    for (const p of m.phases) pt.append(el("tr", {}, el("td", { text: String(p.pair) }), el("td", { text: p.phase })));
    pc.append(pt);
    page.append(el("h2", { text: "Per-dimension evidence" }));
    const grid = el("div", { class: "grid", id: "dimensions" }); page.append(grid);
    const L = m.levels || {}, flat = (y) => m.pairs_axis.map(() => y), dash = { dash: [6, 4], width: 1 };
    for (const d of m.dimensions) {
      const card = el("div", { class: "card" }); grid.append(card);
      if (d.non_inferiority_max) {
        const ser = [{ label: "max log e (no worse)", data: d.non_inferiority_max, color: COLORS.proceed },
          { label: "max log e (harm)", data: d.harm_max, color: COLORS.rollback }];
        if (L.promote_first != null) ser.push({ label: "Holm promote: first", data: flat(L.promote_first), color: COLORS.proceed, ...dash },
          { label: "last", data: flat(L.promote_last), color: COLORS.proceed, ...dash, dash: [2, 3] });
        if (L.harm != null) ser.push({ label: "Holm harm", data: flat(L.harm), color: COLORS.rollback, ...dash });
        linePlot(card, d.name, m.pairs_axis, ser, { xlabel: "pair", ylabel: "-log p" });
        if (d.detector) {
          const det = [{ label: "detector log statistic", data: d.detector, color: COLORS.extend }];
          if (L.detector_log != null) det.push({ label: "threshold", data: flat(L.detector_log), color: COLORS.rollback, ...dash });
          linePlot(card, d.name + ": change detector", m.pairs_axis, det, { xlabel: "pair", ylabel: "log", height: 140 });
        }
      } else {
        linePlot(card, d.name + " (current log-wealth; not what the protocol decides on)", m.pairs_axis, [{ label: "log e (no worse)", data: d.non_inferiority, color: COLORS.proceed },
          { label: "log e (harm)", data: d.harm, color: COLORS.rollback }], { xlabel: "pair", ylabel: "log e" });
      }
    }
    if (m.error_budget) {
      const card = el("div", { class: "card", id: "error-budget" }); grid.append(card);
      const ser = [{ label: "log e (error budget, correctness)", data: m.error_budget, color: COLORS.extend }];
      if (L.error_budget_log != null) ser.push({ label: "level", data: flat(L.error_budget_log), color: COLORS.rollback, ...dash });
      linePlot(card, "error budget of the progressive step", m.pairs_axis, ser, { xlabel: "pair", ylabel: "log e" });
    }
    page.append(el("ul", { class: "notes" }, ...(m.notes || []).map((n) => el("li", { text: n }))));
  }

  // ------------------------------------------------------------------ shell
  function showLogin(msg) {
    clear();
    $("login").hidden = false; $("login-error").textContent = msg || "";
  }
  async function route() {
    if (!DATA && !token()) { showLogin(""); return; }
    $("login").hidden = true; $("logout").hidden = !!DATA;
    try {
      const src = await source.sources();
      $("nav-fleet").hidden = !src.fleet.length; $("nav-migration").hidden = !src.migration.length;
    } catch (e) { return; }
    let h = location.hash.replace(/^#/, "");
    if (DATA && !h && (DATA.analyses || []).length === 1) h = "/a/" + encodeURIComponent(DATA.analyses[0].id);
    if (h.startsWith("/a/")) return analysisPage(decodeURIComponent(h.slice(3)));
    if (h.startsWith("/fleet")) return fleetPage(decodeURIComponent(h.slice(7)) || null);
    if (h.startsWith("/migration")) return migrationPage(decodeURIComponent(h.slice(11)) || null);
    return listPage();
  }
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim()); $("token").value = "";
    route();
  });
  $("logout").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); showLogin(""); });
  $("source").textContent = DATA ? "offline report (deploysignal " + DATA.version + ")" : "";
  window.addEventListener("hashchange", route);
  route();
})();
