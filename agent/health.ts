/**
 * The agent's health endpoint, in the node's network namespace: /healthz (the process and its
 * datapath are alive), /readyz (ready after the first complete sync; 503 with the reason before),
 * /statusz (JSON: last pass, watches, attachments), /explain (read-only: agent/explain.ts), and whatever `extra` serves (/metrics). Optionally also on a
 * unix socket, which a host-side process can reach across network namespaces (the sandbox supervisor does).
 */
import { rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { AgentError } from './errors.ts';

/** What the endpoint asks the agent. */
export interface HealthSource {
  /** Undefined when live, else why not. */
  liveness(): string | undefined;
  /** Undefined when ready, else why not. */
  readiness(): string | undefined;
  /** Anything JSON-serialisable. */
  status(): unknown;
}

/** A listening health endpoint. */
export interface HealthServer {
  port: number;
  close(): Promise<void>;
}

/** Options beyond the TCP address. */
export interface HealthServerOptions {
  /** Also listen on this unix socket (replaced if it exists: a previous agent's). */
  socketPath?: string;
  /** Serves other paths first (e.g. /metrics); returns false to fall through. */
  extra?: (req: IncomingMessage, res: ServerResponse) => boolean;
  /** GET /explain?...: a read-only answer (JSON) from the query, or `{ code, error }` (agent/explain.ts). */
  explain?: (query: URLSearchParams) => { code: number; body: unknown };
}

/** Starts the endpoint; rejects with NM_ERR_AGENT_HEALTH when the port is taken. */
export async function startHealthServer(host: string, port: number, src: HealthSource, opts: HealthServerOptions = {}): Promise<HealthServer> {
  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    if (opts.extra?.(req, res)) return;
    const path = (req.url ?? '/').split('?')[0];
    const answer = (code: number, body: string, type = 'text/plain; charset=utf-8'): void => {
      res.writeHead(code, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(body);
    };
    if (path === '/healthz' || path === '/livez') {
      const why = src.liveness();
      return answer(why ? 503 : 200, why ? `not live: ${why}\n` : 'ok\n');
    }
    if (path === '/readyz') {
      const why = src.readiness();
      return answer(why ? 503 : 200, why ? `not ready: ${why}\n` : 'ok\n');
    }
    if (path === '/explain' && opts.explain) {
      if (req.method !== 'GET' && req.method !== 'HEAD') return answer(405, 'GET only\n');
      const r = opts.explain(new URLSearchParams((req.url ?? '').split('?')[1] ?? ''));
      return answer(r.code, `${JSON.stringify(r.body, null, 2)}\n`, 'application/json');
    }
    if (path === '/statusz') return answer(200, `${JSON.stringify(src.status(), (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2)}\n`, 'application/json');
    answer(404, `try /healthz, /readyz or /statusz${opts.extra ? ' or /metrics' : ''}${opts.explain ? ' or /explain' : ''}\n`);
  };
  const server: Server = createServer(handle);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new AgentError('NM_ERR_AGENT_HEALTH', `health endpoint ${host}:${port}: ${err.message}${err.code === 'EADDRINUSE' ? ' (another agent for this node still running? pick --health-port)' : ''}`, { cause: err })),
    );
    server.listen(port, host, () => resolve());
  });
  const addr = server.address();
  let unix: Server | undefined;
  if (opts.socketPath) {
    const path = opts.socketPath;
    rmSync(path, { force: true });
    unix = createServer(handle);
    await new Promise<void>((resolve, reject) => {
      unix!.once('error', (err: Error) => reject(new AgentError('NM_ERR_AGENT_HEALTH', `health socket ${path}: ${err.message} (is its directory there and writable?)`, { cause: err })));
      unix!.listen(path, () => resolve());
    }).catch(async (err: unknown) => {
      await new Promise<void>((r) => server.close(() => r()));
      throw err;
    });
  }
  const closeOne = (s: Server): Promise<void> => new Promise((resolve) => { s.closeAllConnections(); s.close(() => resolve()); });
  return {
    port: typeof addr === 'object' && addr ? addr.port : port,
    close: async () => {
      await Promise.all([closeOne(server), ...(unix ? [closeOne(unix)] : [])]);
      if (opts.socketPath) rmSync(opts.socketPath, { force: true });
    },
  };
}
