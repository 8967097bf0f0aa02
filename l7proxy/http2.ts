/** HTTP/2 with prior knowledge on the same listener: limits per connection and rapid-reset protection. */
// nghttp2 already refuses CONTINUATION floods and caps reset bursts; on top of that each session counts the streams
// its client reset before we answered (CVE-2023-44487 pattern) and is told GOAWAY(ENHANCE_YOUR_CALM) once it goes
// over `http2MaxResetsPerWindow` within `http2ResetWindowMs`, whatever the reset rate nghttp2 tolerates.
import http2, { type Http2ServerRequest, type Http2ServerResponse, type ServerHttp2Session } from 'node:http2';
import type { EffectiveLimits } from './config.ts';

/** Handlers the HTTP/2 server calls. */
export type Http2Handlers = {
  /** A new session, emitted synchronously while the socket is handed over (so the caller can tag it). */
  session(session: ServerHttp2Session): void;
  request(req: Http2ServerRequest, res: Http2ServerResponse): void;
  /** The session was sent GOAWAY for resetting too many streams. */
  rapidReset(session: ServerHttp2Session): void;
};

/** An http2 server that never listens; sockets whose first bytes are the HTTP/2 preface are handed to it. */
export function createHttp2Server(limits: EffectiveLimits, handlers: Http2Handlers): http2.Http2Server {
  const server = http2.createServer({
    settings: {
      maxConcurrentStreams: limits.http2MaxConcurrentStreams,
      maxHeaderListSize: limits.maxHeaderBytes,
      enablePush: false,
      initialWindowSize: 64 * 1024,
    },
    // Pairs include the pseudo-headers (:method, :path, :scheme, :authority).
    maxHeaderListPairs: limits.maxHeaderCount + 4,
    maxSessionMemory: 10,
    // At most 32 entries per SETTINGS frame (a SETTINGS or PING flood from a client that does not read is cut by
    // nghttp2's outbound-queue limit with GOAWAY(ENHANCE_YOUR_CALM); hostile.test.ts checks both).
    maxSettings: 32,
    maxSessionRejectedStreams: 100,
    maxSessionInvalidFrames: 100,
    peerMaxConcurrentStreams: limits.http2MaxConcurrentStreams,
  });
  server.on('session', (session: ServerHttp2Session) => {
    const resets: number[] = [];
    session.on('stream', (stream) => {
      // A stream closed with an error code before any response header went out was reset by the client (our own
      // resets happen only after a response started). Checked at 'close' since nghttp2 may have seen the
      // RST_STREAM in the same read as the HEADERS, before any per-stream listener could be attached.
      stream.on('close', () => {
        if (stream.rstCode === http2.constants.NGHTTP2_NO_ERROR || stream.headersSent) return;
        const now = Date.now();
        resets.push(now);
        while (resets.length > 0 && resets[0]! < now - limits.http2ResetWindowMs) resets.shift();
        if (resets.length > limits.http2MaxResetsPerWindow && !session.closed && !session.destroyed) {
          handlers.rapidReset(session);
          session.goaway(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
          session.destroy();
        }
      });
    });
    session.on('error', () => session.destroy());
    handlers.session(session);
  });
  server.on('request', handlers.request);
  return server;
}
