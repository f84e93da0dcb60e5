/* The live injection page: draws a session's event stream (Server-Sent Events from
   GET /api/v1/live-sessions/{id}/events/) and, once the session has ended, its record
   (the stored live metrics, in the page's JSON data) with a replay at 1x / 4x.

   - image events: the maximum-intensity projection on a canvas through the same colour
     map as the scan viewer, with the regions' outlines and a colour bar in ng Fe;
   - metrics events: the curves (iron per region in ng Fe or % of the dose, and the
     off-target share with the threshold line) and the big numbers;
   - health events: the stream-health strip; a warning when the lag passes the budget or
     no event came for a few seconds;
   - alert events: the banner, acknowledged with a reason through
     POST /api/v1/live-alerts/{id}/acknowledge/ (session cookie + CSRF token);
   - mark events (and the Start / Pause / Resume / Stop injection buttons, which POST to
     /api/v1/live-sessions/{id}/marks/ with the CSRF token): vertical labelled lines on
     both curves, the marks table, the buttons enabled as the order rules allow;
   - ended: the page reloads as the session's record.
   EventSource reconnects by itself after a drop and sends Last-Event-ID, so no event is
   missed and the curves keep every point; a stream the server closed is reopened from
   the last event id. Plain JavaScript, no library; no inline script (the CSP holds). */
