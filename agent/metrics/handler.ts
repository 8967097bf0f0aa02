/** The `/metrics` HTTP endpoint: renders the registry per scrape, gzip when the scraper accepts it. */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import { MetricsError } from './errors.ts';
import { TEXT_FORMAT_CONTENT_TYPE, type Registry } from './registry.ts';

/** Options of the handler. */
export type MetricsHandlerOptions = {
  onCollectorError?: (err: unknown) => void;
  /**
   * Serve the same rendering for this long (ms) instead of rendering per request; 0 (default) renders every time.
   * The metrics listener that pods can reach sets it, so a pod calling in a loop costs one rendering per interval.
   */
  reuseRenderingMs?: number;
  /** Clock (tests). */
  now?: () => number;
};

/** A request handler for `/metrics`; returns false for other paths so the caller can serve them (e.g. /status). */
export function createMetricsHandler(registry: Registry, opts: MetricsHandlerOptions = {}): (req: IncomingMessage, res: ServerResponse) => boolean {
  const now = opts.now ?? Date.now;
  let cached: { at: number; text: Buffer; gzip?: Buffer } | undefined;
  return (req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/metrics') return false;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' });
      res.end('GET only\n');
      return true;
    }
    const t = now();
    if (!cached || !opts.reuseRenderingMs || t - cached.at >= opts.reuseRenderingMs) cached = { at: t, text: Buffer.from(registry.render(opts.onCollectorError)) };
    const gzip = /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''));
    const body = gzip ? (cached.gzip ??= gzipSync(cached.text)) : cached.text;
    res.writeHead(200, { 'content-type': TEXT_FORMAT_CONTENT_TYPE, 'content-length': body.length, 'cache-control': 'no-store', ...(gzip ? { 'content-encoding': 'gzip' } : {}) });
    res.end(req.method === 'HEAD' ? undefined : body);
    return true;
  };
}

/** A listening metrics server. */
export type MetricsServer = { url: string; port: number; close(): Promise<void> };

/**
 * A metrics-only server: GET/HEAD /metrics, 404 for every other path, so it can be left open to pods (Prometheus
 * runs as one) while the agent's status port stays closed to them. Bounded: a rendering is reused for
 * `reuseRenderingMs` (default 1 s), at most `maxConnections` (default 32) are open, and a request must arrive
 * within 10 s; the same registry also serves /metrics on the status port.
 */
export async function startMetricsServer(opts: { registry: Registry; host: string; port: number; onCollectorError?: (err: unknown) => void; reuseRenderingMs?: number; maxConnections?: number }): Promise<MetricsServer> {
  const handle = createMetricsHandler(opts.registry, { reuseRenderingMs: opts.reuseRenderingMs ?? 1000, ...(opts.onCollectorError ? { onCollectorError: opts.onCollectorError } : {}) });
  const server: Server = createServer({ requestTimeout: 10_000, headersTimeout: 10_000, keepAliveTimeout: 65_000 }, (req, res) => {
    if (!handle(req, res)) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('only /metrics is served here (status and explain are on the agent\'s status port, closed to pods)\n');
    }
  });
  server.maxConnections = opts.maxConnections ?? 32;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(new MetricsError('NM_ERR_METRICS_LISTEN', `metrics listener ${opts.host}:${opts.port}: ${err.message}${err.code === 'EADDRINUSE' ? ' (another agent for this node still running, or another exporter on that port? pick --metrics-port)' : ''}`, { cause: err })));
    server.listen(opts.port, opts.host, () => resolve());
  });
  const a = server.address() as AddressInfo;
  return {
    url: `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}/metrics`,
    port: a.port,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
