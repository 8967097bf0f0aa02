/**
 * The embedded Kubernetes-compatible API server: wires store, registry, admission, watch hub and HTTP
 * handler together, bootstraps the namespaces and the `kubernetes` Service, registers the CRDs found in
 * crdDirs, and listens on TCP (and optionally a unix socket) with TLS from a CA it makes or reuses.
 */

import { readdir, readFile, rm } from 'node:fs/promises';
import { writeFileAtomic } from '../../agent/atomic-file.ts';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { parseAllDocuments, stringify as toYaml } from 'yaml';
import { AllocationError } from './admission/service-ips.ts';
import { ServiceAllocations } from './admission/services.ts';
import { ensureCertificates } from './certs.ts';
import { ApiServerError, ERROR_CODES, StatusError } from './errors.ts';
import { createRequestHandler } from './handlers.ts';
import type { PodLogDirectory } from './pod-logs.ts';
import type { PodProxyDialer } from './pod-proxy.ts';
import type { JsonObject } from './json.ts';
import { asString, isObject } from './json.ts';
import type { WriteOptions } from './objects.ts';
import { ObjectService } from './objects.ts';
import { Registry } from './registry.ts';
import { MemoryStore } from './store.ts';
import { TokenAuthority } from './tokens.ts';
import { WatchHub } from './watch.ts';

/** Options of startApiServer. */
export interface ApiServerOptions {
  host?: string; // default '127.0.0.1'
  port?: number; // default 0 (ephemeral); the sandbox uses a fixed one
  /** When set, also listen on this unix socket (same TLS; nodes reach it through a per-node forwarder). */
  unixSocketPath?: string;
  tls?: boolean; // default true: HTTPS with a CA the server makes (or loads from stateDir)
  stateDir?: string; // where CA/cert/key, token and kubeconfig are written; optional for tests
  crdDirs?: string[]; // every *.yaml CRD found there is registered at start (multi-doc YAML)
  serviceCIDR?: string; // default '10.96.0.0/16'; the first address is the `kubernetes` Service's
  nodePortRange?: [number, number]; // default [30000, 32767]
  watchHistoryWindow?: number; // events retained for watch resume; older -> 410 Gone. default 10000
  logger?: (line: string) => void;
  /** Seconds between BOOKMARK events on watches that allow them. Default 60. */
  bookmarkIntervalSeconds?: number;
  /** Bytes a watcher may leave unread before it is closed. Default 64 MiB. */
  watchMaxBufferedBytes?: number;
  /** Pods bound to an existing Node are deleted gracefully (deletionTimestamp, then the kubelet deletes with grace 0). Default true. */
  gracefulPodDeletion?: boolean;
  /** Where the kubelets keep a pod's container logs (CRI files per run); serves `pods/log`. Without it pods/log answers 503. */
  podLogDirectory?: PodLogDirectory;
  /** Opens streams to pods for pods/proxy (the sandbox supervisor's reaches node namespaces through unix sockets). Without it pods/proxy answers 503. */
  podProxyDialer?: PodProxyDialer;
}

/** A running API server. */
export interface ApiServer {
  url: string; // e.g. https://127.0.0.1:16443
  caPem: string | undefined;
  /** The admin bearer token (also inside the kubeconfig). */
  token: string;
  /** YAML kubeconfig text (cluster, user and context `nodemesh-sandbox`, token auth, certificate-authority-data). */
  kubeconfig(): string;
  writeKubeconfig(path: string): Promise<void>;
  close(): Promise<void>;
}

const SYSTEM_WRITE: WriteOptions = { dryRun: false, fieldValidation: 'Ignore', warnings: [] };

/** Namespaces that exist from the start. */
export const BOOTSTRAP_NAMESPACES = ['default', 'kube-system', 'kube-public', 'kube-node-lease', 'nodemesh-system'];

