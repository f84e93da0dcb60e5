// A form's submit buttons are disabled once it is submitted, so a double click sends it
// once. A courtesy only: the server's one-time form token (idempotency.middleware) is
// what keeps a second submission from saving twice.
(function () {
  "use strict";
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || (form.method || "").toLowerCase() !== "post") return;
    // A page's own script that sends the form itself (fetch) has cancelled the navigation.
    if (event.defaultPrevented) return;
    if (form.dataset.submitted === "1") { event.preventDefault(); return; }
    form.dataset.submitted = "1";
    // After this event: the button that submitted must still be sent with the form.
    window.setTimeout(function () {
      form.querySelectorAll("button[type=submit], input[type=submit]").forEach(function (b) { b.disabled = true; });
    }, 0);
    // Back to usable when the page is shown again from the back/forward cache.
    window.addEventListener("pageshow", function () {
      form.dataset.submitted = "";
      form.querySelectorAll("button[type=submit], input[type=submit]").forEach(function (b) { b.disabled = false; });
    }, { once: true });
  });
})();
