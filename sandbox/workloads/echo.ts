/**
 * nodemesh/echo: an HTTP server that answers every request with who it is and what it saw (JSON fields pod,
 * namespace, node, version, client, method, path, headers). It delays or fails on request, for timeout and
 * retry tests: `?delay=200ms` / `x-echo-delay`, `?status=503` / `x-echo-status`, and `--fail-fraction`.
 * With --raw-log FILE it appends the exact bytes received, as an oracle for what a proxy forwarded.
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import { parseDurationMs } from './duration.ts';

/** Settings of one echo server. */
export type EchoOptions = {
  port: number;
  host: string;
  pod: string;
  namespace: string;
  node: string;
  version: string;
  /** Fraction (0..1) of requests answered with failStatus. */
  failFraction: number;
  failStatus: number;
  /** Delay applied to every request unless the request asks for its own. */
  delayMs: number;
  rawLog?: string;
  /** Where connection lines go. */
  log: (line: string) => void;
};

/** The version label of the pod: VERSION, else `version` in POD_LABELS (JSON), else "". */
export function versionFromEnv(env: NodeJS.ProcessEnv): string {
  if (env.VERSION) return env.VERSION;
  try {
    const labels = JSON.parse(env.POD_LABELS ?? '{}') as Record<string, string>;
    return labels.version ?? '';
  } catch {
    return '';
  }
}

/** The status and delay a request asks for (query parameters win over headers), within sane bounds. */
export function planEchoResponse(url: URL, headers: IncomingMessage['headers'], opts: Pick<EchoOptions, 'failFraction' | 'failStatus' | 'delayMs'>, random: number): { status: number; delayMs: number } {
  const header = (n: string): string | undefined => {
    const v = headers[n];
    return Array.isArray(v) ? v[0] : v;
  };
  const delayMs = parseDurationMs(url.searchParams.get('delay') ?? header('x-echo-delay')) ?? opts.delayMs;
  const asked = Number(url.searchParams.get('status') ?? header('x-echo-status') ?? NaN);
  let status = Number.isInteger(asked) && asked >= 100 && asked <= 599 ? asked : 200;
  if (status === 200 && random < opts.failFraction) status = opts.failStatus;
  return { status, delayMs: Math.min(Math.max(delayMs, 0), 600_000) };
}

/** Starts an echo server; resolves once it listens. */
export async function startEcho(opts: EchoOptions): Promise<{ port: number; close(): Promise<void> }> {
  let raw: WriteStream | undefined;
  if (opts.rawLog) raw = createWriteStream(opts.rawLog, { flags: 'a' });
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://echo');
    const plan = planEchoResponse(url, req.headers, opts, Math.random());
    const body = JSON.stringify({
      pod: opts.pod,
      namespace: opts.namespace,
      node: opts.node,
      version: opts.version,
      client: `${req.socket.remoteAddress}:${req.socket.remotePort}`,
      method: req.method,
      path: req.url,
      headers: req.headers,
    }) + '\n';
    // Drain the body so keep-alive connections stay usable.
    req.resume();
    const answer = (): void => {
      if (res.destroyed) return;
      res.writeHead(plan.status, { 'content-type': 'application/json', 'x-echo-pod': opts.pod, 'content-length': Buffer.byteLength(body) });
      res.end(body);
    };
    if (plan.delayMs > 0) setTimeout(answer, plan.delayMs);
    else answer();
  });
  server.keepAliveTimeout = 30_000;
  server.on('connection', (socket) => {
    opts.log(`connection from ${socket.remoteAddress}:${socket.remotePort}`);
    if (raw) {
      const r = raw;
      socket.on('data', (chunk: Buffer) => r.write(chunk));
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const addr = server.address();
  return {
    port: typeof addr === 'object' && addr ? addr.port : opts.port,
    close: () => new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => (raw ? raw.end(() => resolve()) : resolve()));
    }),
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: 'string' },
      host: { type: 'string', default: '0.0.0.0' },
      'raw-log': { type: 'string' },
      'fail-fraction': { type: 'string' },
      'fail-status': { type: 'string' },
      delay: { type: 'string' },
    },
    allowPositionals: false,
  });
  const env = process.env;
  const port = Number(values.port ?? env.PORT ?? 8080);
  const failFraction = Number(values['fail-fraction'] ?? env.ECHO_FAIL_FRACTION ?? 0);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port ${values.port ?? env.PORT}: not a TCP port`);
  if (!(failFraction >= 0 && failFraction <= 1)) throw new Error(`--fail-fraction ${failFraction}: must be between 0 and 1`);
  const echo = await startEcho({
    port,
    host: values.host ?? '0.0.0.0',
    pod: env.POD_NAME ?? hostname(),
    namespace: env.POD_NAMESPACE ?? '',
    node: env.NODE_NAME ?? '',
    version: versionFromEnv(env),
    failFraction,
    failStatus: Number(values['fail-status'] ?? env.ECHO_FAIL_STATUS ?? 503),
    delayMs: parseDurationMs(values.delay ?? env.ECHO_DELAY) ?? 0,
    rawLog: values['raw-log'] ?? env.ECHO_RAW_LOG,
    log: (l) => console.log(`${new Date().toISOString()} ${l}`),
  });
  console.log(`echo listening on ${values.host}:${echo.port} pod=${env.POD_NAME ?? hostname()} node=${env.NODE_NAME ?? ''}`);
  const stop = (): void => {
    echo.close().then(() => process.exit(0), () => process.exit(1));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

if (import.meta.main) {
  main().catch((err: unknown) => {
    console.error(`echo: ${(err as Error).message}`);
    process.exit(1);
  });
}
