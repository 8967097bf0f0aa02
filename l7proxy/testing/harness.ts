/** Test harness: loopback echo backends that record raw bytes, hostile upstreams, raw-socket clients, a proxy on a fake datapath. */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import net, { type Socket } from 'node:net';
import type { ProxyConfig, ServiceConfig } from '../config.ts';
import { NodeProxy, type ProxyOptions, type SourceIdentity } from '../proxy.ts';
import type { AccessLogEntry } from '../stats.ts';

/** A request as the echo backend parsed it (strict llhttp). */
export type EchoRecord = { method: string; url: string; rawHeaders: string[]; body: string; remotePort: number; port: number };

/** A loopback HTTP backend that keeps every raw byte it received and every request it parsed. */
export type EchoServer = {
  port: number;
  raw(): Buffer;
  requests: EchoRecord[];
  /** Remote ports of the connections it accepted (one per upstream connection). */
  connections: number[];
  close(): Promise<void>;
};

/**
 * Start an echo backend. Behaviour by request: `x-echo-status: N` answers N, `x-echo-delay: ms` waits first,
 * `x-echo-name` is echoed back as the `x-served-by` header; the body is JSON of what was received.
 */
export async function startEcho(name = 'echo', opts: { handler?: (req: IncomingMessage, res: ServerResponse, rec: EchoRecord) => boolean; host?: string } = {}): Promise<EchoServer> {
  const chunks: Buffer[] = [];
  const requests: EchoRecord[] = [];
  const connections: number[] = [];
  let port = 0;
  const server = http.createServer({ keepAliveTimeout: 5000 }, (req, res) => {
    const body: Buffer[] = [];
    req.on('data', (c: Buffer) => body.push(c));
    req.on('end', () => {
      const rec: EchoRecord = { method: req.method ?? '', url: req.url ?? '', rawHeaders: req.rawHeaders, body: Buffer.concat(body).toString(), remotePort: req.socket.remotePort ?? 0, port };
      requests.push(rec);
      if (opts.handler?.(req, res, rec)) return;
      const status = Number(req.headers['x-echo-status'] ?? 200);
      const delay = Number(req.headers['x-echo-delay'] ?? 0);
      const send = (): void => {
        if (res.destroyed) return;
        const out = JSON.stringify({ name, method: rec.method, url: rec.url, headers: req.headers, body: rec.body });
        res.writeHead(status, { 'content-type': 'application/json', 'x-served-by': name, 'content-length': Buffer.byteLength(out) });
        res.end(out);
      };
      if (delay > 0) setTimeout(send, delay); else send();
    });
  });
  server.on('upgrade', (req: IncomingMessage, socket: Socket) => {
    requests.push({ method: req.method ?? '', url: req.url ?? '', rawHeaders: req.rawHeaders, body: '', remotePort: socket.remotePort ?? 0, port });
    socket.write('HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: test\r\n\r\n');
    socket.on('data', (d: Buffer) => socket.write(Buffer.concat([Buffer.from('echo:'), d])));
    socket.on('error', () => {});
  });
  const tcp = net.createServer((socket) => {
    connections.push(socket.remotePort ?? 0);
    socket.on('error', () => {});
    server.emit('connection', socket);
    // Added after the hand-off so Node un-consumes the handle and both the parser and this tap see every byte.
    socket.on('data', (d: Buffer) => chunks.push(d));
  });
  await new Promise<void>((r) => tcp.listen(0, opts.host ?? '127.0.0.1', r));
  port = (tcp.address() as net.AddressInfo).port;
  return {
    port, requests, connections,
    raw: () => Buffer.concat(chunks),
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => tcp.close(() => r()));
    },
  };
}

