/**
 * The controllers' way to the API server: typed clients from one kubeconfig, error classification, and
 * write helpers. Updates go out as JSON merge patches built from plain JSON, because cached objects mix
 * Dates (from lists) and strings (from watches) and the typed serialiser only copes with Dates.
 */
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent, type RequestOptions } from 'node:https';
import { AppsV1Api, CoreV1Api, DiscoveryV1Api, KubeConfig, PatchStrategy, ServerConfiguration, createConfiguration, setHeaderOptions, type Middleware, type RequestContext, type ResponseContext } from '@kubernetes/client-node';
import { ControllerError, ControllerErrorCode } from './errors.ts';
import { toWire } from './object-meta.ts';

/** Typed API clients sharing one kubeconfig and one keep-alive connection pool. */
export interface KubeClients {
  kc: KubeConfig;
  core: CoreV1Api;
  apps: AppsV1Api;
  discovery: DiscoveryV1Api;
  /** Closes the pooled connections. */
  close(): void;
}

/**
 * A middleware that sends every request through one keep-alive agent. client-node 1.x builds a new
 * agent per request, so each call paid a fresh TCP and TLS handshake (~40 ms here): a controller
 * writing slice after slice spent its time shaking hands.
 */
function pooledAgent(kc: KubeConfig): { middleware: Middleware; close(): void } {
  let agent: Promise<HttpAgent | undefined> | undefined;
  let made: HttpAgent | undefined;
  const build = async (): Promise<HttpAgent | undefined> => {
    const cluster = kc.getCurrentCluster();
    // Proxies need client-node's own agents; leave those requests alone.
    if (!cluster || cluster.proxyUrl) return undefined;
    if (!cluster.server.startsWith('https:')) return (made = new HttpAgent({ keepAlive: true }));
    const opts: RequestOptions = {};
    await kc.applyToHTTPSOptions(opts);
    made = new HttpsAgent({
      keepAlive: true,
      ca: opts.ca,
      cert: opts.cert,
      key: opts.key,
      pfx: opts.pfx,
      passphrase: opts.passphrase,
      rejectUnauthorized: opts.rejectUnauthorized,
      servername: opts.servername,
    });
    return made;
  };
  return {
    middleware: {
      async pre(ctx: RequestContext): Promise<RequestContext> {
        const a = await (agent ??= build());
        if (a) ctx.setAgent(a);
        return ctx;
      },
      async post(ctx: ResponseContext): Promise<ResponseContext> {
        return ctx;
      },
    },
    close: () => made?.destroy(),
  };
}

/** Loads `kubeconfigPath` and makes the clients; a bad file is reported with its path. */
export function makeKubeClients(kubeconfigPath: string): KubeClients {
  const kc = new KubeConfig();
  try {
    kc.loadFromFile(kubeconfigPath);
  } catch (err) {
    throw new ControllerError(ControllerErrorCode.config, `cannot load kubeconfig ${kubeconfigPath}: ${(err as Error).message}; is the sandbox API server up?`, { cause: err });
  }
  if (!kc.getCurrentCluster()) {
    throw new ControllerError(ControllerErrorCode.config, `kubeconfig ${kubeconfigPath} has no current cluster (current-context "${kc.getCurrentContext()}")`);
  }
  const pool = pooledAgent(kc);
  const server = kc.getCurrentCluster()?.server ?? '';
  const config = createConfiguration({ baseServer: new ServerConfiguration(server, {}), authMethods: { default: kc }, promiseMiddleware: [pool.middleware] });
  return { kc, core: new CoreV1Api(config), apps: new AppsV1Api(config), discovery: new DiscoveryV1Api(config), close: pool.close };
}

/** Request options that send the body as a JSON merge patch (RFC 7386). */
export const mergePatchOptions = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

/** The HTTP status of a failed call (ApiException.code, or a watch error's statusCode); undefined for network errors. */
export function statusCodeOf(err: unknown): number | undefined {
  const e = err as { code?: unknown; statusCode?: unknown } | undefined;
  if (typeof e?.code === 'number') return e.code;
  if (typeof e?.statusCode === 'number') return e.statusCode;
  return undefined;
}

/** True for 409: a stale resourceVersion, or a create of a name that exists. */
export function isConflict(err: unknown): boolean {
  return statusCodeOf(err) === 409;
}

/** True for 404. */
export function isNotFound(err: unknown): boolean {
  return statusCodeOf(err) === 404;
}

/** A short description of an API error for a log line: code, reason and the server's message. */
export function describeApiError(err: unknown): string {
  const e = err as { code?: unknown; body?: unknown; message?: unknown } | undefined;
  let body = e?.body;
  if (typeof body === 'string') {
    try {
      body = JSON.parse(body);
    } catch {
      // Not JSON: keep the text.
    }
  }
  const status = body as { message?: string; reason?: string } | undefined;
  if (typeof e?.code === 'number') return `HTTP ${e.code}${status?.reason ? ` ${status.reason}` : ''}: ${status?.message ?? (typeof body === 'string' ? body : String(e.message ?? ''))}`.trim();
  return err instanceof Error ? err.message : String(err);
}

/**
 * Runs `attempt` and, on 409 Conflict, runs it again with `fresh = true` so it re-reads the object from
 * the API server rather than the cache (client-go's RetryOnConflict). Gives up after `tries`.
 */
export async function retryOnConflict<T>(what: string, attempt: (fresh: boolean) => Promise<T>, tries = 5): Promise<T> {
  let last: unknown;
  for (let i = 0; i < tries; i++) {
    try {
      return await attempt(i > 0);
    } catch (err) {
      if (!isConflict(err)) throw err;
      last = err;
    }
  }
  throw new ControllerError(ControllerErrorCode.api, `${what}: still conflicting after ${tries} tries (${describeApiError(last)}); another writer keeps changing it`, { cause: last });
}

/** A merge-patch body: plain JSON, Dates as API timestamps, with `resourceVersion` as the precondition when given. */
export function patchBody(patch: Record<string, unknown>, resourceVersion?: string): Record<string, unknown> {
  const body = toWire(patch);
  if (resourceVersion !== undefined) {
    const meta = (body['metadata'] as Record<string, unknown> | undefined) ?? {};
    body['metadata'] = { ...meta, resourceVersion };
  }
  return body;
}

/** True when the core API (/api/v1 discovery) lists `resource`, e.g. `pods/binding`. */
export async function coreHasResource(core: CoreV1Api, resource: string): Promise<boolean> {
  const list = await core.getAPIResources();
  return (list.resources ?? []).some((r) => r.name === resource);
}
