// corral web UI: the task panel at the bottom of every page (as Proxmox's task log): what
// happens, newest first, the last 50 entries. It starts from /ui/events/recent and then
// follows the page's event stream (ui.js hands each event on as "corral:event"); an
// operation is one entry whose progress moves in place. The list is a polite live region
// that announces new entries only (aria-relevant="additions"), not each progress step.
(function () {
  "use strict";

  var MAX = 50;
  var TONES = { running: "ok", up: "ok", ready: "ok", active: "ok",
    stopped: "idle", maintenance: "idle",
    paused: "warn", "shutting-down": "warn", unknown: "warn", unresponsive: "warn",
    creating: "busy", deleting: "busy", fencing: "busy",
    crashed: "bad", error: "bad", failure: "bad", down: "bad", fenced: "bad" };
  var OP_TONES = { pending: "idle", running: "busy", success: "ok", failure: "bad",
    cancelled: "idle" };
  var DONE = { success: 1, failure: 1, cancelled: 1 };

  function when(text) {  // the engine's times are UTC; an older one may lack its zone
    return new Date(/[zZ]|[+-]\d\d:?\d\d$/.test(text) ? text : text + "Z");
  }

  // An event -> what its entry says; an operation's entries share its key.
  function describe(ev) {
    var d = ev.data || {};
    if (ev.type === "operation") {
      var res = d.resources || {};
      var what = (res.vms || res.hosts || Object.keys(res).map(function (k) {
        return res[k][0]; }) || [])[0] || "";
      var note = d.status === "failure" ? (d.error && d.error.message) || d.message : d.message;
      return { key: "op:" + d.id, what: d.type + (what ? " " + what : ""), status: d.status,
        tone: OP_TONES[d.status] || "idle", note: note || "",
        progress: DONE[d.status] ? null : (d.progress || 0) };
    }
    var name = d.name || d.vm || d.host || "";
    var status = d.state || d.status || d.event || (d.shared !== undefined
      ? (d.shared ? "shared" : "not shared") : "");
    var label = { vm: "VM", host: "Host", ha: "HA", domain: "Domain" }[ev.type] || ev.type;
    var note = d.message || (d.host && ev.type === "vm" ? "on " + d.host : "");
    return { key: ev.type + ":" + name + ":" + ev.time, what: label + " " + name,
      status: String(status), tone: TONES[status] || "idle", note: note || "",
      progress: null };
  }

  // An entry's parts are made once; an operation's updates change their text and
  // attributes only (no node added: the live region does not announce each step).
  function make(li) {
    var time = document.createElement("time");
    var badge = document.createElement("span");
    var what = document.createElement("span");
    var note = document.createElement("span");
    var bar = document.createElement("progress");
    badge.className = "badge";
    what.className = "task-what";
    note.className = "task-note muted";
    bar.max = 100;
    li.append(time, " ", badge, " ", what, " ", note, " ", bar);
  }

  function fill(li, ev, info) {
    var time = li.querySelector("time"), badge = li.querySelector(".badge");
    var at = when(ev.time);
    time.dateTime = at.toISOString();
    time.textContent = at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit",
      second: "2-digit" });
    badge.className = "badge " + info.tone;
    badge.textContent = info.status || "event";
    li.querySelector(".task-what").textContent = info.what;
    var note = li.querySelector(".task-note");
    note.textContent = info.note;
    note.hidden = !info.note;
    var bar = li.querySelector("progress");
    bar.hidden = info.progress === null;
    if (info.progress !== null) {
      bar.value = info.progress;
      bar.setAttribute("aria-label", info.what + ": " + info.progress + "%");
    }
    li.dataset.status = info.status;
  }

  function setUp() {
    var panel = document.getElementById("tasks");
    if (!panel) return;
    var list = panel.querySelector("ol");
    var count = panel.querySelector("[data-running]");
    var phone = window.matchMedia && window.matchMedia("(max-width: 720px)").matches;
    var stored = null;
    try { stored = window.localStorage.getItem("corral.tasks"); } catch (e) { /* private */ }
    // collapsed until opened (it covers the page's bottom), and always at phone width and
    // beside a console (they want the room); opened once, it stays open on the next pages
    var roomy = !phone && !document.querySelector(".card.console");
    panel.open = roomy && stored === "open";
    panel.dataset.ready = "yes";
    panel.addEventListener("toggle", function () {
      if (!roomy) return;
      try { window.localStorage.setItem("corral.tasks", panel.open ? "open" : "closed"); }
      catch (e) { /* private mode: not remembered */ }
    });

    function entry(key) {
      return list.querySelector('li[data-key="' + CSS.escape(key) + '"]');
    }
    function recount() {
      var running = list.querySelectorAll("li progress:not([hidden])").length;
      count.textContent = running ? running + " running" : "";
      var empty = list.querySelector(".task-empty");
      if (empty && list.children.length > 1) empty.remove();
    }
    // newest: at the top (an operation seen before stays where it is, its content new)
    function show(ev, older) {
      if (ev.type === "domain") return;  // libvirt's view of what the VM events say already
      var info = describe(ev);
      var li = entry(info.key);
      if (li) {
        if (!older) fill(li, ev, info);
      } else {
        li = document.createElement("li");
        li.className = "task";
        li.dataset.key = info.key;
        make(li);
        fill(li, ev, info);
        if (older) list.append(li); else list.prepend(li);
        while (list.children.length > MAX) list.lastElementChild.remove();
      }
      recount();
    }

    document.addEventListener("corral:event", function (e) { show(e.detail, false); });
    fetch(panel.dataset.recent, { credentials: "same-origin",
      headers: { Accept: "application/json", "X-Corral-Background": "1" } })
      .then(function (r) { return r.ok ? r.json() : []; })
      .then(function (events) { events.forEach(function (ev) { show(ev, true); }); })
      .catch(function () { /* the stream still fills it */ });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", setUp);
  } else {
    setUp();
  }
})();
