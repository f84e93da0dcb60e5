/* Batch upload: several MDF files, each with its subject's injection, scanner and time
   point, uploaded one after another through window.MpiTus (tus-core.js), each resumable,
   each with its own progress and result. */
(function () {
  "use strict";
  var form = document.getElementById("batch-form");
  if (!form) { return; }
  var input = document.getElementById("batch-files");
  var body = document.getElementById("batch-rows");
  var template = document.getElementById("batch-row-template");
  var start = document.getElementById("batch-start");
  var summary = document.getElementById("batch-summary");
  var scanUrl = form.getAttribute("data-scan-url");
  var rows = [];
  var busy = false;

  function addRow(file) {
    var row = template.content.firstElementChild.cloneNode(true);
    var n = rows.length + 1;
    row.querySelector(".batch-file").textContent = file.name + " · " + file.size.toLocaleString() + " bytes";
    ["injection", "scanner", "hours"].forEach(function (name) {
      var el = row.querySelector("[data-name='" + name + "']");
      var label = row.querySelector("label[data-for='" + name + "']");
      el.id = "batch-" + name + "-" + n;
      label.setAttribute("for", el.id);
    });
    var bar = row.querySelector("progress");
    bar.id = "batch-progress-" + n;
    row.querySelector("label[data-for='progress']").setAttribute("for", bar.id);
    row.querySelector(".batch-remove").setAttribute("aria-label", "Remove " + file.name);
    row.querySelector(".batch-remove").addEventListener("click", function () {
      if (busy) { return; }
      rows = rows.filter(function (r) { return r.row !== row; });
      row.remove();
    });
    body.appendChild(row);
    rows.push({ file: file, row: row, done: false });
  }

  input.addEventListener("change", function () {
    Array.prototype.forEach.call(input.files, addRow);
    input.value = "";
  });

  function result(entry, text, tone) {
    var el = entry.row.querySelector(".batch-result");
    el.textContent = text;
    el.className = "batch-result small " + (tone || "");
  }

  async function send(entry) {
    var row = entry.row;
    var injection = row.querySelector("[data-name='injection']");
    var option = injection.options[injection.selectedIndex];
    var scanner = row.querySelector("[data-name='scanner']").value;
    var hours = row.querySelector("[data-name='hours']").value;
    var bar = row.querySelector("progress");
    if (!option || hours === "") { result(entry, "Choose the injection and the time point.", "error"); return false; }
    var outcome = await window.MpiTus.upload(entry.file, {
      endpoint: form.getAttribute("data-endpoint"),
      csrf: form.getAttribute("data-csrf"),
      chunkSize: parseInt(form.getAttribute("data-chunk-size"), 10) || 1048576,
      storageKey: "mpi-tus:" + option.getAttribute("data-subject") + ":" + entry.file.name + ":" + entry.file.size + ":" + entry.file.lastModified,
      metadata: { subject: option.getAttribute("data-subject"), injection: injection.value, scanner: scanner, hours: hours },
      findScan: true,
      onProgress: function (offset, size) {
        var percent = size ? (100 * offset) / size : 0;
        bar.value = percent;
        bar.textContent = Math.round(percent) + " %";
        result(entry, "Uploaded " + offset.toLocaleString() + " of " + size.toLocaleString() + " bytes.");
      },
      onMessage: function (text) { result(entry, text); }
    });
    if (outcome.scanId) {
      entry.done = true;
      var el = row.querySelector(".batch-result");
      el.textContent = "Uploaded: ";
      el.className = "batch-result small good";
      var link = document.createElement("a");
      link.href = scanUrl.replace(/0\/$/, outcome.scanId + "/");
      link.textContent = "scan #" + outcome.scanId + " is being processed";
      el.appendChild(link);
      return true;
    }
    var fields = Object.keys(outcome.fields || {}).map(function (k) { return outcome.fields[k].join(" "); }).join(" ");
    result(entry, "Refused: " + outcome.error + (fields && fields !== outcome.error ? " " + fields : ""), "error");
    return false;
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    if (busy) { return; }
    var waiting = rows.filter(function (r) { return !r.done; });
    if (!waiting.length) { summary.textContent = "Choose one or more scan files first."; input.focus(); return; }
    busy = true;
    start.disabled = true;
    var ok = 0, refused = 0;
    for (var i = 0; i < waiting.length; i++) {
      summary.textContent = "Uploading file " + (i + 1) + " of " + waiting.length + "…";
      try { if (await send(waiting[i])) { ok += 1; } else { refused += 1; } }
      catch (error) { refused += 1; result(waiting[i], "The upload stopped: " + error + ". Choose the file again to resume.", "error"); }
    }
    summary.textContent = ok + " uploaded, " + refused + " not uploaded.";
    busy = false;
    start.disabled = false;
  });
})();
