// The operator dashboard, live: the server pushes the rendered fragment over /ws/dashboard.
// Without this script the page refreshes itself every few seconds (<noscript> meta refresh).
(function () {
  "use strict";
  var root = document.querySelector("[data-live]");
  var body = document.getElementById("ops-body");
  var badge = document.getElementById("ops-live");
  if (!root || !body || !("WebSocket" in window)) return;
  var delay = 1000;

  function state(text, off) {
    if (!badge) return;
    badge.hidden = false;
    badge.textContent = text;
    badge.classList.toggle("ops-off", !!off);
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var ws = new WebSocket(scheme + location.host + root.getAttribute("data-live"));
    ws.onopen = function () { delay = 1000; };
    ws.onmessage = function (event) {
      var frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      if (frame.type === "dashboard" && typeof frame.html === "string") {
        body.innerHTML = frame.html;
        state("Live", false);  // the socket is open and the feed is rendering: say so only now
      } else if (frame.type === "error") {
        state("Redis unavailable — retrying", true);
      }
    };
    ws.onclose = function () {
      state("Reconnecting…", true);
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    };
  }
  state("Connecting…", true);
  connect();
})();
