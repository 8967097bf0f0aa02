/**
 * The node proxy's plaintext inbound listener: connections the node's steering table (nftables DNAT,
 * agent/proxy/pod-ingress.ts) sent here instead of to a pod port. Each one is plaintext from outside the mesh — a
 * meshed pod's connects reach the proxy at connect() and arrive as mTLS or the same-node hand-off — so it carries no
 * identity: no principal, no namespace.
 *   original destination ← getsockopt(SO_ORIGINAL_DST) (the conntrack entry of the DNAT)
 *   'police' → handed to the destination side (the same NodeProxy, normalisation and AuthorizationPolicy as HBONE
 *              streams) with source undefined;
 *   'refuse' → reset at once (mTLS STRICT: the client sees ECONNRESET, not a SYN timeout), counted;
 *   no original destination, or a destination that is not steered → reset (fail closed), counted.
 */
import koffi from 'koffi';
import net, { type Socket } from 'node:net';
import type { OriginalDestination } from './proxy.ts';
import { silentLogger, type ProxyLogger, type ProxyStats } from './stats.ts';
// A proxy worker listens on its primary's SO_REUSEPORT socket when it has one (graceful restarts).
import { listenOptionsFor } from './shared-listeners.ts';

/** Istio's inbound capture port; ours has the same role for plaintext. */
export const PLAINTEXT_INBOUND_PORT = 15006;

/** What the proxy does with plaintext to one destination. */
export type PlaintextHandling = 'police' | 'refuse';

/** Settings of the listener. */
export type PlaintextInboundOptions = {
  host: string;
  /** 0 picks a free port (tests). */
  port: number;
  /** Where the connection was going before the DNAT; default `readNatOriginalDst`. */
  originalDst?: (socket: Socket) => OriginalDestination | undefined;
  /** The handling of plaintext to `dst`; undefined: not a steered destination (reset). Read per connection. */
  handling(dst: OriginalDestination): PlaintextHandling | undefined;
  /** Serves a policed connection as unauthenticated (the caller's inbound NodeProxy). */
  serve(socket: Socket, dst: OriginalDestination, remoteAddress: string): void;
  /** Where the outcomes are counted. */
  stats: ProxyStats['plaintextInbound'];
  logger?: ProxyLogger;
};

const SOL_IP = 0;
const SO_ORIGINAL_DST = 80;
const AF_INET = 2;

type GetSockOpt = (fd: number, level: number, name: number, value: Buffer, len: Uint32Array) => number;
let getsockopt: GetSockOpt | undefined;

/** `struct sockaddr_in` → address and port (undefined when it is not AF_INET). */
export function parseSockaddrIn(b: Buffer): OriginalDestination | undefined {
  if (b.length < 8 || b.readUInt16LE(0) !== AF_INET) return undefined;
  return { ip: `${b[4]}.${b[5]}.${b[6]}.${b[7]}`, port: b.readUInt16BE(2) };
}

/**
 * The destination a NATed connection was going to (netfilter's SO_ORIGINAL_DST on the accepted socket), or undefined
 * when the socket has no fd or the connection was not NATed (ENOENT: no conntrack entry).
 */
export function readNatOriginalDst(socket: Socket): OriginalDestination | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) return undefined;
  getsockopt ??= koffi.load('libc.so.6').func('int getsockopt(int fd, int level, int name, void *value, uint32_t *len)') as unknown as GetSockOpt;
  const value = Buffer.alloc(16);
  const len = new Uint32Array([16]);
  if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, value, len) !== 0) return undefined;
  return parseSockaddrIn(value);
}

/** `::ffff:10.0.0.1` → `10.0.0.1`. */
function normalizeRemote(addr: string): string {
  return addr.startsWith('::ffff:') && net.isIPv4(addr.slice(7)) ? addr.slice(7) : addr;
}

/** The plaintext inbound listener of a node proxy worker. */
export class PlaintextInboundListener {
  readonly #o: PlaintextInboundOptions;
  readonly #log: ProxyLogger;
  readonly #server: net.Server;
  #port = 0;

  private constructor(o: PlaintextInboundOptions) {
    this.#o = o;
    this.#log = o.logger ?? silentLogger;
    this.#server = net.createServer({ allowHalfOpen: true }, (s) => this.#onConnection(s));
  }

  /** Starts listening; rejects when the address is taken. */
  static async start(o: PlaintextInboundOptions): Promise<PlaintextInboundListener> {
    const l = new PlaintextInboundListener(o);
    await new Promise<void>((resolve, reject) => {
      l.#server.once('error', (err) => reject(new Error(`cannot listen on ${o.host}:${o.port} for plaintext inbound (${err.message}); is another node proxy running?`, { cause: err })));
      l.#server.listen(listenOptionsFor(o.host, o.port), () => resolve());
    });
    l.#port = (l.#server.address() as net.AddressInfo).port;
    return l;
  }

  /** The bound port. */
  get port(): number { return this.#port; }

  /** Stops accepting (connections already handed on are the NodeProxy's). */
  close(): Promise<void> {
    return new Promise((r) => this.#server.close(() => r()));
  }

  #onConnection(socket: Socket): void {
    socket.on('error', () => {});
    const remoteAddress = normalizeRemote(socket.remoteAddress ?? '');
    let dst: OriginalDestination | undefined;
    try {
      dst = (this.#o.originalDst ?? readNatOriginalDst)(socket);
    } catch (err) {
      this.#log.warn('plaintext inbound: original destination unreadable', { err: (err as Error).message });
    }
    const handling = dst ? this.#o.handling(dst) : undefined;
    if (dst && handling === 'police') {
      this.#o.stats.policed++;
      this.#o.serve(socket, dst, remoteAddress);
      return;
    }
    if (handling === 'refuse') {
      this.#o.stats.strictRefused++;
      this.#log.info('plaintext to a STRICT pod port refused', { dst: `${dst!.ip}:${dst!.port}`, remote: remoteAddress });
    } else {
      // Fail closed: a connection we cannot place (no NAT record, or a port no longer steered) reaches no pod.
      this.#o.stats.refused++;
      this.#log.debug('plaintext inbound connection refused: not a steered destination', { dst: dst ? `${dst.ip}:${dst.port}` : undefined, remote: remoteAddress });
    }
    socket.resetAndDestroy();
  }
}
