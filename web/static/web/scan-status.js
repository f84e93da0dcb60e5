/* Live scan status: polls the scan API (GET /api/v1/scans/{id}/, the same site-scoped
   endpoint API clients use) every second and updates the page without reloading.
   Plain JavaScript, no library. */
(function () {
  "use strict";
  var FINAL = ["quantified", "rejected", "failed"];
  var ORDER = ["received", "validating", "validated", "reconstructing", "reconstructed", "quantified"];
  var TONE = { quantified: "good", rejected: "bad", failed: "bad", received: "neutral" };

  function $(id) { return document.getElementById(id); }

  function render(scan) {
    var badge = $("scan-badge");
    if (badge) {
      var inner = badge.querySelector(".badge") || badge;
      inner.textContent = scan.status;
      inner.className = "badge tone-" + (TONE[scan.status] || "progress");
      inner.setAttribute("data-status", scan.status);
    }
    var steps = $("scan-steps");
    if (steps) {
      var at = ORDER.indexOf(scan.status);
      Array.prototype.forEach.call(steps.children, function (li) {
        var i = ORDER.indexOf(li.getAttribute("data-step"));
        li.className = (scan.status === "failed" || scan.status === "rejected") && i === Math.max(at, 1) ? "failed"
          : i < at || scan.status === "quantified" ? "done" : i === at ? "current" : "";
        if (i === at) { li.setAttribute("aria-current", "step"); } else { li.removeAttribute("aria-current"); }
      });
    }
    var bar = $("scan-progress");
    if (bar) {
      var percent = scan.status === "quantified" || scan.status === "reconstructed" ? 100
        : ORDER.indexOf(scan.status) > ORDER.indexOf("reconstructing") ? 100
        : scan.status === "reconstructing" ? (scan.progress && scan.progress.percent) || 0 : 0;
      bar.value = percent;
      bar.textContent = Math.round(percent) + " %";
    }
    var stage = $("scan-stage");
    if (stage) {
      // The badge beside it already says the status: the stage line adds only what the
      // badge cannot (the reconstruction's progress), never the status again.
      stage.textContent = scan.status === "reconstructing" && scan.progress
        ? "reconstruction: " + scan.progress.stage + " · " + Math.round(scan.progress.percent) + " %"
        : "";
    }
    var reason = $("scan-reason");
    if (reason) {
      reason.hidden = !scan.status_reason;
      reason.textContent = scan.status_reason || "";
    }
    var metrics = $("scan-metrics");
    if (metrics && scan.status === "quantified") {
      var rows = $("scan-metrics-rows");
      rows.textContent = "";
      (scan.metrics || []).forEach(function (m) {
        var tr = document.createElement("tr");
        // The ROI's kind shows as its title: this card is narrow, the viewer has the full table.
        [m.roi_name, fmt(m.iron_ng, 1) + " ± " + fmt(m.uncertainty_ng, 1),
         m.roi_kind === "target" ? fmt(m.retention_percent, 1) + " %" : "—",
         m.off_target_percent === null ? "—" : fmt(m.off_target_percent, 1) + " %", m.detected ? "yes" : "no"]
          .forEach(function (text, i) {
            var td = document.createElement("td");
            td.textContent = text;
            if (i === 0) { td.title = m.roi_kind; }
            if (i >= 1 && i <= 3) { td.className = "num"; }
            tr.appendChild(td);
          });
        rows.appendChild(tr);
      });
      var s = scan.metrics_summary || {};
      $("scan-summary").textContent = "Retention " + fmt(s.retention_percent, 1) + " % ± " +
        fmt(s.retention_uncertainty_percent, 1) + " · off-target " + fmt(s.off_target_percent, 1) + " % of detected iron";
      metrics.hidden = false;
    }
  }

  function fmt(value, digits) {
    return value === null || value === undefined ? "—" : Number(value).toFixed(digits);
  }

  /* Poll until the scan reaches a final status; onFinal(scan) is called once. */
  function watch(scanId, onFinal) {
    var stopped = false;
    function tick() {
      fetch("/api/v1/scans/" + scanId + "/", { headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" })
        .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
        .then(function (scan) {
          render(scan);
          if (FINAL.indexOf(scan.status) >= 0) { stopped = true; if (onFinal) { onFinal(scan); } }
        })
        .catch(function () { /* a dropped poll: try again next second */ })
        .then(function () { if (!stopped) { setTimeout(tick, 1000); } });
    }
    tick();
  }

  window.MpiScanStatus = { watch: watch, render: render };

  var live = document.getElementById("live-status");
  if (live) {
    watch(live.getAttribute("data-scan"), function () {
      if (live.getAttribute("data-reload")) { window.location.reload(); }
    });
  }
})();
