// Live regions: an element with data-live-src is refreshed from that URL (an HTML fragment
// rendered and escaped by the server) every second while the page is visible.
(function () {
  "use strict";
  var INTERVAL_MS = 1000;
  function refresh(el) {
    if (document.hidden) { return; }
    fetch(el.dataset.liveSrc, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) {
        if (r.redirected || r.status === 401 || r.status === 403) { window.location.reload(); return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) { if (html !== null && html !== el.innerHTML) { el.innerHTML = html; } })
      .catch(function () { /* the next tick tries again */ });
  }
  document.querySelectorAll("[data-live-src]").forEach(function (el) {
    window.setInterval(function () { refresh(el); }, INTERVAL_MS);
  });
})();
