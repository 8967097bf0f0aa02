/**
 * The operator's health and status endpoint: GET /healthz (liveness: the event loop answers), /readyz (every
 * informer has listed once) and /status (JSON: leader, version, last reconcile and lag, informers, writes, CA,
 * event-loop delay). Served on TCP for probes and, optionally, on a unix socket so `nodemesh sandbox status`
 * can read it from outside the node's network namespace. `POST /status/reset-loop-delay` restarts the
 * event-loop histogram (tests measure a phase with it).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { rm } from 'node:fs/promises';

/** What the endpoint needs from the operator. */
export interface HealthSource {
  ready(): boolean;
  status(): unknown;
  resetLoopDelay(): void;
}

/** A running health server. */
export interface HealthServer {
  /** TCP port (when listening on TCP). */
  port: number | undefined;
  close(): Promise<void>;
}

function handler(src: HealthSource) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    const path = (req.url ?? '/').split('?')[0];
    const json = (status: number, body: unknown): void => {
      const text = JSON.stringify(body, null, 2) + '\n';
      res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(text);
    };
    if (path === '/healthz' || path === '/livez') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('ok\n');
    } else if (path === '/readyz') {
      const ok = src.ready();
      res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' });
      res.end(ok ? 'ok\n' : 'informers not synced\n');
    } else if (path === '/status' && req.method === 'GET') {
      json(200, src.status());
    } else if (path === '/status/reset-loop-delay' && req.method === 'POST') {
      src.resetLoopDelay();
      json(200, { reset: true });
    } else {
      json(404, { error: `no such endpoint ${path}: try /healthz, /readyz, /status` });
    }
  };
}

function listen(server: Server, target: { host: string; port: number } | { path: string }): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    const done = (): void => {
      server.off('error', reject);
      resolve();
    };
    if ('path' in target) server.listen(target.path, done);
    else server.listen(target.port, target.host, done);
  });
}

/** Starts the endpoint on `tcp` and/or `socketPath`. */
export async function startHealthServer(src: HealthSource, opts: { tcp?: { host: string; port: number }; socketPath?: string }): Promise<HealthServer> {
  const servers: Server[] = [];
  let port: number | undefined;
  if (opts.tcp) {
    const s = createServer(handler(src));
    await listen(s, opts.tcp);
    port = (s.address() as AddressInfo).port;
    servers.push(s);
  }
  if (opts.socketPath) {
    await rm(opts.socketPath, { force: true });
    const s = createServer(handler(src));
    await listen(s, { path: opts.socketPath });
    servers.push(s);
  }
  return {
    port,
    close: async () => {
      await Promise.all(servers.map((s) => new Promise<void>((r) => {
        s.close(() => r());
        s.closeAllConnections();
      })));
      if (opts.socketPath) await rm(opts.socketPath, { force: true });
    },
  };
}
