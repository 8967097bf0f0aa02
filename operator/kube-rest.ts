/**
 * A small JSON client for the API server, used by the operator runtime instead of client-node's generated
 * clients and Watch, for three measured reasons:
 *   - client-node makes a new https.Agent for every call, so every request pays a full TLS handshake; here
 *     requests share one keep-alive agent;
 *   - its Watch parses every line of a burst in one macrotask: a few 1 MiB objects arriving together stalled
 *     the event loop for hundreds of ms; this watch yields to the loop after every 256 KiB it parses;
 *   - status writes are merge patches of the status alone; their (possibly 1 MiB) answers are not parsed.
 * Credentials and TLS material still come from client-node's KubeConfig, and the watch plugs into
 * client-node's ListWatch (the informer cache with its 410 relist and delete diff).
 */
import { Agent, request, type RequestOptions } from 'node:https';
import { request as httpRequest, Agent as HttpAgent, type IncomingMessage } from 'node:http';
import type { KubeConfig, KubernetesListObject, KubernetesObject } from '@kubernetes/client-node';

/** A non-2xx answer. `code` is the HTTP status (as on client-node's ApiException), `body` the raw text. */
export class ApiError extends Error {
  readonly code: number;
  readonly body: string;
  constructor(method: string, path: string, code: number, body: string) {
    let message = body.slice(0, 300);
    try {
      message = (JSON.parse(body) as { message?: string }).message ?? message;
    } catch {
      // not JSON
    }
    super(`${method} ${path}: HTTP ${code}: ${message}`);
    this.name = 'ApiError';
    this.code = code;
    this.body = body;
  }
}

/** Options of one request. */
export interface RestRequestOptions {
  body?: unknown;
  contentType?: string;
  /** Deadline for the whole request. Default 30 s. */
  timeoutMs?: number;
  /** Parse the answer as JSON (default true); false skips it (large objects whose answer is not needed). */
  parse?: boolean;
}

/** The callback signature of client-node's Watch. */
type WatchCallback = (phase: string, apiObj: unknown, watchObj?: unknown) => void;

/** JSON over HTTPS with one keep-alive connection pool, credentials from a KubeConfig. */
export class KubeRest {
  readonly #kc: KubeConfig;
  readonly server: URL;
  #agent: Agent | HttpAgent | undefined;
  #watchAgent: Agent | HttpAgent | undefined;

  constructor(kc: KubeConfig) {
    this.#kc = kc;
    const cluster = kc.getCurrentCluster();
    if (!cluster) throw new Error('kubeconfig has no current cluster: set current-context');
    this.server = new URL(cluster.server);
  }

