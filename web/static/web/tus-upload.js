/* The scan upload page: the form, the drop zone, progress, messages and field errors.
   The tus protocol itself (sha256, creation, HEAD offset, PATCH with Upload-Checksum,
   retries, localStorage resume) is window.MpiTus.upload of tus-core.js, loaded before
   this file. The upload is kept in localStorage under the subject and the file's name,
   size and modification time, so after a reload or a dropped connection choosing the
   same file resumes where the server stopped. Server side: imaging/uploads.py. */
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  if (!form) { return; }
  var subject = form.getAttribute("data-subject");
  var fileInput = document.getElementById("scan-file");
  var drop = document.getElementById("dropzone");
  var info = document.getElementById("file-info");
  var bar = document.getElementById("upload-progress");
  var text = document.getElementById("upload-text");
  var startButton = document.getElementById("upload-start");
  var chosen = null;
  var busy = false;

  function say(message, isError) {
    text.textContent = message;
    text.className = isError ? "error" : "small";
  }

  function setProgress(offset, size) {
    var percent = size ? (100 * offset) / size : 0;
    bar.value = percent;
    bar.textContent = Math.round(percent) + " %";
  }

  function storageKey(file) {
    return "mpi-tus:" + subject + ":" + file.name + ":" + file.size + ":" + file.lastModified;
  }

  function clearFieldErrors() {
    Array.prototype.forEach.call(form.querySelectorAll(".js-error"), function (el) { el.remove(); });
  }

  /* A refusal from MpiTus.upload: its field errors next to their fields, its message below the bar. */
  function showError(outcome) {
    var fields = outcome.fields || {};
    Object.keys(fields).forEach(function (name) {
      var input = document.getElementById("id_" + name);
      if (input) {
        var p = document.createElement("p");
        p.className = "errorlist js-error";
        p.setAttribute("role", "alert");
        p.textContent = fields[name].join(" ");
        input.insertAdjacentElement("afterend", p);
      }
    });
    say(outcome.code === "connection-lost" ? "The connection is lost. Choose the file again to resume later." : outcome.error, true);
  }

  function choose(file) {
    chosen = file;
    info.textContent = file ? file.name + " · " + file.size.toLocaleString() + " bytes" : "No file chosen.";
    if (file && localStorage.getItem(storageKey(file))) {
      say("An earlier upload of this file was interrupted: it will resume where it stopped.");
    }
  }

  fileInput.addEventListener("change", function () { choose(fileInput.files[0] || null); });
  drop.addEventListener("dragover", function (e) { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", function () { drop.classList.remove("over"); });
  drop.addEventListener("drop", function (e) {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) { choose(e.dataTransfer.files[0]); }
  });

  /* The page's wording of MpiTus's progress messages. */
  function onMessage(message, detail) {
    var code = detail && detail.code;
    if (code === "hashing") { say("Computing the file's SHA-256… " + detail.percent + " %"); }
    else if (code === "retrying") { say("Connection lost: retrying in " + detail.seconds + " s (attempt " + detail.attempt + ")…", true); }
    else { say(message); }
  }

  /* The scan id, or null when the upload was refused (the reason is shown). */
  async function upload(file) {
    clearFieldErrors();
    var outcome = await window.MpiTus.upload(file, {
      endpoint: form.getAttribute("data-endpoint"),
      csrf: form.getAttribute("data-csrf"),
      // Read at upload time: tests shrink it on the loaded page.
      chunkSize: parseInt(form.getAttribute("data-chunk-size"), 10) || 1048576,
      storageKey: storageKey(file),
      metadata: {
        subject: subject, injection: form.elements.injection.value, scanner: form.elements.scanner.value,
        hours: form.elements.hours.value
      },
      findScan: true,
      onMessage: onMessage,
      onProgress: function (offset, size, detail) {
        setProgress(offset, size);
        if (detail && detail.chunk) { say("Uploaded " + offset.toLocaleString() + " of " + size.toLocaleString() + " bytes."); }
      }
    });
    if (outcome.scanId) { return outcome.scanId; }
    showError(outcome);
    return null;
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (busy) { return; }
    if (!chosen) { say("Choose a scan file first.", true); fileInput.focus(); return; }
    busy = true;
    startButton.disabled = true;
    upload(chosen).then(function (scanId) {
      if (!scanId) { return; }
      say("Upload complete: the scan is being processed.");
      setProgress(1, 1);
      document.getElementById("scan-status").hidden = false;
      var link = document.getElementById("scan-link");
      link.href = form.getAttribute("data-scan-url").replace(/0\/$/, scanId + "/");
      link.hidden = false;
      window.MpiScanStatus.watch(scanId);
    }).catch(function (error) {
      say("The upload stopped: " + error + ". Choose the file again to resume.", true);
    }).then(function () { busy = false; startButton.disabled = false; });
  });
})();
