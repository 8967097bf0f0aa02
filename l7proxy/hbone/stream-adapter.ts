/** A plain Duplex in front of an HTTP/2 tunnel stream, so HTTP/1 code writes to it as it would to a socket. */
// Why: Node's http.Server and undici cork their sockets and flush head and body with writev; handed an Http2Stream
// directly, the first chunk of a relayed response (the status line) arrived corrupted (seen on Node 24 with the
// head written before a piped body). Here what the writer hands over is copied and written in order (a corked
// batch as one buffer), with the stream's own backpressure; ends and resets pass through both ways.
import http2 from 'node:http2';
import { Duplex } from 'node:stream';

/** Wraps `h2` (a CONNECT stream of either side); the wrapper owns it from now on. */
export function adaptTunnelStream(h2: Duplex & { rstCode?: number }): Duplex {
  let ended = false;
  const d = new Duplex({
    allowHalfOpen: true,
    read() {
      h2.resume();
    },
    write(chunk: Buffer, _enc, cb) {
      // A copy: the writer may reuse its buffer once the callback fires, the HTTP/2 layer may still hold ours.
      h2.write(Buffer.from(chunk), cb);
    },
    writev(chunks, cb) {
      // What the writer corked together (an HTTP head and its body) goes out as one copy in one DATA frame, not a
      // frame (and a TLS record) per chunk.
      h2.write(Buffer.concat(chunks.map((c) => c.chunk as Buffer)), cb);
    },
    final(cb) {
      // The peer may have reset or closed the stream meanwhile: nothing left to end, and not our writer's error.
      if (h2.destroyed || h2.writableEnded) { cb(); return; }
      h2.end(() => cb());
    },
    destroy(err, cb) {
      if (!h2.destroyed) h2.destroy(err ?? undefined);
      cb(err);
    },
  });
  h2.on('data', (c: Buffer) => {
    if (!d.push(c)) h2.pause();
  });
  h2.on('end', () => {
    ended = true;
    d.push(null);
  });
  h2.on('error', (err: Error) => d.destroy(err));
  h2.on('close', () => {
    // A reset (not a clean close after both ends) aborts the wrapper too.
    if (h2.rstCode !== undefined && h2.rstCode !== http2.constants.NGHTTP2_NO_ERROR) d.destroy(new Error(`tunnel stream reset (code ${h2.rstCode})`));
    else if (!ended) d.push(null);
  });
  return d;
}
