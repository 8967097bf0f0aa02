/**
 * The agent's health endpoint, in the node's network namespace: /healthz (the process and its
 * datapath are alive), /readyz (ready after the first complete sync; 503 with the reason before),
 * /statusz (JSON: last pass, watches, attachments).
 */
import { createServer, type Server } from 'node:http';
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

/** Starts the endpoint; rejects with NM_ERR_AGENT_HEALTH when the port is taken. */
export async function startHealthServer(host: string, port: number, src: HealthSource): Promise<HealthServer> {
  const server: Server = createServer((req, res) => {
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
    if (path === '/statusz') return answer(200, `${JSON.stringify(src.status(), (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2)}\n`, 'application/json');
    answer(404, 'try /healthz, /readyz or /statusz\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new AgentError('NM_ERR_AGENT_HEALTH', `health endpoint ${host}:${port}: ${err.message}${err.code === 'EADDRINUSE' ? ' (another agent for this node still running? pick --health-port)' : ''}`, { cause: err })),
    );
    server.listen(port, host, () => resolve());
  });
  const addr = server.address();
  return {
    port: typeof addr === 'object' && addr ? addr.port : port,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
