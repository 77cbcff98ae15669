"""The HTML report's page: inline CSS and script, no network (see :mod:`export`).

``TEMPLATE`` has two slots: ``{{TITLE}}`` (HTML-escaped text) and ``{{DATA}}`` (the report
data as JSON, with every ``<`` written ``\\u003c`` so it cannot end the script element). The
script builds the page from the data with DOM calls and ``textContent`` only (model answers
and payloads are shown as text, never interpreted as HTML).
"""

from __future__ import annotations

TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{TITLE}}</title>
<style>
:root { --bg:#fafafa; --fg:#1d1d1f; --muted:#6b6b70; --line:#dddde3; --sel:#ffe9a8;
        --ev:#2f6fde; --task:#8a4fd0; --inc:#5b6b7a; --appr:#d07a00; --act:#1e9e5a;
        --bad:#c7342b; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif;
       color:var(--fg); background:var(--bg); }
header { padding:12px 20px; border-bottom:1px solid var(--line); background:#fff; }
h1 { font-size:18px; margin:0 0 4px; }
h2 { font-size:15px; margin:16px 0 6px; }
.meta span { margin-right:14px; color:var(--muted); }
.meta b { color:var(--fg); font-weight:600; }
main { display:grid; grid-template-columns:minmax(0,1fr) 460px; gap:0; }
.left { padding:0 20px 40px; min-width:0; }
aside { border-left:1px solid var(--line); background:#fff; padding:0 16px 40px;
        position:sticky; top:0; height:100vh; overflow:auto; }
#incidents { display:flex; flex-wrap:wrap; gap:8px; }
.incident { border:1px solid var(--line); border-radius:6px; background:#fff; padding:6px 10px;
            cursor:pointer; min-width:220px; }
.incident:hover { border-color:var(--ev); }
.incident .st { font-weight:600; }
.incident .st.escalated { color:var(--bad); }
.incident .st.resolved, .incident .st.closed { color:var(--act); }
#filters { margin:12px 0; display:flex; gap:10px; align-items:center; flex-wrap:wrap; }
#lanes { overflow-x:auto; border:1px solid var(--line); border-radius:6px; background:#fff; }
.lane { display:flex; align-items:center; border-bottom:1px solid var(--line); height:30px; }
.lane:last-child { border-bottom:none; }
.lane-name { position:sticky; left:0; background:#fff; width:210px; flex:none; padding:0 8px;
             font-weight:600; white-space:nowrap; overflow:hidden; text-overflow:ellipsis;
             border-right:1px solid var(--line); height:100%; line-height:30px; z-index:1; }
.lane-track { position:relative; height:100%; flex:none; }
.mk { position:absolute; top:7px; width:14px; height:14px; border-radius:3px; border:none;
      padding:0; cursor:pointer; background:var(--inc); }
.mk.ev { background:var(--ev); } .mk.task { background:var(--task); }
.mk.appr { background:var(--appr); } .mk.act { background:var(--act); }
.mk.bad { background:var(--bad); }
.mk.selected { outline:3px solid #000; outline-offset:1px; }
table { border-collapse:collapse; width:100%; background:#fff; }
th, td { text-align:left; padding:3px 6px; border-bottom:1px solid var(--line);
         vertical-align:top; }
th { color:var(--muted); font-weight:500; position:sticky; top:0; background:#fff; }
#timeline tr { cursor:pointer; } #timeline tr:hover td { background:#f2f5fb; }
#timeline tr.selected td { background:var(--sel); }
td.num, td.pt { white-space:nowrap; font-variant-numeric:tabular-nums; }
pre { white-space:pre-wrap; word-break:break-word; background:#f5f5f7; padding:8px;
      border-radius:4px; margin:4px 0; font-size:12px; max-height:420px; overflow:auto; }
.kv td:first-child { color:var(--muted); width:110px; }
.call { border:1px solid var(--line); border-radius:6px; padding:6px 8px; margin:6px 0; }
.flag { display:inline-block; padding:0 6px; border-radius:8px; background:#eee; margin-left:4px;
        font-size:12px; }
.flag.bad { background:#fbe0de; color:var(--bad); }
.empty { color:var(--muted); }
</style>
</head>
<body>
<script type="application/json" id="run-data">{{DATA}}</script>
<header>
  <h1 id="title"></h1>
  <div class="meta" id="meta"></div>
</header>
<main>
  <div class="left">
    <h2>Incidents</h2>
    <div id="incidents"></div>
    <div id="filters">
      <label>agent <select id="f-agent"><option value="">all</option></select></label>
      <label>incident <select id="f-incident"><option value="">all</option></select></label>
      <label>type <input id="f-type" placeholder="e.g. task. or diagnosis" size="18"></label>
      <span id="f-count" class="empty"></span>
    </div>
    <h2>Agents</h2>
    <div id="lanes"></div>
    <h2>Timeline</h2>
    <table id="timeline"><thead><tr><th>#</th><th>plant time</th><th>from</th><th>to</th>
      <th>type</th><th>summary</th></tr></thead><tbody></tbody></table>
  </div>
  <aside id="details"><h2>Message</h2><p class="empty">Click a message to see its payload,
    the model calls behind it, and the actions and approvals it is about.</p></aside>
</main>
<script>
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("run-data").textContent);
  var PX = 18;
  var bySeq = {}; D.steps.forEach(function (s) { bySeq[s.seq] = s; });
  var byId = {}; D.steps.forEach(function (s) { byId[s.id] = s; });
  var shown = D.steps.slice(); var selected = null;

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) { Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); }); }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function hms(t) {
    t = Math.floor(t || 0);
    function p(n) { return (n < 10 ? "0" : "") + n; }
    return p(Math.floor(t / 3600)) + ":" + p(Math.floor(t % 3600 / 60)) + ":" + p(t % 60);
  }
  function family(type) {
    if (type === "task.assigned") { return "task"; }
    if (type.indexOf("approval.") === 0) { return "appr"; }
    if (type === "action.executed") { return "act"; }
    if (type === "task.failed" || type === "message.dead") { return "bad"; }
    if (type === "incident.updated") { return "inc"; }
    return "ev";
  }

  // header
  var r = D.run;
  document.getElementById("title").textContent = "Run " + r.id + " \u2014 " + r.scenario;
  var meta = document.getElementById("meta");
  function m(label, value) {
    var s = el("span"); s.appendChild(document.createTextNode(label + " "));
    s.appendChild(el("b", null, value)); meta.appendChild(s);
  }
  m("status", r.status); m("seed", r.seed); m("plant time", hms(r.plant_time));
  m("messages", D.steps.length); m("incidents", D.incidents.length);
  m("model calls", D.usage.calls); m("tokens", D.usage.tokens);
  m("cost", "$" + Number(D.usage.cost_usd).toFixed(6));
  m("model latency", Number(D.usage.latency_ms).toFixed(0) + " ms");
  if (r.parent_run_id) { m("fork of", r.parent_run_id + " from " + r.fork_from_message_id); }

  // incidents
  var incBox = document.getElementById("incidents");
  if (!D.incidents.length) { incBox.appendChild(el("p", {"class": "empty"}, "no incidents")); }
  D.incidents.forEach(function (i) {
    var c = el("div", {"class": "incident", "data-incident": i.id, "id": "incident-" + i.id});
    c.appendChild(el("div", null, i.id + " on " + i.device_id));
    c.appendChild(el("div", {"class": "st " + i.status}, i.status +
      (i.outcome && i.outcome !== i.status ? " (" + i.outcome + ")" : "")));
    c.appendChild(el("div", null, "root cause: " + i.root_cause +
      (i.confidence !== null ? " (" + Number(i.confidence).toFixed(2) + ")" : "")));
    c.appendChild(el("div", null, "detected " + hms(i.detected_at) + ", resolved " +
      (i.resolved_at !== null ? hms(i.resolved_at) : "-")));
    if (i.escalation_reason) {
      c.appendChild(el("div", null, "escalated: " + i.escalation_reason));
    }
    c.addEventListener("click", function () {
      document.getElementById("f-incident").value = i.id; apply();
      if (i.first_seq !== null) { select(i.first_seq); }
    });
    incBox.appendChild(c);
  });

  // filters
  var fa = document.getElementById("f-agent"), fi = document.getElementById("f-incident");
  var ft = document.getElementById("f-type");
  D.agents.forEach(function (a) { fa.appendChild(el("option", {"value": a}, a)); });
  D.incidents.forEach(function (i) { fi.appendChild(el("option", {"value": i.id}, i.id)); });
  [fa, fi].forEach(function (x) { x.addEventListener("change", apply); });
  ft.addEventListener("input", apply);

  function apply() {
    shown = D.steps.filter(function (s) {
      return (!fa.value || s.source === fa.value) && (!fi.value || s.incident === fi.value) &&
        (!ft.value || s.type.indexOf(ft.value) === 0);
    });
    document.getElementById("f-count").textContent = shown.length + " of " + D.steps.length +
      " messages";
    drawLanes(); drawTable(); mark();
  }

  function drawLanes() {
    var box = document.getElementById("lanes"); box.textContent = "";
    var width = Math.max(shown.length * PX + PX, 200);
    D.agents.forEach(function (a) {
      var lane = el("div", {"class": "lane", "data-agent": a});
      lane.appendChild(el("div", {"class": "lane-name", "title": a}, a));
      var track = el("div", {"class": "lane-track"}); track.style.width = width + "px";
      shown.forEach(function (s, k) {
        if (s.source !== a) { return; }
        var b = el("button", {"class": "mk " + family(s.type), "data-seq": s.seq,
          "title": "#" + s.seq + " " + hms(s.t) + " " + s.type + " \u2192 " + s.receiver +
          ": " + s.summary});
        b.style.left = (k * PX + 4) + "px";
        b.addEventListener("click", function () { select(s.seq); });
        track.appendChild(b);
      });
      lane.appendChild(track); box.appendChild(lane);
    });
  }

  function drawTable() {
    var body = document.querySelector("#timeline tbody"); body.textContent = "";
    shown.forEach(function (s) {
      var tr = el("tr", {"data-seq": s.seq, "id": "row-" + s.seq});
      tr.appendChild(el("td", {"class": "num"}, s.seq));
      tr.appendChild(el("td", {"class": "pt"}, hms(s.t)));
      tr.appendChild(el("td", null, s.source));
      tr.appendChild(el("td", null, s.receiver));
      tr.appendChild(el("td", null, s.type));
      tr.appendChild(el("td", null, s.summary));
      tr.addEventListener("click", function () { select(s.seq); });
      body.appendChild(tr);
    });
  }

  function mark() {
    document.querySelectorAll(".selected").forEach(function (x) {
      x.classList.remove("selected"); });
    if (selected === null) { return; }
    document.querySelectorAll('[data-seq="' + selected + '"]').forEach(function (x) {
      x.classList.add("selected"); });
  }

  function kv(table, k, v) {
    var tr = el("tr"); tr.appendChild(el("td", null, k)); tr.appendChild(el("td", null, v));
    table.appendChild(tr);
  }
  function json(v) { return JSON.stringify(v, null, 2); }

  function select(seq) {
    var s = bySeq[seq]; if (!s) { return; }
    selected = seq; mark();
    if (history.replaceState) { history.replaceState(null, "", "#m-" + seq); }
    var box = document.getElementById("details"); box.textContent = "";
    box.appendChild(el("h2", {"id": "detail-title"}, "#" + s.seq + " " + s.type));
    var env = el("table", {"class": "kv", "id": "detail-envelope"});
    kv(env, "from \u2192 to", s.source + " \u2192 " + s.receiver);
    kv(env, "subject", s.subject); kv(env, "plant time", hms(s.t) + " (" + s.t + " s)");
    kv(env, "time", s.time); kv(env, "incident", s.incident || "-"); kv(env, "id", s.id);
    var cause = s.cause ? byId[s.cause] : null;
    kv(env, "caused by", cause ? "#" + cause.seq + " " + cause.type : (s.cause || "-"));
    kv(env, "summary", s.summary);
    box.appendChild(env);
    if (cause) {
      var a = el("a", {"href": "#m-" + cause.seq}, "go to the cause");
      a.addEventListener("click", function (e) { e.preventDefault(); select(cause.seq); });
      box.appendChild(a);
    }
    box.appendChild(el("h2", null, "Payload"));
    box.appendChild(el("pre", {"id": "detail-payload"}, json(s.payload)));
    box.appendChild(el("h2", null, "Model calls (" + s.model_calls.length + ")"));
    if (!s.model_calls.length) { box.appendChild(el("p", {"class": "empty"}, "none")); }
    s.model_calls.forEach(function (c, n) {
      var d = el("div", {"class": "call", "data-call": n});
      var head = el("div", null, (n + 1) + ". " + c.model_group + " / " + c.deployment + " (" +
        c.model + "): " + c.prompt_tokens + "+" + c.completion_tokens + " tokens, " +
        Number(c.latency_ms).toFixed(1) + " ms, $" + Number(c.cost_usd).toFixed(6));
      if (!c.ok) { head.appendChild(el("span", {"class": "flag bad"}, "failed")); }
      if (c.fallback) { head.appendChild(el("span", {"class": "flag"}, "fallback")); }
      if (c.repaired) { head.appendChild(el("span", {"class": "flag"}, "repaired")); }
      if (c.degraded_reason) {
        head.appendChild(el("span", {"class": "flag bad"}, "degraded: " + c.degraded_reason));
      }
      d.appendChild(head);
      if (c.error) { d.appendChild(el("div", {"class": "empty"}, "error: " + c.error)); }
      var pd = el("details"); pd.appendChild(el("summary", null, "prompt"));
      (c.prompt || []).forEach(function (pm) {
        pd.appendChild(el("div", null, pm.role));
        pd.appendChild(el("pre", {"class": "prompt"}, typeof pm.content === "string" ?
          pm.content : json(pm.content)));
      });
      d.appendChild(pd);
      var rd = el("details", {"open": ""}); rd.appendChild(el("summary", null, "response"));
      rd.appendChild(el("pre", {"class": "response"}, c.response));
      d.appendChild(rd);
      box.appendChild(d);
    });
    if (s.actions.length) {
      box.appendChild(el("h2", null, "Actions and actuator receipts"));
      s.actions.forEach(function (a) { box.appendChild(el("pre", {"class": "action"}, json(a))); });
    }
    if (s.approvals.length) {
      box.appendChild(el("h2", null, "Approvals"));
      s.approvals.forEach(function (a) { box.appendChild(el("pre", {"class": "approval"},
        json(a))); });
    }
  }

  document.addEventListener("keydown", function (e) {
    if (e.target && (e.target.tagName === "INPUT" || e.target.tagName === "SELECT")) { return; }
    var k = shown.map(function (s) { return s.seq; }).indexOf(selected);
    if (e.key === "n" || e.key === "ArrowDown") { k = Math.min(k + 1, shown.length - 1); }
    else if (e.key === "p" || e.key === "ArrowUp") { k = Math.max(k - 1, 0); }
    else { return; }
    if (shown[k]) { select(shown[k].seq); e.preventDefault(); }
  });

  apply();
  var h = /^#m-(\d+)$/.exec(location.hash || "");
  if (h) { select(Number(h[1])); }
})();
</script>
</body>
</html>
"""

__all__ = ["TEMPLATE"]
