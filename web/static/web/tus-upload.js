/* A small tus 1.0.0 client (creation, checksum) in plain JavaScript, for the scan
   upload page. POST creates the upload, HEAD asks its offset, PATCH sends chunks with
   "Upload-Checksum: sha256 <base64>" (crypto.subtle.digest). The upload URL is kept in
   localStorage under the file's name, size and modification time, so after a reload
   or a dropped connection choosing the same file resumes where the server stopped.
   Server side: imaging/uploads.py. */
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  if (!form) { return; }
  var TUS = "1.0.0";
  var endpoint = form.getAttribute("data-endpoint");
  var subject = form.getAttribute("data-subject");
  var csrf = form.getAttribute("data-csrf");
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

  function hex(buffer) {
    return Array.prototype.map.call(new Uint8Array(buffer), function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  function base64(buffer) {
    var bytes = new Uint8Array(buffer), binary = "";
    for (var i = 0; i < bytes.length; i++) { binary += String.fromCharCode(bytes[i]); }
    return btoa(binary);
  }

  function b64text(value) {
    return btoa(unescape(encodeURIComponent(String(value))));
  }

  function sleep(ms) { return new Promise(function (resolve) { setTimeout(resolve, ms); }); }

  function headers(extra) {
    var h = { "Tus-Resumable": TUS, "X-CSRFToken": csrf };
    Object.keys(extra || {}).forEach(function (k) { h[k] = extra[k]; });
    return h;
  }

  function clearFieldErrors() {
    Array.prototype.forEach.call(form.querySelectorAll(".js-error"), function (el) { el.remove(); });
  }

  function showError(response) {
    return response.text().then(function (body) {
      var message = "The server refused the upload (HTTP " + response.status + ").";
      var fields = {};
      try {
        var parsed = JSON.parse(body).error;
        message = parsed.message || message;
        fields = parsed.fields || {};
      } catch (e) { /* not JSON */ }
      var placed = false;
      Object.keys(fields).forEach(function (name) {
        var input = document.getElementById("id_" + name);
        if (input) {
          var p = document.createElement("p");
          p.className = "errorlist js-error";
          p.setAttribute("role", "alert");
          p.textContent = fields[name].join(" ");
          input.insertAdjacentElement("afterend", p);
          placed = true;
        }
      });
      say(message, true);
      return placed;
    });
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

  /* HEAD the stored upload: its offset, or null when it is gone and must start over. */
  function resumeOffset(url) {
    return fetch(url, { method: "HEAD", headers: headers(), credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? parseInt(r.headers.get("Upload-Offset"), 10) : null; });
  }

  function create(file, sha256) {
    var metadata = {
      subject: subject, injection: form.elements.injection.value, scanner: form.elements.scanner.value,
      hours: form.elements.hours.value, sha256: sha256, filename: file.name
    };
    var encoded = Object.keys(metadata).map(function (k) { return k + " " + b64text(metadata[k]); }).join(",");
    return fetch(endpoint, {
      method: "POST", credentials: "same-origin",
      headers: headers({ "Upload-Length": String(file.size), "Upload-Metadata": encoded })
    }).then(function (r) {
      if (r.status !== 201) { return showError(r).then(function () { return null; }); }
      return r.headers.get("Location");
    });
  }

  function findScan(sha256) {
    return fetch("/api/v1/scans/?subject=" + subject + "&page_size=500", { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (page) {
        var match = (page.results || []).filter(function (s) { return s.sha256 === sha256; })[0];
        return match ? match.id : null;
      });
  }

  /* The whole file's SHA-256, read in slices so a 10 GB scan never sits in memory
     (WebCrypto has no incremental digest; js-sha256, vendored, does). */
  async function fileSha256(file) {
    var hash = sha256.create();
    var slice = 8 * 1024 * 1024;
    for (var at = 0; at < file.size; at += slice) {
      hash.update(await file.slice(at, Math.min(at + slice, file.size)).arrayBuffer());
      say("Computing the file's SHA-256… " + Math.round((100 * Math.min(at + slice, file.size)) / file.size) + " %");
    }
    return hash.hex();
  }

  async function upload(file) {
    clearFieldErrors();
    var sha256 = await fileSha256(file);
    var key = storageKey(file);
    var url = localStorage.getItem(key);
    var offset = null;
    if (url) {
      try { offset = await resumeOffset(url); } catch (e) { offset = null; }
      if (offset === null) { localStorage.removeItem(key); url = null; }
      else { say("Resuming at " + Math.round((100 * offset) / file.size) + " %."); }
    }
    if (!url) {
      url = await create(file, sha256);
      if (!url) { return null; }
      localStorage.setItem(key, url);
      offset = 0;
    }
    setProgress(offset, file.size);
    var chunkSize = parseInt(form.getAttribute("data-chunk-size"), 10) || 1048576;
    var failures = 0;
    while (true) {
      if (offset >= file.size) {
        // The last PATCH answered, but its answer was lost: the scan exists already.
        localStorage.removeItem(key);
        return findScan(sha256);
      }
      var chunk = await file.slice(offset, Math.min(offset + chunkSize, file.size)).arrayBuffer();
      var digest = base64(await crypto.subtle.digest("SHA-256", chunk));
      var response;
      try {
        response = await fetch(url, {
          method: "PATCH", credentials: "same-origin", body: chunk,
          headers: headers({ "Content-Type": "application/offset+octet-stream", "Upload-Offset": String(offset),
                             "Upload-Checksum": "sha256 " + digest })
        });
      } catch (networkError) {
        failures += 1;
        if (failures > 8) { say("The connection is lost. Choose the file again to resume later.", true); return null; }
        var wait = Math.min(1000 * Math.pow(2, failures - 1), 15000);
        say("Connection lost: retrying in " + Math.round(wait / 1000) + " s (attempt " + failures + ")…", true);
        await sleep(wait);
        try { var server = await resumeOffset(url); if (server !== null) { offset = server; } } catch (e) { /* next round */ }
        continue;
      }
      if (response.status === 204) {
        failures = 0;
        offset = parseInt(response.headers.get("Upload-Offset"), 10);
        setProgress(offset, file.size);
        say("Uploaded " + offset.toLocaleString() + " of " + file.size.toLocaleString() + " bytes.");
        var scanId = response.headers.get("Scan-Id");
        if (scanId) { localStorage.removeItem(key); return scanId; }
      } else if (response.status === 460 || response.status === 409) {
        // A damaged chunk (checksum) or an offset out of step: ask the server and go on from there.
        failures += 1;
        if (failures > 5 || response.status === 409 && response.headers.get("Scan-Id")) { await showError(response); return null; }
        var at = await resumeOffset(url);
        if (at === null) { localStorage.removeItem(key); await showError(response); return null; }
        offset = at;
      } else {
        if (response.status === 404 || response.status === 410) { localStorage.removeItem(key); }
        await showError(response);
        return null;
      }
    }
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
