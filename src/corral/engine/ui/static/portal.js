// corral web UI, the user portal's parts: the create form's early quota warning (the
// server checks again and says it next to the field), its project switch, the snapshot
// tree refreshed when a snapshot operation ends, and confirmation of plain-post forms.
(function () {
  "use strict";

  var SIZE = { K: 1 << 10, M: 1 << 20, G: 1 << 30, T: 1024 * (1 << 30) };
  function bytes(text, unit) {  // "512M", "2G", "1024" (in unit) -> bytes; NaN when not
    var m = /^\s*(\d+(?:\.\d+)?)\s*([KMGT])?i?B?\s*$/i.exec(text || "");
    if (!m) return NaN;
    return parseFloat(m[1]) * SIZE[(m[2] || unit).toUpperCase()];
  }

  function quotaWarning(form) {
    var data;
    try { data = JSON.parse(form.dataset.quota); } catch (e) { return; }
    var note = document.getElementById("quota-warn");
    var source = form.querySelector("#n-source");
    var picked = source && source.selectedOptions[0];
    var asked = {
      vms: 1,
      vcpus: parseInt(form.querySelector("#n-cpus").value, 10),
      memory: bytes(form.querySelector("#n-memory").value, "M"),
      disk: form.querySelector("#n-disk").value.trim()
        ? bytes(form.querySelector("#n-disk").value, "G")
        : (picked && parseInt(picked.dataset.size || "0", 10)) || 0
    };
    var over = [];
    Object.keys(data).forEach(function (quota) {
      var use = data[quota][0], limit = data[quota][1];
      if (limit !== null && asked[quota] > 0 && use + asked[quota] > limit) over.push(quota);
    });
    if (note) {
      note.textContent = over.length
        ? "Over the project's quota: " + over.join(", ") + ". The engine will refuse it."
        : "";
      note.className = over.length ? "warn-text" : "muted";
    }
  }

  function setUp() {
    var form = document.getElementById("vm-new");
    if (form) {
      form.addEventListener("input", function () { quotaWarning(form); });
      quotaWarning(form);
      var project = form.querySelector("[data-reload]");
      if (project) project.addEventListener("change", function () {
        window.location = project.dataset.reload + encodeURIComponent(project.value);
      });
    }
  }

  // A snapshot's operation ended: its tree is fetched again (hx-trigger on the section).
  document.addEventListener("htmx:load", function (evt) {
    var op = evt.detail.elt;  // the new content: an operation's fragment that just ended
    if (!op || !op.dataset) return;
    if (op.hasAttribute("data-done") && /^vm\.snapshot\./.test(op.dataset.opType || "")) {
      document.body.dispatchEvent(new CustomEvent("snapshots-changed"));
    }
  });

  // The VM list's bulk stop names the ticked VMs in its confirmation.
  function bulkQuestion(form, submitter) {
    if (!form.dataset.confirmStop || !submitter || submitter.value !== "stop") return "";
    var names = [];
    document.querySelectorAll('input[name="vm"][form="bulk"]:checked').forEach(function (box) {
      names.push(box.value);
    });
    return names.length ? form.dataset.confirmStop.replace("{names}", names.join(", ")) : "";
  }

  // Forms posted without htmx (delete, bulk stop): our confirmation dialog, naming the object.
  document.addEventListener("submit", function (evt) {
    var form = evt.target;
    if (!form.dataset || form.dataset.confirmed) return;
    var question = form.dataset.confirm || bulkQuestion(form, evt.submitter);
    if (!question) return;
    var submitter = evt.submitter;
    var dialog = document.getElementById("confirm");
    if (!dialog || !dialog.showModal) {
      if (!window.confirm(question)) evt.preventDefault();
      return;
    }
    evt.preventDefault();
    document.getElementById("confirm-question").textContent = question;
    document.getElementById("confirm-ok").textContent =
      form.dataset.confirmLabel || (submitter && submitter.textContent.trim()) || "OK";
    dialog.returnValue = "";
    dialog.addEventListener("close", function () {
      if (dialog.returnValue !== "ok") return;
      form.dataset.confirmed = "1";
      if (form.requestSubmit && submitter) form.requestSubmit(submitter);  // keeps its value
      else form.submit();
    }, { once: true });
    dialog.showModal();
  });

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", setUp);
  } else {
    setUp();
  }
})();
