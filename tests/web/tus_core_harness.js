/* Runs web/static/web/tus-core.js under node with a scripted fetch, for
   tests/web/test_tus_core_protocol.py: argv[2] is the script's path, argv[3] a JSON
   scenario {stored, size, findScan, answers: [{method, status, headers, body}]}.
   Prints {outcome, requests, messages, progress, stored} as JSON. */
"use strict";
const fs = require("fs");
const scenario = JSON.parse(process.argv[3]);
const store = new Map(Object.entries(scenario.stored || {}));
globalThis.window = {};
globalThis.localStorage = {
  getItem: (k) => (store.has(k) ? store.get(k) : null),
  setItem: (k, v) => store.set(k, String(v)),
  removeItem: (k) => store.delete(k),
};
globalThis.sha256 = { create: () => ({ update() {}, hex: () => "ab".repeat(32) }) };
const requests = [];
const answers = scenario.answers.slice();
globalThis.fetch = async (url, init) => {
  const method = (init && init.method) || "GET";
  const headers = (init && init.headers) || {};
  requests.push({ method, url, offset: headers["Upload-Offset"] || null });
  const answer = answers.shift();
  if (!answer || answer.method !== method) { throw new Error("unexpected " + method + " " + url); }
  const h = answer.headers || {};
  return {
    status: answer.status, ok: answer.status >= 200 && answer.status < 300,
    headers: { get: (name) => (name in h ? String(h[name]) : null) },
    text: async () => JSON.stringify(answer.body || {}), json: async () => answer.body || {},
  };
};
eval(fs.readFileSync(process.argv[2], "utf8"));
const size = scenario.size;
const file = { name: "scan.mdf", size, lastModified: 1, slice: (a, b) => ({ arrayBuffer: async () => new ArrayBuffer(b - a) }) };
const messages = [], progress = [];
window.MpiTus.upload(file, {
  endpoint: "/api/v1/uploads/", csrf: "t", chunkSize: 4, storageKey: "k",
  metadata: { subject: "5", injection: "1", scanner: "2", hours: "24" }, findScan: scenario.findScan,
  onMessage: (text, detail) => messages.push(detail.code),
  onProgress: (offset, total, detail) => progress.push([offset, detail.chunk]),
}).then((outcome) => {
  console.log(JSON.stringify({ outcome, requests, messages, progress, stored: Object.fromEntries(store) }));
});
