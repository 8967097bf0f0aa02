/**
 * Listening sockets the proxy's primary process makes itself (socket, SO_REUSEPORT, bind through libc) and hands
 * to its workers as file descriptors; the first worker's `listen` turns each into a listener.
 * Why: a graceful restart starts a new proxy process next to the old one on the same ports. Both processes must
 * have SO_REUSEPORT on their sockets, and Node's cluster module only makes the primary's shared socket without it
 * (`reusePort: true` in a cluster worker bypasses the primary: one socket per worker). A worker that listens on
 * `{ fd }` is served the primary's descriptor by the cluster module (documented: "file descriptor 7 in the parent
 * will be listened on"), so every worker still shares one socket, and the primary never accepts on it.
 * Why bound but not listening: a socket joins its SO_REUSEPORT group (and gets its share of new connections) only
 * once it listens. A proxy still starting (loading, forking workers, competing for CPU with the one it replaces)
 * would otherwise collect connections it cannot serve yet, and a connection accepted late has its first bytes
 * judged by a sniff timer that ran while nobody read them.
 * Ownership: the cluster module takes the descriptor over with the first worker that listens on it, and closes it
 * when the last worker closes its server or exits; `closeListenSocket` is only for one no worker ever used.
 */
import koffi from 'koffi';
import net from 'node:net';

const AF_INET = 2;
const AF_INET6 = 10;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_REUSEPORT = 15;

type Libc = {
  socket: (domain: number, type: number, protocol: number) => number;
  setsockopt: (fd: number, level: number, name: number, value: Buffer, len: number) => number;
  bind: (fd: number, addr: Buffer, len: number) => number;
  getsockname: (fd: number, addr: Buffer, len: Buffer) => number;
  close: (fd: number) => number;
  shutdown: (fd: number, how: number) => number;
  strerror: (errnum: number) => string;
};

let libc: Libc | undefined;
function loadLibc(): Libc {
  if (!libc) {
    const l = koffi.load('libc.so.6');
    libc = {
      socket: l.func('int socket(int domain, int type, int protocol)') as Libc['socket'],
      setsockopt: l.func('int setsockopt(int fd, int level, int optname, const void *optval, uint32_t optlen)') as Libc['setsockopt'],
      bind: l.func('int bind(int fd, const void *addr, uint32_t addrlen)') as Libc['bind'],
      getsockname: l.func('int getsockname(int fd, void *addr, void *addrlen)') as Libc['getsockname'],
      close: l.func('int close(int fd)') as Libc['close'],
      shutdown: l.func('int shutdown(int fd, int how)') as Libc['shutdown'],
      strerror: l.func('const char *strerror(int errnum)') as Libc['strerror'],
    };
  }
  return libc;
}

function lastError(c: Libc): string {
  const errno = koffi.errno();
  return `${c.strerror(errno)} (errno ${errno})`;
}

/** `struct sockaddr_in` / `sockaddr_in6` for a numeric address and port. */
export function encodeSockaddr(host: string, port: number): Buffer {
  if (net.isIPv4(host)) {
    const b = Buffer.alloc(16);
    b.writeUInt16LE(AF_INET, 0);
    b.writeUInt16BE(port, 2);
    host.split('.').forEach((o, i) => b.writeUInt8(Number(o), 4 + i));
    return b;
  }
  if (net.isIPv6(host)) {
    const b = Buffer.alloc(28);
    b.writeUInt16LE(AF_INET6, 0);
    b.writeUInt16BE(port, 2);
    if (host.includes('.')) throw new Error(`listen address '${host}': IPv4-embedded IPv6 addresses are not supported; use the IPv4 address`);
    // Expand `::` into the missing zero groups.
    const [head, tail] = host.includes('::') ? host.split('::') as [string, string] : [host, undefined];
    const h = head ? head.split(':') : [];
    const t = tail ? tail.split(':') : [];
    const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
    groups.forEach((g, i) => b.writeUInt16BE(parseInt(g || '0', 16), 8 + i * 2));
    return b;
  }
  throw new Error(`listen address '${host}' is not a numeric IPv4 or IPv6 address`);
}

