// corral web UI: live state from the engine's event stream, and confirmation dialogs.
// No framework beyond htmx; everything here also degrades: without JavaScript the forms
// post and the pages reload.
(function () {
  "use strict";

  // Live state: the stream says a VM changed -> fetch its fragments again (the server
  // renders them with the caller's rights; the event only says which).
  function startStream() {
    var url = document.body.dataset.stream;
    if (!url || !window.EventSource || !window.htmx) return;
    var source = new EventSource(url);
    // The engine ends the stream of a session that ended (idle, logged out elsewhere); the
    // browser's reconnection is then refused (the login page): the page goes there too.
    source.addEventListener("error", function () {
      if (source.readyState !== EventSource.CLOSED) return;  // it reconnects by itself
      fetch("/ui/events/recent", { credentials: "same-origin",
        headers: { "X-Corral-Background": "1" } })
        .then(function (r) { if (r.redirected && /\/login/.test(r.url)) location.reload(); })
        .catch(function () { /* the engine is away: nothing to do */ });
    });
    // every event also goes to the page's other parts (tasks.js: the task panel)
    ["operation", "vm", "host", "ha", "domain", "image", "network", "pool", "volume"]
      .forEach(function (type) {
        source.addEventListener(type, function (msg) {
          var event;
          try { event = JSON.parse(msg.data); } catch (e) { return; }
          document.dispatchEvent(new CustomEvent("corral:event", { detail: event }));
        });
      });
    // A row caught midway (a VM being created or deleted) may have missed its last event,
    // published before this stream opened: ask for it again once the stream is open; one
    // that is gone by then (404) leaves the list.
    source.addEventListener("open", function () {
      document.querySelectorAll("tr[data-live-vm][data-in-flux]").forEach(function (el) {
        fetch(el.dataset.liveUrl, { credentials: "same-origin",
          headers: { "X-Corral-Background": "1", "HX-Request": "true" } })
          .then(function (r) {
            if (r.status === 404) { el.remove(); return null; }
            return r.ok ? r.text() : null;
          })
          .then(function (html) {
            if (!html) return;
            var id = el.id;
            el.outerHTML = html;
            var fresh = document.getElementById(id);
            if (fresh) htmx.process(fresh);  // its buttons' hx- attributes
          })
          .catch(function () { /* the stream's next event mends it */ });
      });
    });
    source.addEventListener("vm", function (msg) {
      var event;
      try { event = JSON.parse(msg.data); } catch (e) { return; }
      var name = event.data && event.data.name;
      if (!name) return;
      document.querySelectorAll("[data-live-vm]").forEach(function (el) {
        if (el.dataset.liveVm !== name) return;
        if (event.data.state === "deleted") {
          if (el.tagName === "TR") el.remove();
          return;
        }
        htmx.ajax("GET", el.dataset.liveUrl, { target: el, swap: "outerHTML",
          headers: { "X-Corral-Background": "1" } });  // the stream's: keeps no session alive
      });
    });
  }

  // hx-confirm: our own dialog naming the object, instead of the browser's confirm().
  document.addEventListener("htmx:confirm", function (evt) {
    var question = evt.detail.question;
    if (!question) return;
    var dialog = document.getElementById("confirm");
    if (!dialog || !dialog.showModal) return;  // the browser's confirm() then
    evt.preventDefault();
    var elt = evt.detail.elt;
    document.getElementById("confirm-question").textContent = question;
    document.getElementById("confirm-ok").textContent =
      (elt.dataset && elt.dataset.confirmLabel) || "OK";
    dialog.returnValue = "";
    dialog.addEventListener("close", function () {
      if (dialog.returnValue === "ok") evt.detail.issueRequest(true);
      var button = elt.querySelector && elt.querySelector("button");
      if (button) button.focus();
    }, { once: true });
    dialog.showModal();
  });

  // A session that ended (expired, logged out elsewhere): htmx gets 401 + HX-Redirect and
  // follows it; an error answer to an action is shown in the activity panel.
  document.addEventListener("htmx:responseError", function (evt) {
    var panel = document.getElementById("activity");
    if (!panel || evt.detail.xhr.status === 401) return;
    var note = document.createElement("div");
    note.className = "op bad";
    note.setAttribute("role", "alert");
    var doc = new DOMParser().parseFromString(evt.detail.xhr.responseText, "text/html");
    var message = doc.querySelector("[role=alert]");
    note.textContent = message ? message.textContent : "The engine refused: " + evt.detail.xhr.status;
    panel.prepend(note);
    setTimeout(function () { note.remove(); }, 15000);
  });

  // Finished operations leave the activity panel after a while.
  document.addEventListener("htmx:afterSwap", function () {
    document.querySelectorAll("#activity .op.ok:not([data-leaving])").forEach(function (el) {
      el.dataset.leaving = "1";
      setTimeout(function () { el.remove(); }, 8000);
    });
  });

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", startStream);
  } else {
    startStream();
  }
})();
