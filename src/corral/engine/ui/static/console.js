// The serial console (templates/console.html): xterm.js over the API's console WebSocket.
// A ticket first (a POST with the page's CSRF token: the session and vm.console), then the
// WebSocket with it; when the WebSocket ends (the VM stopped, the engine restarted) the
// page asks for a new ticket and reconnects, waiting a little longer each time (<= 5 s).
(function () {
  "use strict";
  var box = document.getElementById("terminal");
  var status = document.getElementById("console-status");
  if (!box || !window.Terminal || !window.FitAddon) return;

  var term = new window.Terminal({
    cursorBlink: true, scrollback: 5000, fontSize: 14,
    fontFamily: "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace",
    theme: { background: "#0f1420", foreground: "#e6e9ef", cursor: "#f0a500" }
  });
  var fit = new window.FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(box);
  fit.fit();
  window.addEventListener("resize", function () { fit.fit(); });
  var input = box.querySelector("textarea");
  if (input) input.setAttribute("aria-label", "Serial console of VM " + box.dataset.vm);

  var socket = null, tries = 0, leaving = false, encoder = new TextEncoder();

  function say(text, kind) {
    status.textContent = text;
    status.className = "badge " + kind;
  }

  function connect() {
    say("Connecting…", "busy");
    var body = new URLSearchParams({ kind: "serial" });
    fetch(box.dataset.ticketUrl, {
      method: "POST", body: body, credentials: "same-origin",
      headers: { "X-CSRF-Token": box.dataset.csrf, "X-Corral-Background": "1" }
    }).then(function (answer) {
      if (answer.status === 401 || answer.redirected) { location.reload(); return null; }
      if (answer.status === 403 || answer.status === 404) {
        say(answer.status === 403 ? "Not allowed" : "No such VM", "bad");
        return null;  // no point in trying again
      }
      if (!answer.ok) throw new Error("ticket: " + answer.status);
      return answer.json();
    }).then(function (ticket) { if (ticket) open(ticket.url); })
      .catch(function (err) { retry(String(err.message || err)); });
  }

  function open(path) {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + path);
    socket.binaryType = "arraybuffer";
    var mine = socket;
    // Connected once the guest's bytes flow, or the socket stayed open a moment: the
    // engine accepts before its agent finds whether the VM runs at all.
    function live() {
      if (socket !== mine || status.textContent === "Connected") return;
      tries = 0;
      say("Connected", "ok");
    }
    socket.onopen = function () { setTimeout(live, 1500); term.focus(); };
    socket.onmessage = function (msg) {
      live();
      term.write(typeof msg.data === "string" ? msg.data : new Uint8Array(msg.data));
    };
    socket.onclose = function (evt) {
      socket = null;
      if (!leaving) retry(evt.reason || "VM not running?");
    };
  }

  function retry(why) {
    tries += 1;
    var wait = Math.min(tries, 5);
    say("Disconnected (" + why + "), retrying in " + wait + " s", "warn");
    setTimeout(connect, wait * 1000);
  }

  term.onData(function (data) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(encoder.encode(data));
  });
  window.addEventListener("pagehide", function () {
    leaving = true;
    if (socket) socket.close();
  });
  connect();
})();