async function loadCrdFiles(dirs: string[], log: (line: string) => void): Promise<{ file: string; crd: JsonObject }[]> {
  const out: { file: string; crd: JsonObject }[] = [];
  for (const dir of dirs) {
    let names: string[];
    try {
      names = (await readdir(dir)).filter((n) => n.endsWith('.yaml') || n.endsWith('.yml')).sort();
    } catch (e) {
      throw new ApiServerError(ERROR_CODES.crdFile, `cannot read CRD directory ${dir}: ${(e as Error).message}`, { cause: e });
    }
    for (const n of names) {
      const file = join(dir, n);
      const docs = parseAllDocuments(await readFile(file, 'utf8'));
      for (const [i, d] of docs.entries()) {
        if (d.errors.length) throw new ApiServerError(ERROR_CODES.crdFile, `${file}: YAML document ${i + 1} does not parse: ${d.errors[0]!.message}`);
        const v = d.toJSON() as unknown;
        if (v === null || v === undefined) continue;
        if (!isObject(v) || v['kind'] !== 'CustomResourceDefinition') {
          log(`apiserver: ${file}: document ${i + 1} is not a CustomResourceDefinition (kind ${isObject(v) ? String(v['kind']) : typeof v}); skipped`);
          continue;
        }
        out.push({ file, crd: v });
      }
    }
  }
  return out;
}

function listen(server: Server, target: { port: number; host: string } | { path: string }): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error): void => reject(e);
    server.once('error', onError);
    const done = (): void => {
      server.off('error', onError);
      resolve();
    };
    if ('path' in target) server.listen(target.path, done);
    else server.listen(target.port, target.host, done);
  });
}

