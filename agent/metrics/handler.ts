/** The `/metrics` HTTP endpoint: renders the registry per scrape, gzip when the scraper accepts it. */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import { TEXT_FORMAT_CONTENT_TYPE, type Registry } from './registry.ts';

/** A request handler for `/metrics`; returns false for other paths so the caller can serve them (e.g. /status). */
export function createMetricsHandler(registry: Registry, opts: { onCollectorError?: (err: unknown) => void } = {}): (req: IncomingMessage, res: ServerResponse) => boolean {
  return (req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/metrics') return false;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' });
      res.end('GET only\n');
      return true;
    }
    const text = registry.render(opts.onCollectorError);
    const gzip = /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''));
    const body = gzip ? gzipSync(text) : Buffer.from(text);
    res.writeHead(200, { 'content-type': TEXT_FORMAT_CONTENT_TYPE, 'content-length': body.length, ...(gzip ? { 'content-encoding': 'gzip' } : {}) });
    res.end(req.method === 'HEAD' ? undefined : body);
    return true;
  };
}

/** A standalone metrics server (the agent may instead mount the handler on its health server). */
export async function startMetricsServer(opts: { registry: Registry; host: string; port: number; onCollectorError?: (err: unknown) => void }): Promise<{ url: string; close(): Promise<void> }> {
  const handle = createMetricsHandler(opts.registry, { onCollectorError: opts.onCollectorError });
  const server: Server = createServer((req, res) => {
    if (!handle(req, res)) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('only /metrics is served here\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const a = server.address() as AddressInfo;
  return {
    url: `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}/metrics`,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
