// The demo page: the session from the URL, the terminal from terminal.js.
"use strict";
// The session URL comes in the query (?session=wss://...), the token in
// the fragment (#token=...): a fragment never reaches a server or its log.
const query = new URLSearchParams(location.search);
const fragment = new URLSearchParams(location.hash.slice(1));
const token = fragment.get("token");
history.replaceState(null, "", location.pathname + location.search); // the token leaves the address bar
const statusEl = document.getElementById("status");

// For the browser tests: demoWatch(text) notes when text first arrives in the
// output, and how many output bytes had arrived by then, in demoSeen[text].
window.demoSeen = {};
const watched = [];
let carry = "";
window.demoWatch = (text) => watched.push(text);
function watchOutput(bytes) {
  if (!watched.length) return;
  const s = carry + new TextDecoder().decode(bytes);
  for (let i = watched.length - 1; i >= 0; i--) {
    if (s.includes(watched[i])) {
      window.demoSeen[watched[i]] = { at: performance.now(), bytes: window.demoStats.outputBytes };
      watched.splice(i, 1);
    }
  }
  carry = s.slice(-16);
}
if (!token || !query.get("session")) {
  statusEl.textContent = "missing ?session=<ws URL> or #token=<token>";
} else {
  const t = K8sWsTerminal.connect(document.getElementById("terminal"), {
    url: query.get("session"),
    token,
    transport: query.get("transport") || "auto",
    onOutput: watchOutput,
    onEnd: ({ exitCode, message, closeCode, reason }) => {
      const parts = [exitCode === null ? "session ended" : "exit code " + exitCode];
      if (message) parts.push(message);
      if (reason && reason !== message) parts.push(reason);
      parts.push("(close " + closeCode + ")");
      statusEl.textContent = parts.join(" — ");
      statusEl.className = exitCode === 0 ? "ended ok" : "ended";
      window.sessionEnd = { exitCode, message, closeCode, reason };
    },
  });
  statusEl.textContent = "connected to " + query.get("session").split("?")[0];
  t.term.focus();
  window.demoTerminal = t.term; // for the browser tests
  window.demoStats = t.stats;
  window.demoFit = t.fit;
}
