// The triage console's script (served as /static/console.js under a strict CSP). Optional:
// every page is complete without it. It
// - refreshes the live regions ([data-live]) every data-refresh-seconds by fetching the
//   current URL, whose query string carries the filter, so nothing the analyst chose is lost;
//   it skips a refresh while a form field has focus (typing) or the page is hidden, and the
//   header button pauses it (remembered per tab); each swap bumps body[data-refreshed];
// - copies hashes: buttons with data-copy write it to the clipboard.
// Swapped markup comes from this server (escaped there) and is parsed inert by DOMParser.
(function () {
  "use strict";
  var body = document.body;
  var seconds = parseInt(body.getAttribute("data-refresh-seconds"), 10) || 10;
  var toggle = document.getElementById("refresh-toggle");
  var paused = false;
  try { paused = sessionStorage.getItem("krs-refresh-paused") === "1"; } catch (e) { /* none */ }

  function showToggle() {
    if (!toggle) { return; }
    toggle.hidden = false;
    toggle.setAttribute("aria-pressed", paused ? "true" : "false");
    toggle.textContent = paused ? "Auto-refresh paused" : "Auto-refresh on (" + seconds + " s)";
  }

  function typing() {
    var el = document.activeElement;
    return !!el && (el.tagName === "INPUT" || el.tagName === "SELECT" || el.tagName === "TEXTAREA");
  }

  function refresh() {
    if (paused || typing() || document.visibilityState === "hidden") { return; }
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (text) {
        if (paused || typing()) { return; }
        var fresh = new DOMParser().parseFromString(text, "text/html");
        document.querySelectorAll("[data-live]").forEach(function (old) {
          var next = old.id && fresh.getElementById(old.id);
          if (next) { old.replaceWith(document.importNode(next, true)); }
        });
        wireCopy(document);
        var n = (parseInt(body.getAttribute("data-refreshed"), 10) || 0) + 1;
        body.setAttribute("data-refreshed", String(n));
      })
      .catch(function () { body.setAttribute("data-refresh-failed", "1"); });
  }

  function wireCopy(root) {
    root.querySelectorAll("button.copy[data-copy]").forEach(function (button) {
      button.hidden = false;
      if (button.dataset.wired) { return; }
      button.dataset.wired = "1";
      button.addEventListener("click", function () {
        var text = button.getAttribute("data-copy");
        var done = function () {
          button.textContent = "Copied";
          button.classList.add("done");
          setTimeout(function () { button.textContent = "Copy"; button.classList.remove("done"); }, 1500);
        };
        if (navigator.clipboard && navigator.clipboard.writeText) {
          navigator.clipboard.writeText(text).then(done, function () { button.textContent = "Copy failed"; });
        }
      });
    });
  }

  if (toggle) {
    toggle.addEventListener("click", function () {
      paused = !paused;
      try { sessionStorage.setItem("krs-refresh-paused", paused ? "1" : "0"); } catch (e) { /* none */ }
      showToggle();
    });
  }
  // Filters apply on change, as a link would; the form still submits without the script.
  document.querySelectorAll("form.filters select").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });
  showToggle();
  wireCopy(document);
  if (document.querySelector("[data-live]")) { setInterval(refresh, seconds * 1000); }
}());
