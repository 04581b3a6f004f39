// sitemap-worker dashboard: live updates, a few lines of plain JavaScript. The pages are
// complete without it; with it, a page re-reads itself from the server and swaps the part
// that changes. Triggers: the API's event stream (GET /api/v3/events: `status` and
// `resync` events), and on a running job's page a short poll, since progress moves without
// a status change. No framework, no build step.
(function () {
  "use strict";
  var main = document.getElementById("main");
  if (!main || !main.dataset.live || !window.fetch || !window.DOMParser) return;
  var mode = main.dataset.live;
  if (mode === "poll" && main.dataset.terminal === "true") return;  // nothing will change
  var jobId = main.dataset.job;
  var swapId = main.dataset.swap || "main";
  var debounceMs = Number(main.dataset.debounce) || DEBOUNCE_MS;
  // A running job's progress moves every moment; a waiting one changes status only, which
  // the event stream reports, so it is polled slowly (in case there is no stream).
  var POLL_MS = 1500, POLL_WAITING_MS = 10000, DEBOUNCE_MS = 700;
  var source = null, poller = null, timer = null, busy = false, again = false, stopped = false;

  function openDetails() {
    var open = [];
    main.querySelectorAll("details[open]").forEach(function (d) {
      var li = d.closest("[data-file]");
      if (li) open.push(li.dataset.file);
    });
    return open;
  }

  function restoreDetails(open) {
    open.forEach(function (id) {
      var d = main.querySelector('[data-file="' + id + '"] > details');
      if (d) d.open = true;
    });
  }

  function refresh() {
    if (stopped) return;
    if (busy) { again = true; return; }
    busy = true;
    fetch(location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (text) {
        var doc = new DOMParser().parseFromString(text, "text/html");
        var fresh = doc.getElementById("main");
        if (!fresh) return;
        if (swapId === "main") {
          var open = openDetails();
          main.innerHTML = fresh.innerHTML;
          restoreDetails(open);
          main.dataset.terminal = fresh.dataset.terminal || "";
          main.dataset.status = fresh.dataset.status || "";
        } else {
          var now = document.getElementById(swapId), next = doc.getElementById(swapId);
          if (now && next) now.replaceWith(next);
        }
        if (mode === "poll" && main.dataset.terminal === "true") stop();
      })
      .catch(function () { /* the next trigger tries again */ })
      .then(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }

  function soon() {
    if (timer) return;
    timer = setTimeout(function () { timer = null; refresh(); }, debounceMs);
  }

  function concerns(data) {
    if (mode !== "poll") return true;
    try {
      return JSON.parse(data).some(function (job) {
        return String(job.job_id) === jobId || String(job.parent_id) === jobId;
      });
    } catch (e) { return true; }
  }

  function stop() {
    stopped = true;
    if (source) source.close();
    if (poller) clearInterval(poller);
  }

  if (window.EventSource) {
    source = new EventSource("/api/v3/events");
    source.addEventListener("status", function (e) { if (concerns(e.data)) soon(); });
    source.addEventListener("resync", soon);
    source.onerror = function () {
      // No stream on this server (or it ended for good): the poll, if any, carries on.
      if (source.readyState === EventSource.CLOSED) source = null;
    };
  }
  var lastPoll = 0;
  function tick() {
    var every = main.dataset.status === "processing" ? POLL_MS : POLL_WAITING_MS;
    if (document.hidden || Date.now() - lastPoll < every) return;
    lastPoll = Date.now();
    refresh();
  }
  if (mode === "poll") { lastPoll = Date.now(); poller = setInterval(tick, 500); }
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && !stopped) refresh();
  });
})();
