/** Test-only: raw HTTP/2 frames (RFC 9113) and a minimal HPACK encoder, for attacks no well-behaved client sends. */
import net from 'node:net';

export const FRAME = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 } as const;
export const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const;
export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/** One frame: 9-byte header (length, type, flags, stream id) and payload. */
export function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(streamId & 0x7fffffff, 5);
  return Buffer.concat([h, payload]);
}

/** A SETTINGS frame with `[id, value]` entries. */
export function settings(entries: [number, number][] = []): Buffer {
  const p = Buffer.alloc(entries.length * 6);
  entries.forEach(([id, v], i) => { p.writeUInt16BE(id, i * 6); p.writeUInt32BE(v, i * 6 + 2); });
  return frame(FRAME.SETTINGS, 0, 0, p);
}

/** HPACK integer with an `n`-bit prefix whose high bits are `mask`. */
function hpackInt(value: number, n: number, mask: number): Buffer {
  const max = (1 << n) - 1;
  if (value < max) return Buffer.from([mask | value]);
  const out = [mask | max];
  let v = value - max;
  while (v >= 128) { out.push((v % 128) + 128); v = Math.floor(v / 128); }
  out.push(v);
  return Buffer.from(out);
}

function hpackString(s: string): Buffer {
  const b = Buffer.from(s, 'latin1');
  return Buffer.concat([hpackInt(b.length, 7, 0), b]);
}

/** A literal field without indexing (new name). */
export function literal(name: string, value: string): Buffer {
  return Buffer.concat([Buffer.from([0x00]), hpackString(name), hpackString(value)]);
}

/** A literal field with incremental indexing (new name): it enters the dynamic table at index 62. */
export function literalIndexed(name: string, value: string): Buffer {
  return Buffer.concat([Buffer.from([0x40]), hpackString(name), hpackString(value)]);
}

/** A reference to an entry of the static or dynamic table. */
export function indexed(index: number): Buffer {
  return hpackInt(index, 7, 0x80);
}

/** The header block of a simple request to `authority`. */
export function requestBlock(path = '/', authority = 'echo.default', method = 'GET'): Buffer {
  return Buffer.concat([literal(':method', method), literal(':scheme', 'http'), literal(':path', path), literal(':authority', authority)]);
}

/** Frames read back from the proxy, and whether it closed the connection. */
export type H2Reply = { frames: { type: number; flags: number; streamId: number; payload: Buffer }[]; closed: boolean; goawayCode: number | undefined };

/**
 * Connect, write the preface and `chunks` (a function may write more, e.g. a flood, as fast as the socket takes
 * it), optionally without reading anything back (`read: false` lets the proxy's write queue fill), then collect
 * frames until the proxy closes or `waitMs` passes.
 */
export function h2Exchange(port: number, chunks: Buffer[] | ((s: net.Socket) => Promise<void>), opts: { waitMs?: number; read?: boolean } = {}): Promise<H2Reply> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    const got: Buffer[] = [];
    let closed = false;
    const finish = (): void => {
      clearTimeout(timer);
      const buf = Buffer.concat(got);
      const frames: H2Reply['frames'] = [];
      for (let off = 0; off + 9 <= buf.length;) {
        const len = buf.readUIntBE(off, 3);
        if (off + 9 + len > buf.length) break;
        frames.push({ type: buf[off + 3]!, flags: buf[off + 4]!, streamId: buf.readUInt32BE(off + 5) & 0x7fffffff, payload: buf.subarray(off + 9, off + 9 + len) });
        off += 9 + len;
      }
      const goaway = frames.find((f) => f.type === FRAME.GOAWAY);
      resolve({ frames, closed, goawayCode: goaway ? goaway.payload.readUInt32BE(4) : undefined });
    };
    let timedOut = false;
    const timer = setTimeout(() => { timedOut = true; s.destroy(); }, opts.waitMs ?? 2000);
    s.on('error', () => {});
    // Closed by the proxy (FIN or reset) rather than by our own deadline.
    s.on('close', () => { closed = !timedOut; finish(); });
    if (opts.read === false) s.pause();
    else s.on('data', (d: Buffer) => got.push(d));
    s.on('connect', () => {
      s.write(Buffer.concat([PREFACE, settings()]));
      if (typeof chunks === 'function') {
        chunks(s).then(() => { if (opts.read === false) { s.on('data', (d: Buffer) => got.push(d)); s.resume(); } }, () => {});
      } else for (const c of chunks) s.write(c);
    });
  });
}

/** Write `make(i)` for i in 0..n-1, honouring backpressure, until done or the socket dies. */
export async function flood(s: net.Socket, n: number, make: (i: number) => Buffer): Promise<void> {
  for (let i = 0; i < n; i++) {
    if (s.destroyed || !s.writable) return;
    if (!s.write(make(i))) {
      await new Promise<void>((r) => {
        const t = setTimeout(r, 300);
        s.once('drain', () => { clearTimeout(t); r(); });
        s.once('close', () => { clearTimeout(t); r(); });
      });
    }
  }
}
