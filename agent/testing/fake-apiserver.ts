/**
 * Test helper: a tiny plain-HTTP Kubernetes API for the four kinds the agent watches, with list,
 * watch from a resourceVersion, and knobs to break it: failing lists, dropped watch connections,
 * compaction (410 Gone on resume). Enough for client-node's ListWatch; nothing more.
 */
import { KubeConfig } from '@kubernetes/client-node';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

type Obj = { metadata?: { name?: string; namespace?: string; resourceVersion?: string }; spec?: { nodeName?: string } } & Record<string, unknown>;
type Kind = 'services' | 'endpointslices' | 'nodes' | 'pods';

const PATHS: Record<string, Kind> = {
  '/api/v1/services': 'services',
  '/apis/discovery.k8s.io/v1/endpointslices': 'endpointslices',
  '/api/v1/nodes': 'nodes',
  '/api/v1/pods': 'pods',
};
const LIST_KIND: Record<Kind, [string, string]> = {
  services: ['v1', 'ServiceList'],
  endpointslices: ['discovery.k8s.io/v1', 'EndpointSliceList'],
  nodes: ['v1', 'NodeList'],
  pods: ['v1', 'PodList'],
};

interface Event {
  rv: number;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  obj: Obj;
}

/** The fake server. */
export class FakeApiServer {
  #server: Server | undefined;
  #rv = 100;
  readonly #objects = new Map<Kind, Map<string, Obj>>();
  readonly #history = new Map<Kind, Event[]>();
  readonly #compacted = new Map<Kind, number>();
  readonly #watchers = new Set<{ kind: Kind; res: ServerResponse; filter: (o: Obj) => boolean }>();
  readonly #sockets = new Set<Socket>();
  readonly #listFailures = new Map<Kind, number>();
  /** Requests seen, as `LIST kind` / `WATCH kind rv=N`. */
  readonly requests: string[] = [];
  port = 0;

  async start(): Promise<void> {
    this.#server = createServer((req, res) => this.#handle(req, res));
    this.#server.on('connection', (s) => {
      this.#sockets.add(s);
      s.on('close', () => this.#sockets.delete(s));
    });
    await new Promise<void>((r) => this.#server?.listen(0, '127.0.0.1', () => r()));
    const a = this.#server.address();
    this.port = typeof a === 'object' && a ? a.port : 0;
  }

  /** A KubeConfig pointing here. */
  kubeConfig(): KubeConfig {
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'fake', server: `http://127.0.0.1:${this.port}`, skipTLSVerify: true }],
      users: [{ name: 'fake', token: 'x' }],
      contexts: [{ name: 'fake', cluster: 'fake', user: 'fake' }],
      currentContext: 'fake',
    });
    return kc;
  }

  #key(o: Obj): string {
    return `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;
  }

  #map(kind: Kind): Map<string, Obj> {
    let m = this.#objects.get(kind);
    if (!m) this.#objects.set(kind, (m = new Map()));
    return m;
  }

  /** Creates or replaces an object; watchers see ADDED or MODIFIED. */
  apply(kind: Kind, obj: Obj): void {
    const m = this.#map(kind);
    const o = structuredClone(obj);
    o.metadata = { ...o.metadata, resourceVersion: String(++this.#rv) };
    const type = m.has(this.#key(o)) ? 'MODIFIED' : 'ADDED';
    m.set(this.#key(o), o);
    this.#emit(kind, { rv: this.#rv, type, obj: o });
  }

  /** Deletes an object; watchers see DELETED. */
  remove(kind: Kind, namespace: string | undefined, name: string): void {
    const m = this.#map(kind);
    const key = `${namespace ?? ''}/${name}`;
    const o = m.get(key);
    if (!o) return;
    m.delete(key);
    const gone = { ...o, metadata: { ...o.metadata, resourceVersion: String(++this.#rv) } };
    this.#emit(kind, { rv: this.#rv, type: 'DELETED', obj: gone });
  }

  #emit(kind: Kind, e: Event): void {
    let h = this.#history.get(kind);
    if (!h) this.#history.set(kind, (h = []));
    h.push(e);
    for (const w of this.#watchers) if (w.kind === kind && w.filter(e.obj)) w.res.write(`${JSON.stringify({ type: e.type, object: e.obj })}\n`);
  }

  /** The next `times` lists of a kind answer 500. */
  failLists(kind: Kind, times: number): void {
    this.#listFailures.set(kind, times);
  }

  /** Forgets history up to now: a watch resuming from an older resourceVersion gets 410 Gone. */
  compact(): void {
    for (const kind of Object.values(PATHS)) this.#compacted.set(kind, this.#rv);
  }

  /** Cuts every open watch connection (the server "restarts"). */
  dropWatches(): void {
    for (const w of this.#watchers) w.res.destroy();
    this.#watchers.clear();
  }

  /** Open watches by kind. */
  openWatches(kind: Kind): number {
    return [...this.#watchers].filter((w) => w.kind === kind).length;
  }

  #handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    const kind = PATHS[url.pathname];
    if (!kind) {
      res.writeHead(404).end();
      return;
    }
    const fs = url.searchParams.get('fieldSelector');
    const nodeName = fs?.startsWith('spec.nodeName=') ? fs.slice('spec.nodeName='.length) : undefined;
    const filter = (o: Obj): boolean => nodeName === undefined || o.spec?.nodeName === nodeName;
    if (url.searchParams.get('watch') === 'true') {
      const rv = Number(url.searchParams.get('resourceVersion') ?? '0');
      this.requests.push(`WATCH ${kind} rv=${rv}`);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.flushHeaders();
      if (rv < (this.#compacted.get(kind) ?? 0)) {
        res.end(`${JSON.stringify({ type: 'ERROR', object: { kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'Expired', code: 410, message: `too old resource version: ${rv}` } })}\n`);
        return;
      }
      for (const e of this.#history.get(kind) ?? []) if (e.rv > rv && filter(e.obj)) res.write(`${JSON.stringify({ type: e.type, object: e.obj })}\n`);
      const w = { kind, res, filter };
      this.#watchers.add(w);
      res.on('close', () => this.#watchers.delete(w));
      return;
    }
    this.requests.push(`LIST ${kind}`);
    const failures = this.#listFailures.get(kind) ?? 0;
    if (failures > 0) {
      this.#listFailures.set(kind, failures - 1);
      res.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', status: 'Failure', code: 500, message: 'injected failure' }));
      return;
    }
    const [apiVersion, listKind] = LIST_KIND[kind];
    const items = [...this.#map(kind).values()].filter(filter);
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ apiVersion, kind: listKind, metadata: { resourceVersion: String(this.#rv) }, items }));
  }

  async close(): Promise<void> {
    this.dropWatches();
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((r) => (this.#server ? this.#server.close(() => r()) : r()));
  }
}