/** A loopback server that answers every request with fixed raw bytes (a hostile or broken upstream). */
export async function startRawServer(response: string | ((data: Buffer, socket: Socket) => void)): Promise<{ port: number; accepted: () => number; closed: () => number; close(): Promise<void> }> {
  let accepted = 0; let closed = 0;
  const sockets = new Set<Socket>();
  const server = net.createServer((s) => {
    accepted++;
    sockets.add(s);
    s.on('close', () => { closed++; sockets.delete(s); });
    s.on('error', () => {});
    s.on('data', (d: Buffer) => { if (typeof response === 'string') s.write(response, 'latin1'); else response(d, s); });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    accepted: () => accepted,
    closed: () => closed,
    close: async () => { for (const s of sockets) s.destroy(); await new Promise<void>((r) => server.close(() => r())); },
  };
}

/** Send raw bytes to `port`, collect everything until the peer closes (or `waitMs` passes), say whether it closed. */
export function rawExchange(port: number, data: string | Buffer, waitMs = 1500): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    const got: Buffer[] = [];
    let closed = false;
    const timer = setTimeout(() => { s.destroy(); done(); }, waitMs);
    const done = (): void => { clearTimeout(timer); resolve({ text: Buffer.concat(got).toString('latin1'), closed }); };
    s.on('data', (d: Buffer) => got.push(d));
    s.on('error', () => {});
    s.on('end', () => { closed = true; });
    s.on('close', () => { closed = true; done(); });
    s.write(typeof data === 'string' ? Buffer.from(data, 'latin1') : data);
  });
}

/** The service address every test config uses (a fake ClusterIP; never dialled, only a key). */
export const SERVICE_IP = '10.96.0.10';
/** The service port of the test config. */
export const SERVICE_PORT = 80;

/** A proxy on loopback whose fake datapath says every connection was going to `dst` (default the test service). */
export type TestProxy = {
  proxy: NodeProxy;
  port: number;
  log: AccessLogEntry[];
  /** Change the original destination the fake datapath reports for new connections. */
  setDestination(dst: { ip: string; port: number } | undefined): void;
  close(): Promise<void>;
};

/** Start a proxy for a test. `identities` maps source address → identity (tests run from 127.0.0.1). */
export async function startTestProxy(config: ProxyConfig, opts: { identify?: (addr: string) => SourceIdentity | undefined; extra?: Partial<ProxyOptions> } = {}): Promise<TestProxy> {
  const log: AccessLogEntry[] = [];
  let dst: { ip: string; port: number } | undefined = { ip: SERVICE_IP, port: SERVICE_PORT };
  const proxy = new NodeProxy({
    config,
    originalDst: () => dst,
    identifySource: opts.identify ?? (() => undefined),
    accessLog: (e) => log.push(e),
    ...opts.extra,
  });
  const { outboundPort } = await proxy.start({ outboundPort: 0, host: '127.0.0.1' });
  return { proxy, port: outboundPort, log, setDestination: (d) => { dst = d; }, close: () => proxy.stop({ drain: false }) };
}

/** A config with one HTTP service at the test address sending everything to one backend of `ports`. */
export function simpleConfig(ports: number[], service: Partial<ServiceConfig> = {}, rest: Partial<ProxyConfig> = {}): ProxyConfig {
  return {
    version: 'test',
    services: [{ name: 'default/echo', addresses: [{ ip: SERVICE_IP, port: SERVICE_PORT }], protocol: 'http', defaultBackend: 'default/echo:80', ...service }],
    backends: [{ name: 'default/echo:80', endpoints: ports.map((p) => ({ ip: '127.0.0.1', port: p, ready: true })) }],
    ...rest,
  };
}

/** A plain HTTP/1 request through the proxy with Node's client (a fresh connection each time). */
export function request(port: number, opts: { method?: string; path?: string; headers?: Record<string, string>; body?: string; agent?: http.Agent } = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: opts.method ?? 'GET', path: opts.path ?? '/', headers: { host: 'echo.default', ...opts.headers }, agent: opts.agent ?? false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** How many requests strict llhttp finds in `raw` (a concatenation of whole requests), by replaying it to a fresh server. */
export async function countRequestsInRaw(raw: Buffer): Promise<string[]> {
  const seen: string[] = [];
  const server = http.createServer((req, res) => { seen.push(`${req.method} ${req.url}`); req.resume(); req.on('end', () => res.end()); });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  await rawExchange((server.address() as net.AddressInfo).port, raw, 500);
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
  return seen;
}
