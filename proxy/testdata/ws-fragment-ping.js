// Drives the proxy with the npm `ws` client (issue 11 item 10): one stdin
// message sent as two fragments with a ping in between, the way ws's own
// API produces it: send(a, {fin:false}); ping(); send(b, {fin:true}).
// Arguments: url token protocol first second binary(0|1) echoBytes.
// The fragments arrive hex-encoded. It closes with 1000 once echoBytes
// bytes of frames came back, and prints one JSON line per event.
const WebSocket = require('ws');
const [url, token, protocol, first, second, binary, echoBytes] = process.argv.slice(2);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const ws = new WebSocket(url, [protocol], { headers: { Authorization: 'Bearer ' + token } });
const isBinary = binary === '1';
const frag = (hex) => (isBinary ? Buffer.from(hex, 'hex') : Buffer.from(hex, 'hex').toString('latin1'));
let got = 0;
ws.on('open', () => {
  ws.send(frag(first), { binary: isBinary, fin: false });
  ws.ping(Buffer.from('between'));
  ws.send(frag(second), { binary: isBinary, fin: true });
});
ws.on('pong', (data) => out({ event: 'pong', data: data.toString() }));
ws.on('message', (data) => {
  const b = Buffer.from(data);
  out({ event: 'message', hex: b.toString('hex') });
  got += b.length - 1; // the channel byte
  if (got >= Number(echoBytes)) ws.close(1000);
});
ws.on('close', (code) => { out({ event: 'close', code }); process.exit(0); });
ws.on('error', (err) => out({ event: 'error', error: String(err) }));
setTimeout(() => { out({ event: 'timeout' }); process.exit(2); }, 30000);