  /** TLS material and auth headers from the kubeconfig (re-read per request: tokens may rotate). */
  async #options(): Promise<{ headers: Record<string, string>; tls: Pick<RequestOptions, 'ca' | 'cert' | 'key' | 'rejectUnauthorized' | 'servername'> }> {
    const opts: RequestOptions & { headers?: Record<string, string> } = {};
    await this.#kc.applyToHTTPSOptions(opts);
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(opts.headers ?? {})) if (typeof v === 'string' || typeof v === 'number') headers[k] = String(v);
    if (opts.auth) headers['authorization'] = `Basic ${Buffer.from(opts.auth).toString('base64')}`;
    return { headers, tls: { ca: opts.ca, cert: opts.cert, key: opts.key, rejectUnauthorized: opts.rejectUnauthorized, servername: opts.servername } };
  }

  async #agentFor(watch: boolean): Promise<{ agent: Agent | HttpAgent; headers: Record<string, string> }> {
    const { headers, tls } = await this.#options();
    const https = this.server.protocol === 'https:';
    if (watch) {
      this.#watchAgent ??= https ? new Agent({ ...tls, keepAlive: false }) : new HttpAgent({ keepAlive: false });
      return { agent: this.#watchAgent, headers };
    }
    this.#agent ??= https ? new Agent({ ...tls, keepAlive: true, maxSockets: 16, keepAliveMsecs: 30_000 }) : new HttpAgent({ keepAlive: true, maxSockets: 16 });
    return { agent: this.#agent, headers };
  }

  #url(path: string, query?: Record<string, string | undefined>): URL {
    const url = new URL(path, this.server);
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined) url.searchParams.set(k, v);
    return url;
  }

  /** One request; resolves with the status and the parsed (or raw) body. Network errors reject. */
  async raw(method: string, path: string, opts: RestRequestOptions = {}): Promise<{ status: number; text: string; json: unknown }> {
    const { agent, headers } = await this.#agentFor(false);
    const url = this.#url(path);
    const payload = opts.body === undefined ? undefined : typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body);
    const send = this.server.protocol === 'https:' ? request : httpRequest;
    return new Promise((resolve, reject) => {
      const req = send(url, {
        method,
        agent,
        headers: {
          ...headers,
          accept: 'application/json',
          ...(payload !== undefined ? { 'content-type': opts.contentType ?? 'application/json', 'content-length': Buffer.byteLength(payload) } : {}),
        },
        timeout: opts.timeoutMs ?? 30_000,
      }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          const ok = status >= 200 && status < 300;
          // Error answers are always read (they carry the reason); big success answers only when asked.
          const text = ok && opts.parse === false ? '' : Buffer.concat(chunks).toString('utf8');
          let json: unknown;
          if (text && (opts.parse !== false || !ok)) {
            try {
              json = JSON.parse(text);
            } catch {
              json = undefined;
            }
          }
          resolve({ status, text, json });
        });
      });
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer within ${opts.timeoutMs ?? 30_000} ms`)));
      req.on('error', reject);
      req.end(payload);
    });
  }

  /** A request whose non-2xx answer throws ApiError. */
  async json<T>(method: string, path: string, opts: RestRequestOptions = {}): Promise<T> {
    const r = await this.raw(method, path, opts);
    if (r.status < 200 || r.status >= 300) throw new ApiError(method, path, r.status, r.text);
    return r.json as T;
  }

  /** GET, with undefined for 404. */
  async getOrUndefined<T>(path: string, timeoutMs?: number): Promise<T | undefined> {
    const r = await this.raw('GET', path, { timeoutMs });
    if (r.status === 404) return undefined;
    if (r.status < 200 || r.status >= 300) throw new ApiError('GET', path, r.status, r.text);
    return r.json as T;
  }

  /** A list (all pages) of a collection; items keep their kind and apiVersion filled from the list's. */
  async list<T extends KubernetesObject>(path: string, timeoutMs = 60_000): Promise<KubernetesListObject<T>> {
    const items: T[] = [];
    let cont: string | undefined;
    let last: KubernetesListObject<T>;
    do {
      const url = this.#url(path, { limit: '500', continue: cont });
      last = await this.json<KubernetesListObject<T>>('GET', url.pathname + url.search, { timeoutMs });
      items.push(...(last.items ?? []));
      cont = last.metadata?._continue ?? (last.metadata as { continue?: string } | undefined)?.continue;
    } while (cont);
    return { ...last, items };
  }

  /**
   * client-node's Watch interface (for ListWatch): streams `path` with watch=true, calls `callback` per
   * event and `done(err|null)` once when the stream ends. Parsing yields to the event loop every 256 KiB.
   */
  async watch(path: string, queryParams: Record<string, unknown>, callback: WatchCallback, done: (err: unknown) => void): Promise<AbortController> {
    const controller = new AbortController();
    let finished = false;
    const finish = (err: unknown): void => {
      if (finished) return;
      finished = true;
      // The caller's abort is not an error it needs to hear about.
      done(controller.signal.aborted ? null : err);
    };
    let agent: Agent | HttpAgent;
    let headers: Record<string, string>;
    try {
      ({ agent, headers } = await this.#agentFor(true));
    } catch (err) {
      finish(err);
      return controller;
    }
    const q: Record<string, string> = { watch: 'true' };
    for (const [k, v] of Object.entries(queryParams)) if (v !== undefined && v !== null && v !== '') q[k] = String(v);
    const base = new URL(path, this.server);
    for (const [k, v] of Object.entries(q)) base.searchParams.set(k, v);
    const send = this.server.protocol === 'https:' ? request : httpRequest;
    const req = send(base, { method: 'GET', agent, headers: { ...headers, accept: 'application/json' }, signal: controller.signal });
    // No response headers within 30 s: the server is not serving this watch.
    const headerTimer = setTimeout(() => req.destroy(new Error(`watch ${path}: no response within 30 s`)), 30_000);
    headerTimer.unref();
    req.on('error', (err) => {
      clearTimeout(headerTimer);
      finish(err);
    });
    await new Promise<void>((resolve) => {
      req.on('response', (res: IncomingMessage) => {
        clearTimeout(headerTimer);
        if (res.statusCode !== 200) {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => finish(Object.assign(new ApiError('GET', path, res.statusCode ?? 0, Buffer.concat(chunks).toString('utf8')), { statusCode: res.statusCode })));
          res.on('error', (err) => finish(err));
          resolve();
          return;
        }
        resolve();
        void this.#consume(res, callback).then(
          () => finish(null),
          (err: unknown) => finish(err),
        );
      });
      req.on('error', () => resolve());
      req.end();
    });
    return controller;
  }

  async #consume(res: IncomingMessage, callback: WatchCallback): Promise<void> {
    // A line (one event) may span many chunks: keep its parts and look for the newline in new text only.
    let parts: string[] = [];
    let sinceYield = 0;
    res.setEncoding('utf8');
    for await (const chunk of res as AsyncIterable<string>) {
      let start = 0;
      let nl: number;
      while ((nl = chunk.indexOf('\n', start)) >= 0) {
        parts.push(chunk.slice(start, nl));
        start = nl + 1;
        const line = parts.length === 1 ? parts[0]! : parts.join('');
        parts = [];
        if (!line.trim()) continue;
        let event: { type?: string; object?: unknown };
        try {
          event = JSON.parse(line) as typeof event;
        } catch {
          continue; // as client-node: a line that does not parse is skipped
        }
        callback(event.type ?? '', event.object, event);
        sinceYield += line.length;
        if (sinceYield >= 256 * 1024) {
          sinceYield = 0;
          await new Promise<void>((r) => setImmediate(r));
        }
      }
      if (start < chunk.length) parts.push(chunk.slice(start));
    }
  }

  /** Closes idle keep-alive connections. */
  close(): void {
    this.#agent?.destroy();
    this.#watchAgent?.destroy();
  }
}
