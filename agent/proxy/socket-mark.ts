/**
 * TCP connects that carry the node proxy's socket mark (SO_MARK), optionally from a given local address.
 * Why: on a real node the proxy runs under the cgroup the socket programs govern; connect4 skips sockets with
 * nm_dp_cfg.proxy_mark, so the proxy's own connects to a meshed pod (a mesh frontend) are not sent back to
 * itself. Node cannot set SO_MARK, so the socket is made here (socket + setsockopt + bind through libc) and
 * handed to net.Socket, which connects it as usual.
 */
import koffi from 'koffi';
import net, { type Socket } from 'node:net';

const AF_INET = 2;
const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_MARK = 36;

type Libc = {
  socket: (domain: number, type: number, protocol: number) => number;
  setsockopt: (fd: number, level: number, name: number, value: Buffer, len: number) => number;
  bind: (fd: number, addr: Buffer, len: number) => number;
  close: (fd: number) => number;
};

let libc: Libc | undefined;
function loadLibc(): Libc {
  if (!libc) {
    const l = koffi.load('libc.so.6');
    libc = {
      socket: l.func('int socket(int domain, int type, int protocol)') as Libc['socket'],
      setsockopt: l.func('int setsockopt(int fd, int level, int optname, const void *optval, uint32_t optlen)') as Libc['setsockopt'],
      bind: l.func('int bind(int fd, const void *addr, uint32_t addrlen)') as Libc['bind'],
      close: l.func('int close(int fd)') as Libc['close'],
    };
  }
  return libc;
}

/** `struct sockaddr_in` for `ip` (IPv4), port 0. */
function sockaddrIn(ip: string): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt16LE(AF_INET, 0);
  ip.split('.').forEach((o, i) => b.writeUInt8(Number(o), 4 + i));
  return b;
}

/**
 * An unconnected IPv4 TCP socket with `mark` set (and bound to `localAddress` when given), as a net.Socket; call
 * `connect` on it. Throws with the errno when the kernel refuses (SO_MARK needs CAP_NET_ADMIN).
 */
export function createMarkedSocket(mark: number, localAddress?: string): Socket {
  const c = loadLibc();
  const fd = c.socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new Error('socket(AF_INET, SOCK_STREAM) failed');
  const v = Buffer.alloc(4);
  v.writeUInt32LE(mark >>> 0);
  if (c.setsockopt(fd, SOL_SOCKET, SO_MARK, v, 4) !== 0) {
    c.close(fd);
    throw new Error(`setsockopt(SO_MARK=${mark}) refused: the proxy needs CAP_NET_ADMIN`);
  }
  if (localAddress && c.bind(fd, sockaddrIn(localAddress), 16) !== 0) {
    c.close(fd);
    throw new Error(`bind to ${localAddress} failed: is it an address of this network namespace?`);
  }
  return new net.Socket({ fd, readable: true, writable: true, allowHalfOpen: true });
}

/**
 * Connects to `ip:port` within `timeoutMs`, with the proxy mark when `mark` is set and the address is IPv4 (else a
 * plain connect). Errors keep Node's codes (ECONNREFUSED ...), so the request path classifies them as usual.
 */
export function connectMarked(ip: string, port: number, o: { mark?: number; localAddress?: string; timeoutMs: number }): Promise<Socket> {
  return new Promise((resolve, reject) => {
    let s: Socket;
    try {
      s = o.mark && net.isIPv4(ip) ? createMarkedSocket(o.mark, o.localAddress) : new net.Socket({ allowHalfOpen: true });
    } catch (err) {
      reject(err as Error);
      return;
    }
    const timer = setTimeout(() => { s.destroy(); reject(Object.assign(new Error(`connect to ${ip}:${port} timed out after ${o.timeoutMs} ms`), { code: 'UND_ERR_CONNECT_TIMEOUT' })); }, o.timeoutMs);
    const onError = (err: Error): void => { clearTimeout(timer); reject(err); };
    s.once('error', onError);
    s.once('connect', () => { clearTimeout(timer); s.off('error', onError); resolve(s); });
    s.connect({ host: ip, port, ...(o.mark && net.isIPv4(ip) ? {} : o.localAddress ? { localAddress: o.localAddress } : {}) });
  });
}
