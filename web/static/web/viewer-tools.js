/* Scan viewer tools: window / level, zoom and pan, iron per voxel under the cursor, the same
   slice of another time point beside this one (linked cursor, view and window), and a
   rectangle drawn on the image whose iron the server computes from the stored values
   (web/viewer_views.py). The slices come as numbers (ng Fe per voxel), not as pictures. */
(function () {
  "use strict";
  var root = document.getElementById("viewer-tools");
  if (!root) { return; }

  function $(id) { return document.getElementById(id); }
  var planeSel = $("vt-plane"), indexIn = $("vt-index"), countOut = $("vt-count");
  var windowIn = $("vt-window"), levelIn = $("vt-level"), presetSel = $("vt-preset");
  var compareSel = $("vt-compare"), readout = $("vt-readout");
  var form = $("vt-region-form"), result = $("vt-region-result"), errorOut = $("vt-region-error");
  var boxIn = { h0: $("vt-h0"), h1: $("vt-h1"), v0: $("vt-v0"), v1: $("vt-v1") };

  var state = {
    zoom: 1, panX: 0, panY: 0,          // zoom factor over "fit", pan in canvas pixels
    lo: 0, hi: 1,                        // window in ng Fe
    cursor: null,                        // {c, r}: column, row from the top (screen order)
    box: null,                           // {c0, r0, c1, r1} screen order, inclusive
    anchor: null,                        // first corner while drawing by keyboard
    slices: [null, null],                // payloads of this scan and the other time point
    compare: ""
  };
  var panes = [0, 1].map(function (i) {
    var canvas = $("vt-canvas-" + i);
    return { canvas: canvas, ctx: canvas.getContext("2d"), cap: $("vt-cap-" + i), image: null };
  });

  function fmt(v) {
    if (v === null || v === undefined || isNaN(v)) { return "—"; }
    var a = Math.abs(v);
    if (a !== 0 && (a < 0.01 || a >= 1e5)) { return v.toExponential(2); }
    return v.toLocaleString("en-GB", { maximumSignificantDigits: 4 });
  }
  function mode() { return form.ownerDocument.querySelector("input[name=vt-mode]:checked").value; }
  function plane() { return planeSel.value; }
  function index() { return Math.max(0, parseInt(indexIn.value, 10) - 1 || 0); }

  /* ---- fetching ---- */
  function url(scanPk, idx) {
    var base = root.getAttribute("data-values");
    if (scanPk !== root.getAttribute("data-scan")) { base = base.replace("/scans/" + root.getAttribute("data-scan") + "/", "/scans/" + scanPk + "/"); }
    return base + plane() + "/" + idx + ".json";
  }
  function load(which, scanPk, idx) {
    return fetch(url(scanPk, idx), { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
      .then(function (data) { state.slices[which] = data; panes[which].image = bitmap(data); return data; });
  }
  function reload(resetWindow) {
    var idx = index();
    var jobs = [load(0, root.getAttribute("data-scan"), idx)];
    if (state.compare) {
      jobs.push(fetchCount().then(function (n) { return load(1, state.compare, Math.min(idx, n - 1)); }));
    }
    return Promise.all(jobs).then(function () {
      if (resetWindow) { preset("full"); }
      refreshBitmaps();
      draw();
      root.setAttribute("data-ready", plane() + "/" + idx + "/" + (state.compare || "-"));
    }).catch(function (err) { readout.textContent = "The slice could not be loaded (" + err.message + ")."; });
  }
  function fetchCount() {
    // The other scan's slice count in this plane: ask for slice 0 once.
    return fetch(url(state.compare, 0), { credentials: "same-origin" }).then(function (r) { return r.json(); })
      .then(function (d) { return d.count; });
  }

  /* ---- pictures ---- */
  function bitmap(data) {
    var off = document.createElement("canvas");
    off.width = data.cols; off.height = data.rows;
    return off;
  }
  function paint(pane, data) {
    if (!pane.image || !data) { return; }
    var off = pane.image, ctx = off.getContext("2d");
    var img = ctx.createImageData(data.cols, data.rows), lut = data.lut, span = state.hi - state.lo || 1;
    var rgb = lut.map(function (hex) { return [parseInt(hex.slice(1, 3), 16), parseInt(hex.slice(3, 5), 16), parseInt(hex.slice(5, 7), 16)]; });
    for (var r = 0; r < data.rows; r++) {
      for (var c = 0; c < data.cols; c++) {
        var t = (data.values_ng[r][c] - state.lo) / span;
        var k = Math.max(0, Math.min(255, Math.floor(t * 255)));
        var o = (r * data.cols + c) * 4;
        img.data[o] = rgb[k][0]; img.data[o + 1] = rgb[k][1]; img.data[o + 2] = rgb[k][2]; img.data[o + 3] = 255;
      }
    }
    ctx.putImageData(img, 0, 0);
  }
  function refreshBitmaps() { paint(panes[0], state.slices[0]); paint(panes[1], state.slices[1]); }

  // Canvas pixels per voxel (horizontal, vertical) and the image's origin on the canvas.
  function layout(pane, data) {
    var W = pane.canvas.width, H = pane.canvas.height;
    var wmm = data.cols * data.voxel_mm[0], hmm = data.rows * data.voxel_mm[1];
    var fit = Math.min(W / wmm, H / hmm) * state.zoom;
    var sx = fit * data.voxel_mm[0], sy = fit * data.voxel_mm[1];
    return { sx: sx, sy: sy, x0: (W - data.cols * sx) / 2 + state.panX, y0: (H - data.rows * sy) / 2 + state.panY };
  }
  function draw() {
    panes.forEach(function (pane, i) {
      var data = state.slices[i], ctx = pane.ctx;
      ctx.fillStyle = "#000";
      ctx.fillRect(0, 0, pane.canvas.width, pane.canvas.height);
      if (!data || (i === 1 && !state.compare)) { return; }
      var L = layout(pane, data);
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(pane.image, L.x0, L.y0, data.cols * L.sx, data.rows * L.sy);
      if (state.box) {
        var b = state.box;
        ctx.strokeStyle = "#22d3ee"; ctx.lineWidth = 2;
        ctx.strokeRect(L.x0 + Math.min(b.c0, b.c1) * L.sx, L.y0 + Math.min(b.r0, b.r1) * L.sy,
          (Math.abs(b.c1 - b.c0) + 1) * L.sx, (Math.abs(b.r1 - b.r0) + 1) * L.sy);
      }
      if (state.cursor && state.cursor.c < data.cols && state.cursor.r < data.rows) {
        ctx.strokeStyle = "#a3e635"; ctx.lineWidth = 1.5;
        ctx.strokeRect(L.x0 + state.cursor.c * L.sx, L.y0 + state.cursor.r * L.sy, L.sx, L.sy);
      }
      pane.cap.textContent = "Scan #" + data.scan + " · " + fmt(data.hours) + " h · " + planeSel.options[planeSel.selectedIndex].text +
        " slice " + (data.index + 1) + " of " + data.count;
    });
  }

  /* ---- numbers ---- */
  function voxelAt(pane, data, event) {
    var rect = pane.canvas.getBoundingClientRect();
    var px = (event.clientX - rect.left) * pane.canvas.width / rect.width;
    var py = (event.clientY - rect.top) * pane.canvas.height / rect.height;
    var L = layout(pane, data);
    var c = Math.floor((px - L.x0) / L.sx), r = Math.floor((py - L.y0) / L.sy);
    return (c >= 0 && r >= 0 && c < data.cols && r < data.rows) ? { c: c, r: r } : null;
  }
  function describe() {
    var main = state.slices[0];
    if (!state.cursor || !main) { return; }
    var c = state.cursor.c, r = state.cursor.r, v = main.rows - 1 - r;
    var text = main.axes[0] + " " + c + ", " + main.axes[1] + " " + v + ": " + fmt(main.values_ng[r][c]) + " ng Fe (scan #" + main.scan + ")";
    var other = state.slices[1];
    if (state.compare && other && r < other.rows && c < other.cols) {
      text += " · " + fmt(other.values_ng[r][c]) + " ng Fe (scan #" + other.scan + ", " + fmt(other.hours) + " h)";
    }
    readout.textContent = text;
  }
  function setWindow(lo, hi, fromInputs) {
    state.lo = lo; state.hi = Math.max(hi, lo + 1e-9);
    if (!fromInputs) {
      windowIn.value = Number((state.hi - state.lo).toPrecision(4));
      levelIn.value = Number(((state.hi + state.lo) / 2).toPrecision(4));
    }
    refreshBitmaps(); draw();
  }
  function preset(name) {
    var vmax = (state.slices[0] && state.slices[0].vmax_ng) || 1;
    if (name === "full") { setWindow(0, vmax); }
    if (name === "low") { setWindow(0, vmax / 4); }
    if (name === "hot") { setWindow(vmax / 2, vmax); }
  }

  /* ---- the region ---- */
  function boxToInputs() {
    var data = state.slices[0], b = state.box;
    boxIn.h0.value = Math.min(b.c0, b.c1); boxIn.h1.value = Math.max(b.c0, b.c1);
    boxIn.v0.value = data.rows - 1 - Math.max(b.r0, b.r1); boxIn.v1.value = data.rows - 1 - Math.min(b.r0, b.r1);
  }
  function inputsToBox() {
    var data = state.slices[0];
    var n = ["h0", "h1", "v0", "v1"].map(function (k) { return parseInt(boxIn[k].value, 10); });
    if (!data || n.some(isNaN)) { return false; }
    state.box = { c0: n[0], c1: n[1], r0: data.rows - 1 - n[2], r1: data.rows - 1 - n[3] };
    draw();
    return true;
  }
  function regionParams() {
    $("vt-region-plane").value = plane();
    $("vt-region-index").value = String(index());
    return new FormData(form);
  }
  function showError(message) { errorOut.textContent = message; errorOut.hidden = !message; }
  function measure() {
    if (!inputsToBox()) { showError("Draw a region on the image or give its four voxel numbers."); return; }
    var params = new URLSearchParams();
    regionParams().forEach(function (value, key) { if (["plane", "index", "h0", "h1", "v0", "v1"].indexOf(key) >= 0) { params.append(key, value); } });
    fetch(form.getAttribute("action") + "?" + params.toString(), { credentials: "same-origin" })
      .then(function (r) { return r.json().then(function (body) { return { ok: r.ok, body: body }; }); })
      .then(function (res) {
        if (!res.ok) { showError(res.body.error.message); result.textContent = ""; return; }
        showError("");
        result.textContent = "Iron inside: " + fmt(res.body.iron_ng) + " ng Fe in " + res.body.voxels + " voxels (the highest voxel " +
          fmt(res.body.max_ng) + " ng Fe; mean " + fmt(res.body.mean_mmol_per_l) + " mmol Fe/L).";
        result.setAttribute("data-iron-ng", String(res.body.iron_ng));
      });
  }
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (!inputsToBox()) { showError("Draw a region on the image or give its four voxel numbers."); return; }
    var body = regionParams();
    fetch(form.getAttribute("action"), {
      method: "POST", credentials: "same-origin", body: body,
      headers: { "X-CSRFToken": body.get("csrfmiddlewaretoken") }
    }).then(function (r) { return r.json().then(function (b) { return { ok: r.ok, body: b }; }); })
      .then(function (res) {
        if (!res.ok) {
          var fields = res.body.error.fields || {};
          showError(fields.name ? "Region name: " + fields.name.join(" ") : res.body.error.message);
          return;
        }
        showError("");
        result.textContent = "Saved region “" + res.body.roi.name + "”: " + fmt(res.body.iron_ng) + " ng Fe in " + res.body.voxels +
          " voxels. Reload the page to see its outline and, after the next quantification, its numbers.";
        result.setAttribute("data-roi", String(res.body.roi.pk));
      });
  });
  $("vt-measure").addEventListener("click", measure);

  /* ---- pointer ---- */
  var drag = null;
  panes.forEach(function (pane, i) {
    var canvas = pane.canvas;
    canvas.addEventListener("mousemove", function (event) {
      var data = state.slices[i];
      if (!data) { return; }
      if (drag) {
        var dx = event.clientX - drag.x, dy = event.clientY - drag.y;
        if (drag.mode === "pan") { state.panX = drag.panX + dx; state.panY = drag.panY + dy; }
        if (drag.mode === "window") {
          var vmax = (state.slices[0] && state.slices[0].vmax_ng) || 1;
          var width = Math.max(vmax / 1000, drag.width * Math.pow(2, dx / 150));
          var level = drag.level - dy * vmax / 300;
          setWindow(level - width / 2, level + width / 2);
        }
      }
      var at = voxelAt(pane, data, event);
      if (at) {
        state.cursor = at;
        if (drag && drag.mode === "draw" && state.box) { state.box.c1 = at.c; state.box.r1 = at.r; }
        describe();
      }
      draw();
    });
    canvas.addEventListener("mousedown", function (event) {
      var data = state.slices[i];
      if (!data) { return; }
      canvas.focus();
      drag = { mode: mode(), x: event.clientX, y: event.clientY, panX: state.panX, panY: state.panY,
        width: state.hi - state.lo, level: (state.hi + state.lo) / 2 };
      if (drag.mode === "draw") {
        var at = voxelAt(pane, data, event);
        if (!at) { drag = null; return; }
        state.box = { c0: at.c, r0: at.r, c1: at.c, r1: at.r };
      }
      event.preventDefault();
    });
    canvas.addEventListener("wheel", function (event) {
      event.preventDefault();
      zoom(event.deltaY < 0 ? 1.25 : 0.8);
    }, { passive: false });
    canvas.addEventListener("keydown", function (event) { key(event); });
  });
  window.addEventListener("mouseup", function () {
    if (drag && drag.mode === "draw" && state.box) { boxToInputs(); measure(); }
    drag = null;
  });

  /* ---- keyboard ---- */
  function zoom(factor) {
    state.zoom = Math.max(0.5, Math.min(16, state.zoom * factor));
    state.panX *= factor; state.panY *= factor;
    draw();
  }
  function key(event) {
    var data = state.slices[0];
    if (!data) { return; }
    var moves = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
    if (moves[event.key]) {
      var m = moves[event.key];
      if (event.shiftKey) { state.panX -= m[0] * 20; state.panY -= m[1] * 20; }
      else {
        var cur = state.cursor || { c: Math.floor(data.cols / 2), r: Math.floor(data.rows / 2) };
        state.cursor = { c: Math.max(0, Math.min(data.cols - 1, cur.c + m[0])), r: Math.max(0, Math.min(data.rows - 1, cur.r + m[1])) };
        if (state.anchor) { state.box = { c0: state.anchor.c, r0: state.anchor.r, c1: state.cursor.c, r1: state.cursor.r }; }
        describe();
      }
      draw();
      event.preventDefault();
    } else if (event.key === "+" || event.key === "=") { zoom(1.25); event.preventDefault(); }
    else if (event.key === "-") { zoom(0.8); event.preventDefault(); }
    else if (event.key === "0") { resetView(); event.preventDefault(); }
    else if (event.key === "Enter" && mode() === "draw") {
      var at = state.cursor || { c: Math.floor(data.cols / 2), r: Math.floor(data.rows / 2) };
      if (!state.anchor) {
        state.anchor = at; state.box = { c0: at.c, r0: at.r, c1: at.c, r1: at.r };
        readout.textContent = "First corner marked; move to the opposite corner and press Enter.";
      } else {
        state.box = { c0: state.anchor.c, r0: state.anchor.r, c1: at.c, r1: at.r };
        state.anchor = null; boxToInputs(); measure();
      }
      draw();
      event.preventDefault();
    }
  }
  function resetView() { state.zoom = 1; state.panX = 0; state.panY = 0; draw(); }

  /* ---- controls ---- */
  $("vt-zoom-in").addEventListener("click", function () { zoom(1.25); });
  $("vt-zoom-out").addEventListener("click", function () { zoom(0.8); });
  $("vt-reset").addEventListener("click", resetView);
  presetSel.addEventListener("change", function () { if (presetSel.value) { preset(presetSel.value); } });
  function fromInputs() {
    var w = parseFloat(windowIn.value), l = parseFloat(levelIn.value);
    if (!isNaN(w) && !isNaN(l) && w > 0) { setWindow(l - w / 2, l + w / 2, true); presetSel.value = ""; }
  }
  windowIn.addEventListener("change", fromInputs);
  levelIn.addEventListener("change", fromInputs);
  planeSel.addEventListener("change", function () {
    var option = planeSel.options[planeSel.selectedIndex];
    var count = parseInt(option.getAttribute("data-count"), 10);
    indexIn.max = String(count); countOut.textContent = String(count);
    indexIn.value = String(parseInt(option.getAttribute("data-middle"), 10) + 1);
    state.box = null; state.cursor = null; state.anchor = null;
    reload(false);
  });
  indexIn.addEventListener("change", function () {
    var n = parseInt(indexIn.max, 10), v = parseInt(indexIn.value, 10);
    indexIn.value = String(Math.max(1, Math.min(n, isNaN(v) ? 1 : v)));
    reload(false);
  });
  ["h0", "h1", "v0", "v1"].forEach(function (k) { boxIn[k].addEventListener("change", inputsToBox); });
  compareSel.addEventListener("change", function () {
    state.compare = compareSel.value;
    $("vt-pane-1").hidden = !state.compare;
    if (!state.compare) { state.slices[1] = null; draw(); root.setAttribute("data-ready", plane() + "/" + index() + "/-"); return; }
    reload(false);
  });

  reload(true);
})();
