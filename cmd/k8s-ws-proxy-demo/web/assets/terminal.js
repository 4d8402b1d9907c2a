// k8s-ws-proxy browser terminal: xterm.js (+ fit add-on) speaking
// v5.channel.k8s.io to the proxy. docs/browser.md shows this core as a
// snippet to embed; the demo page (index.html) is a thin wrapper around it.
//
// Wire: binary frames, first byte the channel (0 stdin, 1 stdout, 2 stderr,
// 3 status, 4 resize, 255 close a stream). The token rides in the
// base64url.bearer.authorization.k8s.io subprotocol: browsers cannot set an
// Authorization header on a WebSocket.
//
// Flow control, after xterm.js's guide (write callbacks and watermarks):
// bytes handed to term.write but not yet parsed are counted; above HIGH the
// page stops reading the socket until xterm.js is back under LOW. With
// WebSocketStream (Chromium) not reading is real back-pressure: the browser
// stops reading TCP, the proxy's writes wait, and so does the process. With
// a plain WebSocket (no way to stop reading) the page keeps xterm.js's queue
// from growing by pausing only its own parsing; frames wait in the browser.
(function (global) {
  "use strict";

  const HIGH = 512 * 1024; // pause reading above this many unparsed bytes
  const LOW = 64 * 1024; // resume below this

  function bearerProtocol(token) {
    const b64 = btoa(token).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
    return "base64url.bearer.authorization.k8s.io." + b64;
  }

  // exitOf reads the channel 3 Status: 0 for Success, the ExitCode cause of a
  // NonZeroExitCode failure, else null (the session ended some other way).
  function exitOf(status) {
    if (!status) return null;
    if (status.status === "Success") return 0;
    const causes = (status.details && status.details.causes) || [];
    for (const c of causes) {
      if (c.reason === "ExitCode") return parseInt(c.message, 10);
    }
    return null;
  }

  // connect opens a session in element. opts: url (the ws:// or wss:// exec
  // or attach URL), token, onEnd({exitCode, message, closeCode, reason}),
  // onOutput(bytes) (optional: each stdout/stderr payload as it goes to the
  // terminal), transport ("auto", "stream" or "websocket").
  function connect(element, opts) {
    const term = new global.Terminal({ scrollback: 5000, cursorBlink: true });
    const fit = new global.FitAddon.FitAddon();
    term.loadAddon(fit);
    term.open(element);
    fit.fit();

    const enc = new TextEncoder();
    const protocols = ["v5.channel.k8s.io", bearerProtocol(opts.token)];
    let status = null;
    // outputBytes: stdout and stderr bytes received; maxUnparsed: the most
    // bytes ever held by the page and xterm.js and not yet parsed.
    const stats = { outputBytes: 0, maxUnparsed: 0 };
    let queued = 0; // plain WebSocket only: bytes received, not yet handled
    let pending = 0; // bytes written to xterm.js, not yet parsed
    let resume = null; // set while reading is paused
    let send = () => {};

    const frame = (channel, bytes) => {
      const f = new Uint8Array(bytes.length + 1);
      f[0] = channel;
      f.set(bytes, 1);
      return f;
    };
    const sendResize = () =>
      send(frame(4, enc.encode(JSON.stringify({ Width: term.cols, Height: term.rows }))));

    // handle one message from the proxy; returns once it is queued.
    const handle = (data) => {
      const b = data instanceof Uint8Array ? data : new Uint8Array(data);
      if (b.length === 0) return;
      const payload = b.subarray(1);
      switch (b[0]) {
        case 1:
        case 2:
          stats.outputBytes += payload.length;
          if (opts.onOutput) opts.onOutput(payload);
          pending += payload.length;
          stats.maxUnparsed = Math.max(stats.maxUnparsed, pending + queued);
          term.write(payload, () => {
            pending -= payload.length;
            if (resume && pending < LOW) {
              const r = resume;
              resume = null;
              r();
            }
          });
          break;
        case 3:
          try {
            status = JSON.parse(new TextDecoder().decode(payload));
          } catch (e) {
            status = { status: "Failure", message: new TextDecoder().decode(payload) };
          }
          break;
      }
    };
    const backlog = () => (pending > HIGH ? new Promise((r) => (resume = r)) : null);

    let ended = false;
    const end = (closeCode, reason) => {
      if (ended) return;
      ended = true;
      const exitCode = exitOf(status);
      const message = status && status.message ? status.message : "";
      if (opts.onEnd) opts.onEnd({ exitCode, message, closeCode, reason: reason || "" });
    };

    term.onData((d) => send(frame(0, enc.encode(d))));
    term.onBinary((d) => send(frame(0, Uint8Array.from(d, (c) => c.charCodeAt(0)))));
    term.onResize(sendResize);
    new ResizeObserver(() => fit.fit()).observe(element);

    const useStream = opts.transport === "stream" || (opts.transport !== "websocket" && "WebSocketStream" in global);
    if (useStream) {
      const wss = new global.WebSocketStream(opts.url, { protocols });
      wss.opened.then(
        async ({ readable, writable }) => {
          const writer = writable.getWriter();
          send = (f) => writer.write(f).catch(() => {});
          sendResize();
          const reader = readable.getReader();
          try {
            for (;;) {
              const { value, done } = await reader.read();
              if (done) break;
              if (typeof value !== "string") handle(value);
              const wait = backlog();
              if (wait) await wait; // stop reading: back-pressure to the process
            }
          } catch (e) {
            // an abnormal close; wss.closed says how
          }
          let info = { closeCode: 1006, reason: "connection lost" };
          try {
            info = await wss.closed;
          } catch (e) {}
          term.write("", () => end(info.closeCode, info.reason)); // after the last output is shown
        },
        () => end(1006, "connection refused (a refused token's reason is in the proxy's log; tokens are single-use)")
      );
    } else {
      const ws = new WebSocket(opts.url, protocols);
      ws.binaryType = "arraybuffer";
      // A plain WebSocket cannot stop reading: queue here, feed xterm.js
      // between the watermarks.
      const queue = [];
      let draining = false;
      const drain = async () => {
        if (draining) return;
        draining = true;
        while (queue.length) {
          const data = queue.shift();
          queued -= data.byteLength;
          handle(data);
          const wait = backlog();
          if (wait) await wait;
        }
        draining = false;
      };
      send = (f) => ws.readyState === WebSocket.OPEN && ws.send(f);
      ws.onopen = sendResize;
      ws.onmessage = (ev) => {
        queue.push(ev.data);
        queued += ev.data.byteLength;
        stats.maxUnparsed = Math.max(stats.maxUnparsed, pending + queued);
        drain();
      };
      ws.onclose = (ev) => {
        const finish = () =>
          queue.length || draining ? setTimeout(finish, 20) : term.write("", () => end(ev.code, ev.reason));
        finish();
      };
    }
    return { term, fit, stats };
  }

  global.K8sWsTerminal = { connect, exitOf, bearerProtocol };
})(window);
