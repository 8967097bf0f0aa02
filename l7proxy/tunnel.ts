/** Byte pipes: opaque TCP to a chosen endpoint, and the two halves of an upgraded (WebSocket) connection. */
import net, { type Socket } from 'node:net';
import type { Duplex } from 'node:stream';

/** Connect to `ip:port` within `timeoutMs`; rejects with the socket error or a timeout. */
export function connectTcp(ip: string, port: number, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: ip, port, allowHalfOpen: true });
    const timer = setTimeout(() => { s.destroy(); reject(new Error(`connect to ${ip}:${port} timed out after ${timeoutMs} ms`)); }, timeoutMs);
    s.once('connect', () => { clearTimeout(timer); s.off('error', onError); resolve(s); });
    const onError = (err: Error): void => { clearTimeout(timer); reject(err); };
    s.once('error', onError);
  });
}

/**
 * Pipe `a` and `b` both ways until both sides end; an error or `idleTimeoutMs` without traffic on either side
 * destroys both. Half-close is passed through (one side's FIN ends the other's write side only).
 * Resolves with the bytes moved each way once both sockets are closed.
 */
export function pipeBoth(a: Duplex, b: Duplex, idleTimeoutMs: number): Promise<{ aToB: number; bToA: number }> {
  return new Promise((resolve) => {
    let aToB = 0; let bToA = 0; let closed = 0;
    let idle = setTimeout(onIdle, idleTimeoutMs);
    function onIdle(): void { a.destroy(); b.destroy(); }
    const touch = (): void => { clearTimeout(idle); idle = setTimeout(onIdle, idleTimeoutMs); };
    a.on('data', (d: Buffer) => { aToB += d.length; touch(); });
    b.on('data', (d: Buffer) => { bToA += d.length; touch(); });
    a.pipe(b);
    b.pipe(a);
    const onError = (): void => { a.destroy(); b.destroy(); };
    a.on('error', onError);
    b.on('error', onError);
    // One side fully closed: nothing more can flow to it, so finish writing to the other and let it go.
    const onClose = (other: Duplex) => (): void => {
      if (++closed === 2) { clearTimeout(idle); resolve({ aToB, bToA }); return; }
      other.end();
      setTimeout(() => other.destroy(), 5000).unref();
    };
    a.on('close', onClose(b));
    b.on('close', onClose(a));
  });
}