/** Starts the API server. */
export async function startApiServer(opts: ApiServerOptions): Promise<ApiServer> {
  const log = opts.logger ?? ((): void => {});
  const host = opts.host ?? '127.0.0.1';
  const tls = opts.tls ?? true;
  const window = opts.watchHistoryWindow ?? 10_000;
  if (!Number.isInteger(window) || window < 1) throw new ApiServerError(ERROR_CODES.options, `watchHistoryWindow must be a positive integer, got ${String(opts.watchHistoryWindow)}`);
  let services: ServiceAllocations;
  try {
    services = new ServiceAllocations(opts.serviceCIDR ?? '10.96.0.0/16', opts.nodePortRange ?? [30000, 32767]);
  } catch (e) {
    if (e instanceof AllocationError) throw new ApiServerError(ERROR_CODES.options, e.message);
    throw e;
  }
  const store = new MemoryStore({ historyWindow: window });
  const registry = new Registry();
  const objects = new ObjectService({ store, registry, services, log, gracefulPodDeletion: opts.gracefulPodDeletion ?? true });
  const nsType = registry.lookup('', 'v1', 'namespaces')!;
  for (const ns of BOOTSTRAP_NAMESPACES) objects.create(nsType, '', { metadata: { name: ns } }, SYSTEM_WRITE);

  const crdType = registry.lookup('apiextensions.k8s.io', 'v1', 'customresourcedefinitions')!;
  for (const { file, crd } of await loadCrdFiles(opts.crdDirs ?? [], log)) {
    try {
      objects.create(crdType, '', crd, SYSTEM_WRITE);
    } catch (e) {
      const name = isObject(crd['metadata']) ? asString(crd['metadata']['name']) : undefined;
      const why = e instanceof StatusError ? e.message : (e as Error).message;
      throw new ApiServerError(ERROR_CODES.crdFile, `${file}: CRD ${name ?? '(unnamed)'} cannot be registered: ${why}`, { cause: e });
    }
  }

  const firstServiceIP = services.ips.firstAddress;
  const certs = tls
    ? await ensureCertificates(
        opts.stateDir,
        {
          dns: ['localhost', 'kubernetes', 'kubernetes.default', 'kubernetes.default.svc', 'kubernetes.default.svc.cluster.local'],
          ips: [...new Set(['127.0.0.1', firstServiceIP, ...(isIP(host) === 4 && host !== '0.0.0.0' ? [host] : [])])],
        },
        log,
      )
    : undefined;
  const tokens = await TokenAuthority.load(opts.stateDir);
  const watches = new WatchHub(store, objects, {
    bookmarkIntervalMs: (opts.bookmarkIntervalSeconds ?? 60) * 1000,
    maxBufferedBytes: opts.watchMaxBufferedBytes ?? 64 * 1024 * 1024,
    log,
  });

  let address = `${host}:${opts.port ?? 0}`;
  const handler = createRequestHandler({ objects, registry, store, watches, tokens, log, serverAddress: () => address, ...(opts.podLogDirectory ? { podLogDirectory: opts.podLogDirectory } : {}), ...(opts.podProxyDialer ? { podProxyDialer: opts.podProxyDialer } : {}) });
  const makeServer = (): Server<typeof IncomingMessage, typeof ServerResponse> => {
    const s = certs ? createHttpsServer({ cert: certs.certPem, key: certs.keyPem }, handler) : createHttpServer(handler);
    s.keepAliveTimeout = 65_000;
    s.headersTimeout = 70_000;
    s.requestTimeout = 0; // watches are long requests; bodies are bounded by size instead
    return s as Server<typeof IncomingMessage, typeof ServerResponse>;
  };
  const tcp = makeServer();
  try {
    await listen(tcp, { port: opts.port ?? 0, host });
  } catch (e) {
    objects.close();
    watches.closeAll();
    throw new ApiServerError(ERROR_CODES.listen, `cannot listen on ${host}:${opts.port ?? 0}: ${(e as Error).message}${(e as NodeJS.ErrnoException).code === 'EADDRINUSE' ? ' (is another API server, or an old sandbox, still running?)' : ''}`, { cause: e });
  }
  const addr = tcp.address();
  const port = typeof addr === 'object' && addr ? addr.port : (opts.port ?? 0);
  const urlHost = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  address = `${urlHost}:${port}`;
  let unix: Server | undefined;
  if (opts.unixSocketPath) {
    await rm(opts.unixSocketPath, { force: true });
    unix = makeServer();
    try {
      await listen(unix, { path: opts.unixSocketPath });
    } catch (e) {
      tcp.close();
      throw new ApiServerError(ERROR_CODES.listen, `cannot listen on unix socket ${opts.unixSocketPath}: ${(e as Error).message}`, { cause: e });
    }
  }
  const url = `${tls ? 'https' : 'http'}://${address}`;

  // The `kubernetes` Service points at this server; its endpoints are the supervisor's to publish.
  const svcType = registry.lookup('', 'v1', 'services')!;
  objects.create(
    svcType,
    'default',
    {
      metadata: { name: 'kubernetes', labels: { component: 'apiserver', provider: 'kubernetes' } },
      spec: { clusterIP: firstServiceIP, ports: [{ name: 'https', port: 443, protocol: 'TCP', targetPort: port }] },
    },
    SYSTEM_WRITE,
  );

  const kubeconfig = (): string =>
    toYaml({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'nodemesh-sandbox', cluster: { server: url, ...(certs ? { 'certificate-authority-data': Buffer.from(certs.caPem).toString('base64') } : {}) } }],
      users: [{ name: 'nodemesh-sandbox', user: { token: tokens.adminToken } }],
      contexts: [{ name: 'nodemesh-sandbox', context: { cluster: 'nodemesh-sandbox', user: 'nodemesh-sandbox', namespace: 'default' } }],
      'current-context': 'nodemesh-sandbox',
      preferences: {},
    });
  const writeKubeconfig = async (path: string): Promise<void> => {
    // Atomic: kubectl and the tests read it while a restarted API server rewrites it.
    await writeFileAtomic(path, kubeconfig(), { mode: 0o600 });
  };
  if (opts.stateDir) await writeKubeconfig(join(opts.stateDir, 'kubeconfig'));
  log(`apiserver: serving ${url}${opts.unixSocketPath ? ` and unix:${opts.unixSocketPath}` : ''}`);

  let closing: Promise<void> | undefined;
  const closeServer = (s: Server): Promise<void> =>
    new Promise((resolve) => {
      s.close(() => resolve());
      s.closeAllConnections();
    });
  return {
    url,
    caPem: certs?.caPem,
    token: tokens.adminToken,
    kubeconfig,
    writeKubeconfig,
    close: () => {
      closing ??= (async () => {
        watches.closeAll();
        objects.close();
        await Promise.all([closeServer(tcp), ...(unix ? [closeServer(unix)] : [])]);
        if (opts.unixSocketPath) await rm(opts.unixSocketPath, { force: true });
      })();
      return closing;
    },
  };
}