(function () {
  "use strict";

  var dataNode = document.getElementById("live-config");
  if (!dataNode) { return; }
  var cfg = JSON.parse(dataNode.textContent);
  var SVG_NS = "http://www.w3.org/2000/svg";
  var MAX_DRAWN = 1200;  // points per polyline (every k-th beyond)

  function $(id) { return document.getElementById(id); }
  function fmt(value, digits) {
    return value === null || value === undefined || !isFinite(value) ? "—" : Number(value).toFixed(digits);
  }
  // A time (epoch seconds) on the site's clock, as the server writes it: "14:03:22 CET".
  function siteClock(epoch) {
    var zone = cfg.time_zone || "UTC", at = new Date(epoch * 1000);
    var parts = {};
    new Intl.DateTimeFormat("en-GB", { timeZone: zone, hour: "2-digit", minute: "2-digit", second: "2-digit",
      hourCycle: "h23", timeZoneName: "longOffset" }).formatToParts(at)
      .forEach(function (p) { parts[p.type] = p.value; });
    var m = /GMT([+-])(\d\d):(\d\d)/.exec(parts.timeZoneName || "");
    var offset = m ? (m[1] === "-" ? -1 : 1) * (Number(m[2]) * 60 + Number(m[3])) : 0;
    var name = (cfg.zone_names || {})[String(offset)] || parts.timeZoneName || "UTC";
    return parts.hour + ":" + parts.minute + ":" + parts.second + " " + name;
  }

  function fmtNg(value) {
    if (value === null || value === undefined || !isFinite(value)) { return "—"; }
    if (value === 0) { return "0"; }
    var a = Math.abs(value);
    return a >= 1000 ? Math.round(value).toLocaleString("en-US") : a >= 10 ? value.toFixed(1) : value.toFixed(2);
  }

  // ------------------------------------------------------------------ shapes (colour plus shape)

  function shapePath(shape, cx, cy, r) {
    switch (shape) {
      case "square": return "M" + (cx - r) + " " + (cy - r) + "h" + 2 * r + "v" + 2 * r + "h" + -2 * r + "Z";
      case "triangle": return "M" + cx + " " + (cy - r * 1.15) + "L" + (cx + r * 1.1) + " " + (cy + r * 0.85) + "L" + (cx - r * 1.1) + " " + (cy + r * 0.85) + "Z";
      case "diamond": return "M" + cx + " " + (cy - r * 1.2) + "L" + (cx + r * 1.2) + " " + cy + "L" + cx + " " + (cy + r * 1.2) + "L" + (cx - r * 1.2) + " " + cy + "Z";
      case "cross": var t = r * 0.4; return "M" + (cx - t) + " " + (cy - r) + "h" + 2 * t + "v" + (r - t) + "h" + (r - t) + "v" + 2 * t + "h" + -(r - t) + "v" + (r - t) + "h" + -2 * t + "v" + -(r - t) + "h" + -(r - t) + "v" + -2 * t + "h" + (r - t) + "Z";
      case "star":
        var d = "";
        for (var i = 0; i < 10; i++) {
          var rr = i % 2 ? r * 0.45 : r * 1.15, a = Math.PI / 5 * i - Math.PI / 2;
          d += (i ? "L" : "M") + (cx + rr * Math.cos(a)).toFixed(2) + " " + (cy + rr * Math.sin(a)).toFixed(2);
        }
        return d + "Z";
      default: return "M" + (cx - r) + " " + cy + "a" + r + " " + r + " 0 1 0 " + 2 * r + " 0a" + r + " " + r + " 0 1 0 " + -2 * r + " 0Z";
    }
  }
  function el(name, attrs, parent) {
    var node = document.createElementNS(SVG_NS, name);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (parent) { parent.appendChild(node); }
    return node;
  }
  Array.prototype.forEach.call(document.querySelectorAll("svg.shape[data-shape]"), function (svg) {
    el("path", { d: shapePath(svg.getAttribute("data-shape"), 10, 10, 7.5), fill: svg.getAttribute("data-colour"), stroke: "#1d2733", "stroke-width": "1" }, svg);
  });

  // ------------------------------------------------------------------ state

  var regions = cfg.regions || [];
  var styleOf = {};
  regions.forEach(function (r) { styleOf[r.name] = r; });
  // sofar: the dose injected so far at each point (live.dose; null while not known or under
  // the minimum fraction of the dose), state: the injection at that point (the marks).
  var series = { t: [], frame: [], target: [], off: [], sofar: [], state: [], rois: {} };
  var t0 = cfg.started_at || null;
  var lastFrame = -1;
  var unit = "ng";
  var dirty = false;
  var lastEventAt = null;
  var lastHealth = cfg.health || {};
  var alerts = {};      // id -> alert
  var shownAlert = null;
  var colourMax = 0;    // the colour scale grows with the injection, never shrinks

  function styleFor(name, kind) {
    if (!styleOf[name]) {
      var spare = ["#0891b2", "#db2777", "#4d7c0f", "#1d4ed8"], i = Object.keys(styleOf).length;
      styleOf[name] = { name: name, kind: kind, colour: spare[i % spare.length], shape: ["cross", "star"][i % 2], off_target: kind !== "target" };
    }
    return styleOf[name];
  }

  function addPoint(m) {
    if (m.frame <= lastFrame) { return; }  // a resent event: already drawn
    lastFrame = m.frame;
    if (t0 === null) { t0 = m.acquired_at; }
    var n = series.t.length;
    series.t.push(m.acquired_at - t0);
    series.frame.push(m.frame);
    series.target.push(m.target_percent_of_injected);
    series.off.push(m.off_target_percent);
    var whole = m.dose_ng || cfg.injected_ng, d = m.dose_so_far_ng;
    series.sofar.push(d !== null && d !== undefined && whole > 0 && d >= (cfg.dose_min_fraction || 0) * whole ? d : null);
    series.state.push(m.injection_state || null);
    Object.keys(m.rois || {}).forEach(function (name) {
      var s = series.rois[name];
      if (!s) {
        styleFor(name, m.rois[name].kind);
        s = series.rois[name] = { kind: m.rois[name].kind, iron: [], lod: [] };
      }
      while (s.iron.length < n) { s.iron.push(null); }
      while (s.lod.length < n) { s.lod.push(null); }
      s.iron.push(m.rois[name].iron_ng);
      s.lod.push(m.rois[name].detection_limit_ng === undefined ? null : m.rois[name].detection_limit_ng);
    });
    dirty = true;
  }

  // ------------------------------------------------------------------ curves

  function niceStep(v) {
    if (!(v > 0)) { return 1; }
    var p = Math.pow(10, Math.floor(Math.log10(v))), f = v / p;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * p;
  }

  function drawChart(svg, lines, opts) {
    var W = svg.viewBox.baseVal.width, H = svg.viewBox.baseVal.height;
    var L = 78, R = 20, T = 26, B = 30;
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    var tMax = opts.tMax > 0 ? opts.tMax : 10;
    var yStep = niceStep((opts.yTop > 0 ? opts.yTop : 1) / 4);
    var yMax = Math.max(yStep, Math.ceil((opts.yTop > 0 ? opts.yTop : 1) / yStep - 1e-9) * yStep);
    if (opts.yCap) { yMax = Math.min(yMax, opts.yCap); }
    var x = function (t) { return L + (W - L - R) * t / tMax; };
    var y = function (v) { return T + (H - T - B) * (1 - v / yMax); };
    el("rect", { x: L, y: T, width: W - L - R, height: H - T - B, fill: "#fff", stroke: "#d5dde6" }, svg);
    for (var v = 0; v <= yMax + 1e-9; v += yStep) {
      el("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e3e8ee" }, svg);
      el("text", { x: L - 8, y: y(v) + 5, "text-anchor": "end", "font-size": "15", fill: "#3b4856" }, svg).textContent = opts.yFormat(v);
    }
    var step = niceStep(tMax / 8);
    for (var s = 0; s <= tMax + 1e-9; s += step) {
      el("text", { x: x(s), y: H - 8, "text-anchor": "middle", "font-size": "15", fill: "#3b4856" }, svg).textContent = s.toFixed(step < 1 ? 1 : 0) + (s === 0 ? " s" : "");
    }
    el("text", { x: L, y: T - 9, "font-size": "15", "font-weight": "600", fill: "#3b4856" }, svg).textContent = opts.yLabel;
    if (opts.threshold !== undefined) {
      el("line", { x1: L, x2: W - R, y1: y(opts.threshold), y2: y(opts.threshold), stroke: "#a32020", "stroke-width": "3", "stroke-dasharray": "12 7" }, svg);
      el("text", { x: W - R, y: T - 9, "text-anchor": "end", "font-size": "16", "font-weight": "700", fill: "#a32020" }, svg).textContent = "- - threshold " + opts.threshold + " %";
    }
    (opts.marks || []).forEach(function (m, k) {
      var mx = x(Math.max(0, Math.min(m.t, tMax)));
      el("line", { x1: mx, x2: mx, y1: T, y2: H - B, stroke: "#1d2733", "stroke-width": "2", "stroke-dasharray": "4 4" }, svg);
      var label = el("text", { x: mx + 4, y: T + 16 + 16 * (k % 2), "font-size": "14", "font-weight": "700", fill: "#1d2733" }, svg);
      label.textContent = MARK_SHORT[m.kind] || m.kind;
    });
    var ts = opts.t, upto = opts.upto;
    var every = Math.max(1, Math.ceil(upto / MAX_DRAWN));
    var picks = [];
    for (var i = 0; i < upto; i += every) { picks.push(i); }
    if (upto && picks[picks.length - 1] !== upto - 1) { picks.push(upto - 1); }
    lines.forEach(function (line) {
      var pts = [], last = null;
      picks.forEach(function (j) {
        var val = line.values[j];
        if (val === null || val === undefined || !isFinite(val)) { return; }
        var vv = Math.max(0, Math.min(val, yMax));
        pts.push(x(ts[j]).toFixed(1) + "," + y(vv).toFixed(1));
        last = [x(ts[j]), y(vv)];
      });
      if (pts.length) {
        el("polyline", { points: pts.join(" "), fill: "none", stroke: line.colour, "stroke-width": line.width || "3.5", "stroke-linejoin": "round" }, svg);
        el("path", { d: shapePath(line.shape, last[0], last[1], 8), fill: line.colour, stroke: "#1d2733", "stroke-width": "1" }, svg);
      }
    });
  }

  // A percent of a dose barely begun can reach hundreds: the axis stops here, the points above
  // it run along its top, the big number shows the value.
  var PERCENT_CAP = 200;

  function drawCurves(upto) {
    if (upto === undefined) { upto = series.t.length; }
    var tMax = upto ? series.t[upto - 1] : 0;
    var shownMarks = visibleMarks(upto);
    var percent = unit === "percent" && cfg.injected_ng;
    // % of the dose injected so far where it is known (live.dose); where no point has it
    // (no start mark), % of the whole dose, and the axis says which.
    var soFar = percent && series.sofar.slice(0, upto).some(function (d) { return d !== null && d !== undefined; });
    var lines = Object.keys(series.rois).map(function (name) {
      var st = styleFor(name, series.rois[name].kind);
      var values = series.rois[name].iron;
      if (percent) {
        values = values.map(function (v, i) {
          var base = soFar ? series.sofar[i] : cfg.injected_ng;
          return v === null || base === null || base === undefined ? null : 100 * v / base;
        });
      }
      return { colour: st.colour, shape: st.shape, values: values };
    });
    showBasis(upto - 1, percent, soFar);
    var top = 0;
    lines.forEach(function (l) { for (var i = 0; i < upto; i++) { if (l.values[i] > top) { top = l.values[i]; } } });
    drawChart($("curve-iron"), lines, {
      t: series.t, upto: upto, tMax: Math.max(tMax * 1.05, 10),
      yTop: top * 1.05, yCap: percent ? PERCENT_CAP : undefined, yLabel: percent ? (soFar ? "% of the dose injected so far" : "% of the whole dose (no start mark)") : "ng Fe", marks: shownMarks,
      yFormat: function (v) { return v === 0 ? "0" : percent ? (v < 10 ? v.toFixed(1) : v.toFixed(0)) : fmtNg(v); }
    });
    var offTop = cfg.threshold_percent * 1.25;
    for (var i = 0; i < upto; i++) { if (series.off[i] > offTop) { offTop = series.off[i]; } }
    drawChart($("curve-off"), [{ colour: "#dc2626", shape: "triangle", values: series.off }], {
      t: series.t, upto: upto, tMax: Math.max(tMax * 1.05, 10), yTop: offTop * 1.05, yCap: 100,
      yLabel: "% of detected iron off target", threshold: cfg.threshold_percent, marks: shownMarks, yFormat: function (v) { return v.toFixed(0) + " %"; }
    });
    showNumbers(upto - 1);
  }

  function setValue(node, text) {
    node.textContent = text;
    node.classList.toggle("long", text.length > 6);
    node.classList.toggle("longer", text.length > 9);  // words ("below detection"): still on one line
  }

  function targetSoFar(i) {
    /* The target regions' iron in % of the dose injected so far at point i (null: not known). */
    var base = series.sofar[i];
    if (base === null || base === undefined || !(base > 0)) { return null; }
    var sum = null;
    Object.keys(series.rois).forEach(function (name) {
      var s = series.rois[name], v = s.iron[i];
      if (s.kind === "target" && v !== null && v !== undefined && isFinite(v)) { sum = (sum || 0) + v; }
    });
    return sum === null ? null : 100 * sum / base;
  }

  function showBasis(i, percent, soFar) {
    /* The line under the unit toggle: which dose the percentages are of, and the dose so far. */
    var node = $("dose-basis");
    if (!node) { return; }
    var state = i >= 0 ? series.state[i] : null, d = i >= 0 ? series.sofar[i] : null;
    var text = "Dose " + (cfg.injected_ng ? fmtNg(cfg.injected_ng) + " ng Fe" : "unknown");
    if (d !== null && d !== undefined && cfg.injected_ng) {
      text += " · injected so far " + fmtNg(d) + " ng Fe (" + fmt(100 * d / cfg.injected_ng, 0) + " %)";
    } else if (cfg.injected_ng && (state === "running" || state === "paused")) {
      // Known but under the floor below which no percent of it is shown (live.dose.MIN_FRACTION).
      text += " · injected so far under " + fmt(100 * (cfg.dose_min_fraction || 0), 0) + " % of the dose";
    } else {
      text += " · injected so far: not known" + (state === "not started" || !state ? " (no start mark yet)" : "");
    }
    if (state) { text += " · injection " + state; }
    // Which planned duration and where it comes from (live.dose.planned_duration).
    var fromRecord = cfg.injection_expected_source === "the injection's record";
    text += " · " + (fromRecord ? "planned " : "platform default ") +
      (cfg.injection_expected_s > 0 ? fmt(cfg.injection_expected_s, cfg.injection_expected_s < 100 ? 1 : 0) + " s at a constant rate" : "0 s (a bolus)") +
      (fromRecord ? " (the injection's record)" : "");
    if (percent) { text += " · curves in % of the " + (soFar ? "dose injected so far" : "whole dose"); }
    node.textContent = text;
  }

  function showNumbers(i) {
    if (i < 0) { return; }
    var target = series.target[i], off = series.off[i];
    var sofar = targetSoFar(i);
    setValue($("value-target"), sofar !== null ? fmt(sofar, 1) + " %" : target === null || target === undefined ? "—" : fmt(target, 1) + " %");
    $("label-target").textContent = sofar !== null ? "at the target, % of the dose injected so far" : "at the target, % of the whole dose";
    setValue($("value-off"), off === null || off === undefined ? "below detection" : fmt(off, 1) + " %");
    var above = off !== null && off !== undefined && off > cfg.threshold_percent;
    $("stat-off").classList.toggle("above", above);
    $("state-off").textContent = off === null || off === undefined ? "" : above ? "▲ ABOVE" : "✓ below";
    Array.prototype.forEach.call(document.querySelectorAll(".big-stat.region"), function (tile) {
      var s = series.rois[tile.getAttribute("data-region")];
      // Below its detection limit a region's estimate is noise (it may even be negative):
      // say "not detected" and the limit, never a negative amount of iron.
      var lod = s && s.lod ? s.lod[i] : null;
      var undetected = s && lod !== null && lod !== undefined && s.iron[i] !== null && s.iron[i] < lod;
      setValue(tile.querySelector(".value"), !s ? "—" : undetected ? "< " + fmtNg(lod) : fmtNg(s.iron[i]));
      tile.classList.toggle("not-detected", !!undetected);
    });
  }

  Array.prototype.forEach.call(document.querySelectorAll("input[name=unit]"), function (input) {
    input.addEventListener("change", function () {
      unit = input.value;
      dirty = true;  // live: the next redraw
      if (cfg.record) { drawCurves(replay.on ? replay.upto : undefined); }  // the record: no redraw timer
    });
  });

  // ------------------------------------------------------------------ image

  var canvas = $("live-mip"), ctx = canvas ? canvas.getContext("2d") : null;
  var bar = $("live-colourbar"), barCtx = bar ? bar.getContext("2d") : null;
  var lutRgb = (cfg.lut || []).map(function (hex) { return [parseInt(hex.substr(1, 2), 16), parseInt(hex.substr(3, 2), 16), parseInt(hex.substr(5, 2), 16)]; });
  if (!lutRgb.length) { for (var g = 0; g < 256; g++) { lutRgb.push([g, g, g]); } }

  function decodeMip(ev) {
    /* -> {nx, ny, at(x, y)}. Either the worker's form: "mip_shape" [a, b] with the
       projection x-major (index x * b + y: the volume (nx, ny, nz) maximum along z), or,
       without mip_shape, row-major (ny rows of nx) as [nx, ny, nz] "shape" says; the data
       base64 little-endian float32 or a nested list of rows. */
    var raw = ev.mip_z !== undefined ? ev.mip_z : ev.mip;
    var xMajor = !!ev.mip_shape;
    var dims = ev.mip_shape || [ev.shape[1], ev.shape[0]];  // [rows, columns]
    var values;
    if (typeof raw === "string") {
      var bin = atob(raw), bytes = new Uint8Array(bin.length);
      for (var i = 0; i < bin.length; i++) { bytes[i] = bin.charCodeAt(i); }
      var view = new DataView(bytes.buffer);
      values = new Float32Array(bytes.length / 4);
      for (var j = 0; j < values.length; j++) { values[j] = view.getFloat32(4 * j, true); }
    } else if (Array.isArray(raw)) {
      dims = [raw.length, raw.length ? raw[0].length : 0];
      values = [];
      raw.forEach(function (row) { Array.prototype.push.apply(values, row); });
    } else { return null; }
    var rows = dims[0], cols = dims[1];
    if (values.length < rows * cols) { return null; }
    return xMajor
      ? { nx: rows, ny: cols, at: function (x, y) { return values[x * cols + y]; } }
      : { nx: cols, ny: rows, at: function (x, y) { return values[y * cols + x]; } };
  }

  function drawImage(ev) {
    if (!ctx) { return; }
    var mip = decodeMip(ev);
    if (!mip || !mip.nx || !mip.ny) { return; }
    var peak = ev.max_ng;
    if (!(peak >= 0)) { peak = 0; for (var x0 = 0; x0 < mip.nx; x0++) { for (var y0 = 0; y0 < mip.ny; y0++) { peak = Math.max(peak, mip.at(x0, y0)); } } }
    colourMax = Math.max(colourMax, peak, 1e-9);
    var size = Math.min(canvas.width, canvas.height);
    var cell = Math.max(1, Math.floor(size / Math.max(mip.nx, mip.ny)));
    var w = cell * mip.nx, h = cell * mip.ny;
    var ox = Math.floor((canvas.width - w) / 2), oy = Math.floor((canvas.height - h) / 2);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    for (var x = 0; x < mip.nx; x++) {
      for (var y = 0; y < mip.ny; y++) {
        var f = Math.max(0, Math.min(1, mip.at(x, y) / colourMax));
        var c = lutRgb[Math.min(255, Math.floor(f * 255))];
        ctx.fillStyle = "rgb(" + c[0] + "," + c[1] + "," + c[2] + ")";
        ctx.fillRect(ox + x * cell, oy + (mip.ny - 1 - y) * cell, cell, cell);  // +y up, as the scan viewer
      }
    }
    drawOutlines(ox, oy, w, h);
    drawSliceLine(ox, oy, cell, mip);
    drawColourBar();
    if (ev.shape && ev.shape[2] > 1) { sliceNewImage(ev); }
    $("image-caption").textContent = "Maximum-intensity projection (along z) of the last " + (ev.frames || "") +
      " frames up to frame " + ev.frame + " · " + mip.nx + " × " + mip.ny + " · peak " + fmtNg(peak) + " ng Fe per voxel · provisional (live)";
  }

  function drawOutlines(ox, oy, w, h) {
    var o = cfg.outlines;
    if (!o) { return; }
    var sx = w / o.grid[0], sy = h / o.grid[1];
    Object.keys(o.regions).forEach(function (name) {
      var st = styleFor(name, "");
      ctx.strokeStyle = st.colour;
      ctx.lineWidth = 3;
      ctx.setLineDash(st.kind === "target" ? [] : [6, 4]);  // target solid, off-target dashed: not colour alone
      ctx.beginPath();
      o.regions[name].forEach(function (s) {
        ctx.moveTo(ox + s[0] * sx, oy + h - s[1] * sy);
        ctx.lineTo(ox + s[2] * sx, oy + h - s[3] * sy);
      });
      ctx.stroke();
    });
    ctx.setLineDash([]);
  }

  // ------------------------------------------------------------------ the chosen slice (3D)
  /* A 3D session's latest volume stays on the server; the slice the user chose (plane x, y
     or z and its index: radio buttons, a slider, -/+ buttons, all keyboard operable) is
     fetched from GET /api/v1/live-sessions/{id}/slice/ after each image event, one request
     at a time: its bytes go only to a viewer who looks at it. */
  var sliceBox = $("slice-box"), sliceCanvas = $("live-slice");
  var sliceCtx = sliceCanvas ? sliceCanvas.getContext("2d") : null;
  var slice = { plane: "z", index: null, shape: null, busy: false, again: false, frame: null };
  var AXIS = { x: 0, y: 1, z: 2 };

  function sliceSize() { return slice.shape ? slice.shape[AXIS[slice.plane]] : 0; }

  function sliceControls() {
    var n = sliceSize(), range = $("slice-index");
    if (!range || !n) { return; }
    if (slice.index === null || slice.index >= n) { slice.index = Math.floor(n / 2); }
    range.max = String(n - 1);
    range.value = String(slice.index);
    $("slice-index-out").textContent = slice.plane + " = " + slice.index + " of 0–" + (n - 1);
  }

  function sliceNewImage(ev) {
    if (!sliceBox) { return; }
    var first = !slice.shape;
    slice.shape = ev.shape;
    if (first) { sliceBox.hidden = false; sliceControls(); }
    requestSlice();
  }

  function requestSlice() {
    if (!sliceBox || !slice.shape) { return; }
    if (slice.busy) { slice.again = true; return; }
    slice.busy = true;
    var url = cfg.slice_url + "?plane=" + slice.plane + "&index=" + slice.index;
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) { if (body && body.plane === slice.plane && body.index === slice.index) { drawSlice(body); } })
      .catch(function () { /* the next image asks again */ })
      .then(function () {
        slice.busy = false;
        if (slice.again) { slice.again = false; requestSlice(); }
      });
  }

  function drawSlice(body) {
    if (!sliceCtx) { return; }
    var grid = decodeMip({ mip_z: body.data, mip_shape: body.slice_shape });
    if (!grid) { return; }
    colourMax = Math.max(colourMax, body.max_ng || 0, 1e-9);
    paint(sliceCtx, sliceCanvas, grid);
    var axes = { z: "x → , y ↑", y: "x → , z ↑", x: "y → , z ↑" }[body.plane];
    $("slice-caption").textContent = "Slice " + body.plane + " = " + body.index + " (" + axes + ") of the image up to frame " +
      body.frame + " · same colour scale · provisional (live)";
    slice.frame = body.frame;
  }

  function drawSliceLine(ox, oy, cell, mip) {
    /* Where the chosen x or y slice cuts the z projection. */
    if (!slice.shape || slice.plane === "z" || slice.index === null) { return; }
    ctx.strokeStyle = "#ffffff";
    ctx.lineWidth = 2;
    ctx.setLineDash([8, 5]);
    ctx.beginPath();
    if (slice.plane === "x") {
      var px = ox + (slice.index + 0.5) * cell * mip.nx / slice.shape[0];
      ctx.moveTo(px, oy); ctx.lineTo(px, oy + cell * mip.ny);
    } else {
      var py = oy + (mip.ny - (slice.index + 0.5) * mip.ny / slice.shape[1]) * cell;
      ctx.moveTo(ox, py); ctx.lineTo(ox + cell * mip.nx, py);
    }
    ctx.stroke();
    ctx.setLineDash([]);
  }

  function paint(context, target, grid) {
    var size = Math.min(target.width, target.height);
    var cell = Math.max(1, Math.floor(size / Math.max(grid.nx, grid.ny)));
    var w = cell * grid.nx, h = cell * grid.ny;
    var ox = Math.floor((target.width - w) / 2), oy = Math.floor((target.height - h) / 2);
    context.fillStyle = "#000";
    context.fillRect(0, 0, target.width, target.height);
    for (var x = 0; x < grid.nx; x++) {
      for (var y = 0; y < grid.ny; y++) {
        var f = Math.max(0, Math.min(1, grid.at(x, y) / colourMax));
        var c = lutRgb[Math.min(255, Math.floor(f * 255))];
        context.fillStyle = "rgb(" + c[0] + "," + c[1] + "," + c[2] + ")";
        context.fillRect(ox + x * cell, oy + (grid.ny - 1 - y) * cell, cell, cell);
      }
    }
  }

  if (sliceBox) {
    Array.prototype.forEach.call(sliceBox.querySelectorAll("input[name=slice-plane]"), function (input) {
      input.addEventListener("change", function () { slice.plane = input.value; slice.index = null; sliceControls(); requestSlice(); });
    });
    $("slice-index").addEventListener("input", function () { slice.index = parseInt($("slice-index").value, 10); sliceControls(); requestSlice(); });
    Array.prototype.forEach.call(sliceBox.querySelectorAll("button[data-step]"), function (button) {
      button.addEventListener("click", function () {
        var n = sliceSize();
        if (!n) { return; }
        slice.index = Math.max(0, Math.min(n - 1, slice.index + parseInt(button.getAttribute("data-step"), 10)));
        sliceControls();
        requestSlice();
      });
    });
  }

  function drawColourBar() {
    if (!barCtx) { return; }
    var H = bar.height, top = 14, bottom = H - 40, width = 24;
    barCtx.clearRect(0, 0, bar.width, H);
    for (var i = 0; i < 256; i++) {
      var c = lutRgb[i];
      barCtx.fillStyle = "rgb(" + c[0] + "," + c[1] + "," + c[2] + ")";
      var y = bottom - (bottom - top) * (i + 1) / 256;
      barCtx.fillRect(4, y, width, (bottom - top) / 256 + 1);
    }
    barCtx.strokeStyle = "#1d2733";
    barCtx.strokeRect(4, top, width, bottom - top);
    barCtx.fillStyle = "#1d2733";
    barCtx.font = "14px system-ui, sans-serif";
    [0, 0.25, 0.5, 0.75, 1].forEach(function (f) {
      var y = bottom - (bottom - top) * f;
      barCtx.fillRect(width + 4, y - 0.5, 6, 1);
      barCtx.fillText(fmtNg(colourMax * f), width + 13, y + 5);
    });
    barCtx.fillStyle = "#566475";
    barCtx.font = "13px system-ui, sans-serif";
    barCtx.fillText("ng Fe", 4, H - 22);
    barCtx.fillText("per voxel", 4, H - 6);
  }
  drawColourBar();

  // ------------------------------------------------------------------ health

  function showHealth(h) {
    lastHealth = h;
    $("h-received").textContent = (h.frames_received || 0).toLocaleString("en-US");
    $("h-recorded").textContent = (h.frames_recorded || 0).toLocaleString("en-US");
    $("h-dropped").textContent = (h.frames_dropped || 0).toLocaleString("en-US");
    $("h-lag").textContent = h.lag_ms === null || h.lag_ms === undefined ? "—" : Math.round(h.lag_ms);
    checkHealth();
  }

  function checkHealth() {
    if (cfg.final || finished) { return; }
    var warning = $("h-warning"), problems = [];
    var age = lastEventAt === null ? null : (Date.now() - lastEventAt) / 1000;
    $("h-last").textContent = age === null ? "—" : age < 1 ? "now" : Math.floor(age) + " s ago";
    if (lastHealth.lag_ms > cfg.lag_budget_ms) { problems.push("▲ Lag " + Math.round(lastHealth.lag_ms) + " ms: over the " + cfg.lag_budget_ms + " ms budget"); }
    if (streaming && age !== null && age > cfg.stall_after_s) { problems.push("▲ No event for " + Math.floor(age) + " s: the stream has stopped or the connection dropped"); }
    if (lastHealth.monitoring && lastHealth.monitoring !== "live") { problems.push("▲ " + lastHealth.monitoring); }
    warning.hidden = !problems.length;
    warning.textContent = problems.join(" · ");
    $("health").classList.toggle("problem", problems.length > 0);
  }

  // ------------------------------------------------------------------ alerts

  var PERCENT_KINDS = ["off_target_share", "target_low"];
  var PRIORITY = ["off_target_share", "target_low", "off_target_detected", "system_matrix_mismatch", "frame_gap", "lag"];

  function alertText(a) {
    var parts = [];
    if (PERCENT_KINDS.indexOf(a.kind) < 0) { return a.frame !== null && a.frame !== undefined ? "frame " + a.frame : ""; }
    if (a.value_percent !== null && a.value_percent !== undefined) { parts.push("value " + fmt(a.value_percent, 1) + " %"); }
    if (a.threshold_percent !== null && a.threshold_percent !== undefined) { parts.push("threshold " + fmt(a.threshold_percent, 1) + " %"); }
    if (a.frame !== null && a.frame !== undefined) { parts.push("frame " + a.frame); }
    return parts.join(" · ");
  }

  function kindLabel(kind) { return (cfg.alert_kinds || {})[kind] || String(kind || "alert").replace(/_/g, " "); }

  function addAlert(a) {
    var known = alerts[a.id];
    alerts[a.id] = Object.assign(known || {}, a);
    renderAlertRow(alerts[a.id]);
    showBanner();
  }

  function renderAlertRow(a) {
    var body = $("alert-rows");
    var none = body.querySelector("tr.none");
    if (none) { body.removeChild(none); }
    var tr = body.querySelector('tr[data-alert="' + a.id + '"]');
    if (!tr) {
      tr = document.createElement("tr");
      tr.setAttribute("data-alert", a.id);
      var cells = [];
      for (var i = 0; i < 6; i++) { cells.push(document.createElement("td")); tr.appendChild(cells[i]); }
      var strong = document.createElement("strong");
      strong.textContent = a.kind_label || kindLabel(a.kind);
      var msg = document.createElement("div");
      msg.className = "small";
      msg.textContent = a.message || "";
      cells[0].appendChild(strong);
      cells[0].appendChild(msg);
      cells[1].className = cells[2].className = cells[3].className = "num";
      cells[1].textContent = a.frame === null || a.frame === undefined ? "—" : a.frame;
      var pct = PERCENT_KINDS.indexOf(a.kind) >= 0;
      cells[2].textContent = !pct || a.value_percent === null || a.value_percent === undefined ? "—" : fmt(a.value_percent, 1) + " %";
      cells[3].textContent = !pct || a.threshold_percent === null || a.threshold_percent === undefined ? "—" : fmt(a.threshold_percent, 1) + " %";
      cells[4].textContent = a.created_at ? siteClock(a.created_at)
        : "frame time " + (a.acquired_at && t0 !== null ? fmt(a.acquired_at - t0, 1) + " s" : "—");
      cells[5].className = "ack";
      body.appendChild(tr);
    }
    if (a.acknowledged_by || a.reason) {
      var ack = tr.querySelector("td.ack");
      ack.textContent = "";
      var badge = document.createElement("span");
      badge.className = "badge tone-good";
      badge.textContent = "✓ " + (a.acknowledged_by || "acknowledged");
      var why = document.createElement("div");
      why.className = "small";
      why.textContent = "reason: " + (a.reason || "");
      ack.appendChild(badge);
      ack.appendChild(why);
    } else if (!tr.querySelector("td.ack .badge")) {
      var open = document.createElement("span");
      open.className = "badge tone-bad";
      open.textContent = "▲ not acknowledged";
      tr.querySelector("td.ack").appendChild(open);
    }
  }

  function openAlerts() {
    return Object.keys(alerts).map(function (k) { return alerts[k]; })
      .filter(function (a) { return !a.acknowledged_by && !a.reason && replayVisible(a); })
      .sort(function (a, b) {
        var pa = PRIORITY.indexOf(a.kind), pb = PRIORITY.indexOf(b.kind);
        return (pa < 0 ? 99 : pa) - (pb < 0 ? 99 : pb) || a.id - b.id;  // the clinical alert first
      });
  }

  function showBanner() {
    var open = openAlerts(), banner = $("alert-banner");
    if (!open.length) { banner.hidden = true; shownAlert = null; document.body.classList.remove("alerting"); return; }
    var a = open[0];
    // A clinician writing the reason for the alert shown keeps it on the banner when another
    // alert comes (its text would otherwise be cleared, or given to the new alert).
    var reasonBox = $("alert-reason");
    var writing = reasonBox && reasonBox.value.trim() && shownAlert !== null;
    if (writing) {
      var kept = open.filter(function (o) { return o.id === shownAlert; })[0];
      if (kept) { a = kept; }
    }
    banner.hidden = false;
    document.body.classList.add("alerting");
    banner.classList.toggle("technical", ["frame_gap", "lag", "system_matrix_mismatch"].indexOf(a.kind) >= 0);
    $("alert-title").textContent = "▲ ALERT: " + (a.kind_label || kindLabel(a.kind)).toUpperCase() + (open.length > 1 ? "  (+" + (open.length - 1) + " more)" : "");
    $("alert-message").textContent = a.message || "";
    $("alert-more").textContent = alertText(a) + " · provisional (live) · decision support only";
    if (shownAlert !== a.id && $("alert-reason")) { $("alert-reason").value = ""; $("alert-error").textContent = ""; }
    shownAlert = a.id;
  }

  function csrfToken() {
    var m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : "";
  }

  var ackForm = $("alert-ack");
  if (ackForm) {
    ackForm.addEventListener("submit", function (e) {
      e.preventDefault();
      var id = shownAlert, reason = $("alert-reason").value.trim(), error = $("alert-error");
      if (id === null) { return; }
      if (!reason) { error.textContent = "Say what was done: a reason is required."; $("alert-reason").focus(); return; }
      var button = ackForm.querySelector("button");
      button.disabled = true;
      fetch(cfg.acknowledge_url.replace("{id}", id), {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken() },
        body: JSON.stringify({ reason: reason })
      }).then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (body) { return { ok: r.ok, body: body }; });
      }).then(function (res) {
        if (res.ok) {
          addAlert({ id: id, acknowledged_by: res.body.acknowledged_by, reason: res.body.acknowledgement_reason || reason });
        } else {
          error.textContent = (res.body.error && res.body.error.message) || "The acknowledgement was refused.";
          if (res.body.error && res.body.error.code === "alert_already_acknowledged") { addAlert({ id: id, reason: "acknowledged by someone else" }); }
        }
      }).catch(function () {
        error.textContent = "No answer from the server: try again.";
      }).then(function () { button.disabled = false; });
    });
  }

  // ------------------------------------------------------------------ injection marks

  var MARK_SHORT = { injection_start: "▶ start", injection_pause: "❚❚ pause", injection_resume: "▶ resume", injection_stop: "■ stop" };
  var NEXT_STATE = { injection_start: "running", injection_pause: "paused", injection_resume: "running", injection_stop: "stopped" };
  var ALLOWED = {
    "not started": ["injection_start"], running: ["injection_pause", "injection_stop"],
    paused: ["injection_resume", "injection_stop"], stopped: []
  };
  var marks = [];  // in the order entered
  var injectionState = cfg.injection_state || "not started";

  function markTime(m) {
    /* Seconds on the curves' axis: the time of the mark's frame (the next frame of the
       stream when it was entered); ahead of the drawn frames, extrapolated by the frame
       duration; entered before the stream: its start. */
    if (m.frame === null || m.frame === undefined) { return 0; }
    var n = series.frame.length, fd = cfg.frame_duration_s || 0;
    for (var i = 0; i < n; i++) { if (series.frame[i] >= m.frame) { return series.t[i] - (series.frame[i] - m.frame) * fd; } }
    if (n) { return series.t[n - 1] + (m.frame - series.frame[n - 1]) * fd; }
    return m.frame * fd;
  }

  function visibleMarks(upto) {
    var lastShown = upto ? series.frame[upto - 1] : -1;
    return marks.filter(function (m) {
      return !replay.on || m.frame === null || m.frame === undefined || m.frame <= lastShown + 1;
    }).map(function (m) { return { kind: m.kind, t: Math.max(0, markTime(m)) }; });
  }

  function addMark(m) {
    for (var i = 0; i < marks.length; i++) { if (marks[i].id === m.id) { return; } }  // the event of our own POST
    marks.push(m);
    injectionState = NEXT_STATE[m.kind] || injectionState;
    renderMarkRow(m);
    showMarkButtons();
    dirty = true;
    if (cfg.record) { drawCurves(replay.on ? replay.upto : undefined); }
  }

  function renderMarkRow(m) {
    var body = $("mark-rows");
    if (!body) { return; }
    var none = body.querySelector("tr.none");
    if (none) { body.removeChild(none); }
    var tr = document.createElement("tr");
    tr.setAttribute("data-mark", m.id);
    var when = siteClock(m.at);
    [(cfg.mark_kinds || {})[m.kind] || m.kind, m.frame === null || m.frame === undefined ? "before the stream" : m.frame, when, m.by || "", m.note || ""]
      .forEach(function (text, k) {
        var td = document.createElement("td");
        if (k === 0) { var strong = document.createElement("strong"); strong.textContent = text; td.appendChild(strong); } else { td.textContent = text; }
        if (k === 1) { td.className = "num"; }
        tr.appendChild(td);
      });
    body.appendChild(tr);
  }

  function showMarkButtons() {
    var state = $("injection-state");
    if (state) { state.textContent = injectionState; }
    var allowed = ALLOWED[injectionState] || [];
    Array.prototype.forEach.call(document.querySelectorAll("button[data-mark]"), function (button) {
      button.disabled = finished || allowed.indexOf(button.getAttribute("data-mark")) < 0;
    });
  }

  Array.prototype.forEach.call(document.querySelectorAll("button[data-mark]"), function (button) {
    button.addEventListener("click", function () {
      var error = $("mark-error"), note = $("mark-note");
      error.textContent = "";
      Array.prototype.forEach.call(document.querySelectorAll("button[data-mark]"), function (b) { b.disabled = true; });
      fetch(cfg.marks_url, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken() },
        body: JSON.stringify({ kind: button.getAttribute("data-mark"), note: note ? note.value.trim() : "" })
      }).then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (body) { return { ok: r.ok, body: body }; });
      }).then(function (res) {
        if (res.ok) {
          if (note) { note.value = ""; }
          addMark({ id: res.body.id, kind: res.body.kind, frame: res.body.frame, at: Date.parse(res.body.at) / 1000, by: res.body.created_by, note: res.body.note });
        } else {
          error.textContent = (res.body.error && res.body.error.message) || "The mark was refused.";
        }
      }).catch(function () {
        error.textContent = "No answer from the server: try again.";
      }).then(showMarkButtons);
    });
  });

  // ------------------------------------------------------------------ engine readiness

  // Before the stream (and while the engine is built at its start) the page asks the session
  // every 2 s whether the live engine is ready; the first metrics event says so too.
  var ENGINE_WORDS = { ready: "✓ engine ready", unavailable: "✕ engine not prepared", waiting: "… engine waits for the header", preparing: "… engine preparing" };
  var ENGINE_TONES = { ready: "good", unavailable: "bad" };

  function showEngine(state, detail) {
    var box = $("engine-state");
    if (!box || !state || box.getAttribute("data-state") === "ready") { return; }
    box.setAttribute("data-state", state);
    $("engine-badge").textContent = ENGINE_WORDS[state] || state;
    $("engine-badge").className = "badge tone-" + (ENGINE_TONES[state] || "progress");
    if (detail) { $("engine-detail").textContent = detail; }
  }

  function pollEngine() {
    var box = $("engine-state");
    if (!box || finished || box.getAttribute("data-state") === "ready") { return; }
    fetch(cfg.session_url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) { if (body && body.engine) { showEngine(body.engine, body.engine_detail); } })
      .catch(function () { /* asked again below */ })
      .then(function () { setTimeout(pollEngine, 2000); });
  }
  setTimeout(pollEngine, 2000);

  // ------------------------------------------------------------------ the event stream

  var source = null, lastId = null, finished = false, streaming = cfg.status === "streaming";

  function setConnection(text, bad) {
    var c = $("h-connection");
    c.textContent = text;
    c.classList.toggle("bad", !!bad);
  }

  function showStatus(status) {
    var badge = document.querySelector("#live-status .badge");
    if (!badge || badge.getAttribute("data-status") === status) { return; }
    badge.textContent = status;
    badge.setAttribute("data-status", status);
    badge.className = "badge tone-" + ({ streaming: "progress", ended: "good", aborted: "bad" }[status] || "neutral");
    // The bridge is connected: its connection details fold to one line, so the image, the
    // curves and an alert fit the screen together (not while a token shown once is on it).
    var bridgeCard = $("bridge-card");
    if (status === "streaming" && bridgeCard && !$("bridge-token")) { bridgeCard.open = false; }
  }

  function onEvent(e) {
    if (e.lastEventId) { lastId = e.lastEventId; }
    lastEventAt = Date.now();
    var ev;
    try { ev = JSON.parse(e.data); } catch (err) { return; }
    switch (ev.type) {
      case "metrics": streaming = true; showStatus("streaming"); showEngine("ready", "Live engine ready: live numbers are flowing."); addPoint(ev); break;
      case "image": streaming = true; showStatus("streaming"); drawImage(ev); break;
      case "health": showHealth(ev); break;
      case "alert": addAlert(ev); break;
      case "mark": addMark(ev); break;
      case "ended":
        finished = true;
        if (source) { source.close(); }
        showMarkButtons();
        showStatus(ev.status || "ended");
        setConnection("session " + (ev.status || "ended") + ": loading the record…");
        $("h-warning").hidden = true;
        // The page's own address (not a reload: the token page is the answer to a POST).
        setTimeout(function () { window.location.assign(cfg.page_url); }, 1500);
        break;
      default: break;
    }
  }

  function connect() {
    if (finished) { return; }
    var url = cfg.events_url + (lastId ? "?last_event_id=" + encodeURIComponent(lastId) : "");
    source = new EventSource(url, { withCredentials: true });
    source.onopen = function () { setConnection("● connected"); };
    source.onmessage = onEvent;
    source.onerror = function () {
      if (finished) { return; }
      if (source.readyState === EventSource.CLOSED) {
        // The server closed or refused the stream: reopen it from the last event id.
        setConnection("▲ stream closed: reconnecting…", true);
        setTimeout(connect, 2000);
      } else {
        setConnection("▲ connection lost: reconnecting…", true);  // EventSource retries by itself
      }
    };
  }

  // ------------------------------------------------------------------ replay of the record

  var replay = { on: false, upto: 0, speed: 1, clock: 0 };

  function replayVisible(a) {
    if (!replay.on || !cfg.record) { return true; }
    if (a.frame === null || a.frame === undefined) { return true; }
    return a.frame <= (series.frame[replay.upto - 1] || -1);
  }

  function loadRecord(rec) {
    series.t = rec.t.slice();
    series.frame = rec.frame.slice();
    series.target = rec.target_percent.slice();
    series.off = rec.off_target_percent.slice();
    series.sofar = (rec.dose_so_far_ng || []).slice();
    series.state = (rec.injection_state || []).slice();
    t0 = rec.acquired_at.length ? rec.acquired_at[0] : t0;
    Object.keys(rec.rois).forEach(function (name) {
      styleFor(name, rec.rois[name].kind);
      series.rois[name] = {
        kind: rec.rois[name].kind,
        iron: rec.rois[name].iron_ng.slice(),
        lod: (rec.rois[name].detection_limit_ng || []).slice()
      };
    });
  }

  function replayFrame(now) {
    if (!replay.on) { return; }
    if (replay.last !== undefined) { replay.clock += (now - replay.last) / 1000 * replay.speed; }
    replay.last = now;
    var n = series.t.length, upto = replay.upto;
    while (upto < n && series.t[upto] <= replay.clock) { upto++; }
    if (upto !== replay.upto || !replay.drawnOnce) {
      replay.upto = Math.max(upto, 1);
      replay.drawnOnce = true;
      drawCurves(replay.upto);
      showBanner();
    }
    $("replay-time").textContent = replay.clock.toFixed(1) + " s (" + replay.speed + "×)";
    if (upto >= n) { replay.on = false; showBanner(); $("replay-time").textContent += " · end"; return; }
    window.requestAnimationFrame(replayFrame);
  }

  var replayBox = $("replay");
  if (replayBox) {
    Array.prototype.forEach.call(replayBox.querySelectorAll("button[data-speed]"), function (button) {
      button.addEventListener("click", function () {
        var speed = parseFloat(button.getAttribute("data-speed"));
        if (!speed) {
          replay.on = false;
          drawCurves();
          showBanner();
          $("replay-time").textContent = "the whole record";
          return;
        }
        var running = replay.on;
        replay.on = true;
        replay.speed = speed;
        replay.upto = 0;
        replay.clock = 0;
        replay.last = undefined;
        replay.drawnOnce = false;
        if (!running) { window.requestAnimationFrame(replayFrame); }
      });
    });
  }

  // ------------------------------------------------------------------ start

  (cfg.alerts || []).forEach(function (a) { alerts[a.id] = a; });
  (cfg.marks || []).forEach(function (m) { marks.push(m); });  // the table and state are the server's
  if (cfg.record) {
    loadRecord(cfg.record);
    drawCurves();
  } else {
    drawCurves(0);
    connect();
    setInterval(checkHealth, 500);
    // Curves redraw at most 5 times a second, however fast metrics arrive.
    setInterval(function () { if (dirty) { dirty = false; drawCurves(); } }, 200);
  }
  showHealth(lastHealth);
  showBanner();
  window.MpiLive = { config: cfg, series: series, slice: slice, addPoint: addPoint, drawImage: drawImage, addAlert: addAlert, addMark: addMark, drawCurves: drawCurves };
})();
