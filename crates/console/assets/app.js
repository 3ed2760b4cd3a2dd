// Live progress for a running task: the page works without this (it says
// to reload); with it, the figures update from the server's events, and
// the page reloads once when the task ends to show its result.
"use strict";
(function () {
  var card = document.querySelector("[data-events]");
  if (!card || !window.EventSource || !card.querySelector("[data-field]")) return;
  var source = new EventSource(card.getAttribute("data-events"));
  source.onmessage = function (e) {
    var s = JSON.parse(e.data);
    card.querySelectorAll("[data-field]").forEach(function (el) {
      var v = s[el.getAttribute("data-field")];
      if (v !== undefined) el.textContent = v;
    });
    // The steps so far, as text (never as markup).
    var log = card.querySelector("[data-log]");
    var last = log && log.lastElementChild;
    if (log && s.log && (s.log.length !== log.children.length ||
        (last && last.textContent !== s.log[s.log.length - 1]))) {
      log.textContent = "";
      s.log.forEach(function (line) {
        var li = document.createElement("li");
        li.textContent = line;
        log.appendChild(li);
      });
    }
    if (s.done) { source.close(); window.location.reload(); }
  };
  source.onerror = function () { source.close(); };
})();
