/** Protocol detection on a fresh connection: HTTP/2 preface, HTTP/1 request line, or opaque TCP. */
import type { Socket } from 'node:net';

/** The HTTP/2 client connection preface (RFC 9113 §3.4). */
const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
/** Longest method token we wait for before deciding a flow is not HTTP/1. */
const MAX_METHOD = 24;

/** What the first bytes say, or that more bytes are needed to tell. */
export type DetectedProtocol = 'http1' | 'http2' | 'tcp';

/** Classify the bytes received so far. */
export function classifyPrefix(buf: Buffer): DetectedProtocol | 'need-more' {
  const n = Math.min(buf.length, H2_PREFACE.length);
  if (buf.subarray(0, n).equals(H2_PREFACE.subarray(0, n))) return buf.length >= H2_PREFACE.length ? 'http2' : 'need-more';
  // An HTTP/1 request line starts with an upper-case method token and a space.
  let i = 0;
  while (i < buf.length && i <= MAX_METHOD && buf[i]! >= 0x41 && buf[i]! <= 0x5a) i++;
  if (i === buf.length && i <= MAX_METHOD) return 'need-more';
  return i > 0 && buf[i] === 0x20 ? 'http1' : 'tcp';
}

/**
 * Read from `socket` until its protocol is known, then put every byte back (`unshift`) so the next owner sees the
 * stream untouched. A client that says nothing for `timeoutMs` is treated as TCP (server-first protocols).
 */
export function detectProtocol(socket: Socket, timeoutMs: number): Promise<DetectedProtocol> {
  return new Promise((resolve) => {
    let buf = Buffer.alloc(0);
    let done = false;
    const finish = (p: DetectedProtocol): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.off('readable', onReadable);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
      if (buf.length > 0) socket.unshift(buf);
      resolve(p);
    };
    const onReadable = (): void => {
      let chunk: Buffer | null;
      while ((chunk = socket.read() as Buffer | null) !== null) {
        buf = Buffer.concat([buf, chunk]);
        const c = classifyPrefix(buf);
        if (c !== 'need-more') { finish(c); return; }
      }
    };
    const onEnd = (): void => finish('tcp');
    // Timers run before I/O in an event-loop turn: after a stall (a busy or starved worker: a proxy restart on a
    // small node) the timer would fire before bytes already received are read. One more I/O turn reads them first.
    const timer = setTimeout(() => setImmediate(() => finish('tcp')), timeoutMs);
    socket.on('readable', onReadable);
    socket.on('end', onEnd);
    socket.on('close', onEnd);
  });
}
