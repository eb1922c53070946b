// The graphical console (templates/display.html): noVNC over the engine's VNC WebSocket,
// with a one-use ticket as the serial console has; reconnects when the VM restarts.
import RFB from "/static/vendor/novnc/core/rfb.js";

const screen = document.getElementById("screen");
const status = document.getElementById("console-status");
const cad = document.getElementById("send-cad");
let rfb = null;
let tries = 0;
let leaving = false;

function say(text, kind) {
  status.textContent = text;
  status.className = "badge " + kind;
}

function retry(why) {
  tries += 1;
  const wait = Math.min(tries, 5);
  say(`Disconnected (${why}), retrying in ${wait} s`, "warn");
  setTimeout(connect, wait * 1000);
}

async function connect() {
  say("Connecting…", "busy");
  let answer;
  try {
    answer = await fetch(screen.dataset.ticketUrl, {
      method: "POST", body: new URLSearchParams({ kind: "vnc" }), credentials: "same-origin",
      headers: { "X-CSRF-Token": screen.dataset.csrf, "X-Corral-Background": "1" },
    });
  } catch (err) {
    retry(String(err.message || err));
    return;
  }
  if (answer.status === 401 || answer.redirected) { location.reload(); return; }
  if (answer.status === 403 || answer.status === 404) {
    say(answer.status === 403 ? "Not allowed" : "No such VM", "bad");
    return;
  }
  if (!answer.ok) { retry(`ticket: ${answer.status}`); return; }
  const ticket = await answer.json();
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  rfb = new RFB(screen, scheme + location.host + ticket.url);
  rfb.scaleViewport = true;  // the guest's screen fits the page, phones included
  rfb.focusOnClick = true;
  rfb.addEventListener("connect", () => {
    tries = 0;
    cad.disabled = false;
    say("Connected", "ok");
  });
  rfb.addEventListener("disconnect", (evt) => {
    rfb = null;
    cad.disabled = true;
    if (!leaving) retry(evt.detail.clean ? "VM not running?" : "connection lost");
  });
}

cad.addEventListener("click", () => { if (rfb) rfb.sendCtrlAltDel(); });
window.addEventListener("pagehide", () => {
  leaving = true;
  if (rfb) rfb.disconnect();
});
connect();
