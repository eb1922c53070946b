// corral web UI: live CPU, memory, disk and network graphs (uPlot, from npm). Each
// [data-graphs] section names a stats URL (/ui/vms/NAME/stats, /ui/hosts/NAME/stats: the
// API's series of [unix time, value]); it is fetched again every 5 s while the page shows.
(function () {
  "use strict";

  var POLL_MS = 5000;
  // figure -> the series it draws: [metric, label, colour]
  var GRAPHS = {
    cpu: [["cpu_percent", "CPU", "#2155c9"]],
    memory: [["memory_bytes", "used", "#177245"]],
    disk: [["disk_read_bps", "read", "#2155c9"], ["disk_write_bps", "write", "#b42318"]],
    net: [["net_rx_bps", "in", "#2155c9"], ["net_tx_bps", "out", "#8a5a00"]]
  };

  function human(value, unit) {
    if (value === null || value === undefined) return "–";
    if (unit === "%") return value.toFixed(1) + " %";
    var suffix = unit === "bytes/s" ? "/s" : "";
    var prefixes = ["B", "KiB", "MiB", "GiB", "TiB"];
    var i = 0;
    while (Math.abs(value) >= 1024 && i < prefixes.length - 1) { value /= 1024; i += 1; }
    var digits = i === 0 || Math.abs(value) >= 10 ? 0 : 1;  // short: the axis is narrow
    return value.toFixed(digits) + " " + prefixes[i] + suffix;
  }

  // uPlot's data: [times, values of each series], on the times of the first series
  function columns(stats, series) {
    var first = (stats.series[series[0][0]] || { points: [] }).points;
    var data = [first.map(function (p) { return p[0]; })];
    series.forEach(function (s) {
      var points = (stats.series[s[0]] || { points: [] }).points;
      data.push(points.map(function (p) { return p[1]; }));
    });
    return data;
  }

  function makeChart(figure, series, unit) {
    var width = Math.max(220, figure.clientWidth - 4);
    var opts = {
      width: width, height: 150, legend: { show: false }, cursor: { show: true },
      scales: { y: { range: function (u, min, max) {
        return [0, unit === "%" ? Math.max(100, max) : Math.max(max * 1.1, 1)];
      } } },
      axes: [{ stroke: "#5b6678" },
             { stroke: "#5b6678", size: 84, values: function (u, ticks) {
               return ticks.map(function (t) { return human(t, unit); });
             } }],
      series: [{}].concat(series.map(function (s) {
        return { label: s[1], stroke: s[2], width: 2, fill: s[2] + "1f",
                 value: function (u, v) { return human(v, unit); } };
      }))
    };
    var chart = new window.uPlot(opts, [[]].concat(series.map(function () { return []; })), figure);
    chart.root.setAttribute("role", "img");
    chart.root.setAttribute("aria-label", figure.querySelector("figcaption").textContent.trim());
    return chart;
  }

  function start(section) {
    var charts = {};
    var note = section.querySelector("[data-graphs-note]");

    function draw(stats) {
      var any = false;
      Object.keys(GRAPHS).forEach(function (name) {
        var figure = section.querySelector('[data-graph="' + name + '"]');
        if (!figure) return;
        var series = GRAPHS[name];
        var unit = (stats.series[series[0][0]] || {}).unit || "";
        var data = columns(stats, series);
        if (data[0].length) any = true;
        if (!charts[name]) charts[name] = makeChart(figure, series, unit);
        charts[name].setData(data);
        var now = series.map(function (s, i) {
          var values = data[i + 1];
          return human(values.length ? values[values.length - 1] : null, unit);
        }).join(" / ");
        figure.querySelector("[data-now]").textContent = now;
      });
      section.dataset.drawn = any ? "yes" : "no";
      var waiting = stats.kind === "host" ? "No samples yet: they come every 5 s from the host's agent."
        : "No samples yet: a running VM's first come after about 10 s.";
      note.textContent = any ? "" : (stats.host ? waiting : "Not running on any host: nothing to measure.");
      note.hidden = any;
    }

    function poll() {
      if (document.hidden) { setTimeout(poll, POLL_MS); return; }
      fetch(section.dataset.graphs, { credentials: "same-origin",
        headers: { Accept: "application/json", "X-Corral-Background": "1" } })
        .then(function (resp) {
          if (!resp.ok) throw new Error("the engine answered " + resp.status);
          return resp.json();
        })
        .then(draw)
        .catch(function (err) { note.hidden = false; note.textContent = "Graphs unavailable: " + err.message; })
        .finally(function () { setTimeout(poll, POLL_MS); });
    }

    window.addEventListener("resize", function () {
      Object.keys(charts).forEach(function (name) {
        var figure = section.querySelector('[data-graph="' + name + '"]');
        charts[name].setSize({ width: Math.max(220, figure.clientWidth - 4), height: 150 });
      });
    });
    poll();
  }

  function init() {
    if (!window.uPlot || !window.fetch) return;  // no graphs, the page still works
    document.querySelectorAll("[data-graphs]").forEach(start);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
