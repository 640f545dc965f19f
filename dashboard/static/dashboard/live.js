/* The console's live sockets (docs/console.md, "Live updates").
 *
 * ccLive({path, state, onMessage, onOpen}) opens the socket at `path` on the realtime
 * service with a fresh single-use ticket from the web service (/admin/live/ticket/), and
 * keeps it open: after any close it asks for a new ticket and reconnects with exponential
 * back-off (1 s, 2 s, 4 s … 30 s, with jitter). onOpen(reconnected) runs on every open, so a
 * page fetches what it may have missed (before the first open, or during an outage).
 */
(function () {
  "use strict";
  const TICKET_URL = (document.currentScript && document.currentScript.dataset.ticketUrl) || "/admin/live/ticket/";

  window.ccLive = function (opts) {
    let attempt = 0;
    let opened = false;
    let socket = null;
    const setState = (text, cls) => {
      if (!opts.state) return;
      opts.state.textContent = text;
      opts.state.dataset.state = cls || text;
    };

    function retry() {
      attempt += 1;
      const base = Math.min(30000, 1000 * 2 ** Math.min(attempt - 1, 5));
      const delay = Math.round(base * (0.5 + Math.random() / 2));
      setState("reconnecting…", "reconnecting");
      setTimeout(connect, delay);
    }

    async function connect() {
      let response;
      try {
        response = await fetch(TICKET_URL + "?path=" + encodeURIComponent(opts.path), {
          credentials: "same-origin", cache: "no-store", headers: {Accept: "application/json"},
        });
      } catch (err) {
        return retry();  // the web service is unreachable: try again later
      }
      const json = (response.headers.get("Content-Type") || "").includes("application/json");
      if (response.status === 403 || response.redirected || (response.ok && !json)) {
        setState("signed out or not allowed: reload the page", "refused");
        return;  // no point retrying: the session is gone or lacks the permission
      }
      if (!response.ok) return retry();
      const {url} = await response.json();
      socket = new WebSocket(url);
      socket.onopen = () => {
        const reconnected = opened;
        opened = true;
        attempt = 0;
        setState("live");
        if (opts.onOpen) opts.onOpen(reconnected);
      };
      socket.onmessage = (ev) => { if (opts.onMessage) opts.onMessage(JSON.parse(ev.data)); };
      socket.onclose = () => { socket = null; retry(); };
    }

    connect();
    return {close: () => socket && socket.close()};
  };
})();
