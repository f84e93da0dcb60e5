/* The browser's one tus 1.0.0 client (creation, checksum, resume, retries), used by the
   scan upload page (tus-upload.js) and the batch page (batch-upload.js), as a function any
   page can call for one file: window.MpiTus.upload(file, options) resolves
   to {scanId} or {error, fields}. POST creates the upload, HEAD asks its offset, PATCH
   sends chunks with "Upload-Checksum: sha256 <base64>". The upload URL is kept in
   localStorage under options.storageKey, so choosing the same file again after a reload
   or a dropped connection resumes where the server stopped. Server: imaging/uploads.py.
   Needs js-sha256 (vendored) for the whole file's digest.

   options: endpoint, csrf, chunkSize, storageKey, metadata (sent with sha256 and
   filename); optional onProgress(offset, size, detail) (detail.chunk is true after an
   accepted chunk, false for the starting offset) and onMessage(text, detail) (detail.code
   is "hashing" {percent}, "resuming" {percent} or "retrying" {seconds, attempt}, so a page
   can word the message itself). With findScan: true, an upload the server already holds
   complete (the last chunk's answer was lost) resolves to the scan of the same sha256 for
   metadata.subject (GET /api/v1/scans/). A refusal's object carries a code too:
   "refused" (the server's answer, with its HTTP status), "connection-lost" or "complete". */
(function () {
  "use strict";
  var TUS = "1.0.0";

  function base64(buffer) {
    var bytes = new Uint8Array(buffer), binary = "";
    for (var i = 0; i < bytes.length; i++) { binary += String.fromCharCode(bytes[i]); }
    return btoa(binary);
  }
  function b64text(value) { return btoa(unescape(encodeURIComponent(String(value)))); }
  function sleep(ms) { return new Promise(function (resolve) { setTimeout(resolve, ms); }); }

  function refusal(response) {
    return response.text().then(function (body) {
      var out = { error: "The server refused the upload (HTTP " + response.status + ").", fields: {},
                  code: "refused", status: response.status };
      try {
        var parsed = JSON.parse(body).error;
        out.error = parsed.message || out.error;
        out.fields = parsed.fields || {};
      } catch (e) { /* not JSON */ }
      return out;
    });
  }

  async function fileSha256(file, say) {
    var hash = sha256.create();
    var slice = 8 * 1024 * 1024;
    for (var at = 0; at < file.size; at += slice) {
      hash.update(await file.slice(at, Math.min(at + slice, file.size)).arrayBuffer());
      var percent = Math.round((100 * Math.min(at + slice, file.size)) / file.size);
      say("Computing SHA-256… " + percent + " %", { code: "hashing", percent: percent });
    }
    return hash.hex();
  }

  /* The subject's scan whose file has this sha256, or null. */
  function findScan(subject, digest) {
    return fetch("/api/v1/scans/?subject=" + encodeURIComponent(subject) + "&page_size=500", { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (page) {
        var match = (page.results || []).filter(function (s) { return s.sha256 === digest; })[0];
        return match ? match.id : null;
      });
  }

  async function upload(file, o) {
    var say = o.onMessage || function () {};
    var progress = o.onProgress || function () {};
    function headers(extra) {
      var h = { "Tus-Resumable": TUS, "X-CSRFToken": o.csrf };
      Object.keys(extra || {}).forEach(function (k) { h[k] = extra[k]; });
      return h;
    }
    function resumeOffset(url) {
      return fetch(url, { method: "HEAD", headers: headers(), credentials: "same-origin", cache: "no-store" })
        .then(function (r) { return r.ok ? parseInt(r.headers.get("Upload-Offset"), 10) : null; });
    }
    var digest = await fileSha256(file, say);
    var url = localStorage.getItem(o.storageKey), offset = null;
    if (url) {
      try { offset = await resumeOffset(url); } catch (e) { offset = null; }
      if (offset === null) { localStorage.removeItem(o.storageKey); url = null; }
      else {
        var resumedAt = Math.round((100 * offset) / file.size);
        say("Resuming at " + resumedAt + " %.", { code: "resuming", percent: resumedAt });
      }
    }
    if (!url) {
      var metadata = Object.assign({}, o.metadata, { sha256: digest, filename: file.name });
      var encoded = Object.keys(metadata).map(function (k) { return k + " " + b64text(metadata[k]); }).join(",");
      var created = await fetch(o.endpoint, {
        method: "POST", credentials: "same-origin",
        headers: headers({ "Upload-Length": String(file.size), "Upload-Metadata": encoded })
      });
      if (created.status !== 201) { return refusal(created); }
      url = created.headers.get("Location");
      localStorage.setItem(o.storageKey, url);
      offset = 0;
    }
    progress(offset, file.size, { chunk: false });
    var failures = 0;
    while (true) {
      if (offset >= file.size) {
        // The last PATCH answered, but its answer was lost: the scan exists already.
        localStorage.removeItem(o.storageKey);
        if (o.findScan && o.metadata && o.metadata.subject) {
          var found = await findScan(o.metadata.subject, digest);
          if (found) { return { scanId: String(found) }; }
        }
        return { error: "The upload is complete; open the upload history for its scan.", fields: {}, code: "complete" };
      }
      var chunk = await file.slice(offset, Math.min(offset + o.chunkSize, file.size)).arrayBuffer();
      var sum = base64(await crypto.subtle.digest("SHA-256", chunk));
      var response;
      try {
        response = await fetch(url, {
          method: "PATCH", credentials: "same-origin", body: chunk,
          headers: headers({ "Content-Type": "application/offset+octet-stream", "Upload-Offset": String(offset),
                             "Upload-Checksum": "sha256 " + sum })
        });
      } catch (networkError) {
        failures += 1;
        if (failures > 8) { return { error: "The connection is lost: choose the file again to resume.", fields: {}, code: "connection-lost" }; }
        var wait = Math.min(1000 * Math.pow(2, failures - 1), 15000);
        say("Connection lost: retrying in " + Math.round(wait / 1000) + " s…",
            { code: "retrying", seconds: Math.round(wait / 1000), attempt: failures });
        await sleep(wait);
        try { var server = await resumeOffset(url); if (server !== null) { offset = server; } } catch (e) { /* next round */ }
        continue;
      }
      if (response.status === 204) {
        failures = 0;
        offset = parseInt(response.headers.get("Upload-Offset"), 10);
        progress(offset, file.size, { chunk: true });
        var scanId = response.headers.get("Scan-Id");
        if (scanId) { localStorage.removeItem(o.storageKey); return { scanId: scanId }; }
      } else if (response.status === 460 || response.status === 409) {
        // A damaged chunk (checksum) or an offset out of step: ask the server and go on from there,
        // unless the answer names a scan (the upload is over).
        failures += 1;
        if (failures > 5 || (response.status === 409 && response.headers.get("Scan-Id"))) { return refusal(response); }
        var at = await resumeOffset(url);
        if (at === null) { localStorage.removeItem(o.storageKey); return refusal(response); }
        offset = at;
      } else {
        if (response.status === 404 || response.status === 410) { localStorage.removeItem(o.storageKey); }
        return refusal(response);
      }
    }
  }

  window.MpiTus = { upload: upload, findScan: findScan };
})();