/** A socket bound for listening: its descriptor in this process and the port it is bound to. */
export type ListenSocket = { fd: number; host: string; port: number };

/**
 * Binds a TCP socket to `host:port` with SO_REUSEPORT, not listening yet, so another process of the same user can
 * bind the same address next to it (a graceful restart). Port 0 picks a free one. Throws naming the address and the
 * errno (EADDRINUSE: a socket without SO_REUSEPORT, e.g. an older proxy, holds it). No SO_REUSEADDR: with it, any
 * program setting it too (Node's listen does) could bind the port while ours is not listening yet.
 */
export function openListenSocket(host: string, port: number): ListenSocket {
  const c = loadLibc();
  const addr = encodeSockaddr(host, port);
  const fd = c.socket(net.isIPv6(host) ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new Error(`socket() for ${host}:${port} failed: ${lastError(c)}`);
  const one = Buffer.alloc(4);
  one.writeInt32LE(1);
  const fail = (step: string, hint = ''): never => {
    const why = lastError(c);
    c.close(fd);
    throw new Error(`${step} for the listener ${host}:${port} failed: ${why}${hint}`);
  };
  if (c.setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, one, 4) !== 0) fail('setsockopt(SO_REUSEPORT)');
  if (c.bind(fd, addr, addr.length) !== 0) fail('bind', '; is a proxy without SO_REUSEPORT (an older version) or another program on that port?');
  return { fd, host, port: port === 0 ? boundPort(fd) : port };
}

/** The port `fd` is bound to; -1 when it is not an IP socket of ours (closed, or reused for something else). */
export function boundPort(fd: number): number {
  const c = loadLibc();
  const addr = Buffer.alloc(28);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(28);
  if (c.getsockname(fd, addr, len) !== 0) return -1;
  const family = addr.readUInt16LE(0);
  return family === AF_INET || family === AF_INET6 ? addr.readUInt16BE(2) : -1;
}

/**
 * Closes a socket no worker ever listened on (else the cluster module owns and closes it). Checks first that the
 * descriptor is still a socket bound to that port, so a number the kernel has handed out again is not closed.
 */
export function closeListenSocket(s: ListenSocket): void {
  if (boundPort(s.fd) === s.port) loadLibc().close(s.fd);
}

/**
 * Stops a listening socket from listening at once, whatever other descriptors of it exist (shutdown(2) on a
 * listener: new connects are refused, queued ones reset). A worker whose primary died calls it on its way out, so
 * the datapath's check fails closed now rather than when the kernel has finished tearing the process down (which,
 * with io_uring in flight, was measured at up to ~2.5 s). Never throws.
 */
export function shutdownListener(fd: number): void {
  if (fd < 0) return;
  try { loadLibc().shutdown(fd, 2 /* SHUT_RDWR */); } catch { /* best effort on the way out */ }
}

/**
 * Turns on `net.ipv4.tcp_migrate_req` in this network namespace: when a listener of a SO_REUSEPORT group closes,
 * the connections waiting in its accept queue (and half-open ones) move to another listener of the group instead of
 * being reset. That is what makes the old proxy's close lossless while the new one listens (Linux ≥ 5.14).
 * Returns what happened, for the log; never throws.
 */
export async function enableListenerMigration(): Promise<'enabled' | 'already' | string> {
  const { readFile, writeFile } = await import('node:fs/promises');
  const path = '/proc/sys/net/ipv4/tcp_migrate_req';
  try {
    if ((await readFile(path, 'utf8')).trim() === '1') return 'already';
    await writeFile(path, '1\n');
    return 'enabled';
  } catch (err) {
    return `not enabled (${(err as Error).message}): connections queued on a closing listener are reset`;
  }
}
