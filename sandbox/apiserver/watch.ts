/**
 * Watch streams: initial state or replay from a resourceVersion, then live events fanned out from the
 * store, with selector transitions (an object leaving the selector is a DELETED), bookmarks, timeouts,
 * 410 Gone as an ERROR event for compacted history, and a byte bound per watcher: a watcher that does not
 * read is closed (it resumes from its last resourceVersion) instead of buffering without limit.
 */

import type { ServerResponse } from 'node:http';
import { gone } from './errors.ts';
import type { JsonObject } from './json.ts';
import { asObject } from './json.ts';
import type { ObjectService } from './objects.ts';
import type { ResourceType } from './registry.ts';
import { apiVersionOf } from './registry.ts';
import type { FieldSelector, LabelSelector } from './selectors.ts';
import type { EventType, ObjectStore, StoreEvent } from './store.ts';
import type { IncludeObject } from './tables.ts';
import { toTable } from './tables.ts';

/** How the objects of a watch are rendered. */
export type WatchRendering = { as: 'object' } | { as: 'table'; include: IncludeObject } | { as: 'metadata' };

/** A parsed watch request. */
export interface WatchRequest {
  rt: ResourceType;
  namespace: string | undefined;
  labelSelector: LabelSelector;
  fieldSelector: FieldSelector;
  resourceVersion: string | undefined;
  sendInitialEvents: boolean | undefined;
  allowBookmarks: boolean;
  timeoutSeconds: number | undefined;
  rendering: WatchRendering;
}

/** Tunables of the watch hub. */
export interface WatchHubOptions {
  bookmarkIntervalMs: number;
  /** Bytes a watcher may have unread before it is closed. */
  maxBufferedBytes: number;
  log: (line: string) => void;
}

interface Watcher {
  req: WatchRequest;
  res: ServerResponse;
  apiVersion: string;
  close: (why?: string) => void;
}

/** Fans store events out to HTTP watch streams. */
export class WatchHub {
  private readonly store: ObjectStore;
  private readonly objects: ObjectService;
  private readonly opts: WatchHubOptions;
  private readonly byResource = new Map<string, Set<Watcher>>();
  private readonly unsubscribe: () => void;
  /** Watchers closed for not reading, for tests and logs. */
  droppedSlowWatchers = 0;

  constructor(store: ObjectStore, objects: ObjectService, opts: WatchHubOptions) {
    this.store = store;
    this.objects = objects;
    this.opts = opts;
    this.unsubscribe = store.subscribe((ev) => this.fanOut(ev));
  }

  /** Number of open watches. */
  get size(): number {
    let n = 0;
    for (const s of this.byResource.values()) n += s.size;
    return n;
  }

  private encode(w: Watcher, type: EventType | 'BOOKMARK' | 'ERROR', obj: JsonObject, ev?: StoreEvent): string {
    if (type === 'ERROR' || type === 'BOOKMARK') return `${JSON.stringify({ type, object: obj })}\n`;
    const r = w.req.rendering;
    if (r.as === 'object') {
      let json: string;
      if (ev && obj === ev.object && obj['apiVersion'] === w.apiVersion && obj['kind'] === w.req.rt.kind) {
        // One serialisation per event and version, shared by every watcher of it.
        ev.encoded ??= new Map();
        json = ev.encoded.get(w.apiVersion) ?? JSON.stringify(obj);
        ev.encoded.set(w.apiVersion, json);
      } else {
        json = JSON.stringify(this.objects.render(w.req.rt, obj));
      }
      return `{"type":"${type}","object":${json}}\n`;
    }
    const rendered = this.objects.render(w.req.rt, obj);
    if (r.as === 'table') {
      const md = asObject(rendered['metadata']) ?? {};
      return `${JSON.stringify({ type, object: toTable(w.req.rt, [rendered], { resourceVersion: md['resourceVersion'] ?? '' }, r.include) })}\n`;
    }
    return `${JSON.stringify({ type, object: { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: rendered['metadata'] ?? {} } })}\n`;
  }

  private write(w: Watcher, line: string): void {
    if (w.res.destroyed || w.res.writableEnded) return;
    w.res.write(line);
    if (w.res.writableLength > this.opts.maxBufferedBytes) {
      this.droppedSlowWatchers++;
      this.opts.log(`watch ${w.req.rt.plural}: closing a watcher with ${w.res.writableLength} unread bytes (client too slow; it will resume from its last resourceVersion)`);
      w.close('slow');
    }
  }

  private matches(w: Watcher, obj: JsonObject | undefined, ns: string): boolean {
    if (!obj) return false;
    if (w.req.namespace !== undefined && w.req.rt.namespaced && ns !== w.req.namespace) return false;
    return this.objects.matches(obj, w.req.labelSelector, w.req.fieldSelector);
  }

  private deliver(w: Watcher, ev: StoreEvent): void {
    const filtered = w.req.labelSelector.length > 0 || w.req.fieldSelector.length > 0;
    if (!filtered) {
      if (w.req.namespace !== undefined && w.req.rt.namespaced && ev.namespace !== w.req.namespace) return;
      this.write(w, this.encode(w, ev.type, ev.object, ev));
      return;
    }
    if (ev.type === 'ADDED') {
      if (this.matches(w, ev.object, ev.namespace)) this.write(w, this.encode(w, 'ADDED', ev.object, ev));
    } else if (ev.type === 'DELETED') {
      if (this.matches(w, ev.object, ev.namespace)) this.write(w, this.encode(w, 'DELETED', ev.object, ev));
    } else {
      const now = this.matches(w, ev.object, ev.namespace);
      const before = this.matches(w, ev.previous, ev.namespace);
      if (now && before) this.write(w, this.encode(w, 'MODIFIED', ev.object, ev));
      else if (now) this.write(w, this.encode(w, 'ADDED', ev.object, ev));
      else if (before) {
        // Leaving the selector: a DELETED with the previous content at the new revision, as the real cacher does.
        const prev = ev.previous!;
        const last = { ...prev, metadata: { ...(asObject(prev['metadata']) ?? {}), resourceVersion: String(ev.rv) } };
        this.write(w, this.encode(w, 'DELETED', last));
      }
    }
  }

  private fanOut(ev: StoreEvent): void {
    const set = this.byResource.get(ev.resource);
    if (!set) return;
    for (const w of set) this.deliver(w, ev);
  }

  private bookmark(w: Watcher, initialEnd: boolean): void {
    const obj: JsonObject = {
      kind: w.req.rt.kind,
      apiVersion: w.apiVersion,
      metadata: { resourceVersion: String(this.store.currentRevision()), ...(initialEnd ? { annotations: { 'k8s.io/initial-events-end': 'true' } } : {}) },
    };
    this.write(w, this.encode(w, 'BOOKMARK', obj));
  }

  /** Serves a watch on an HTTP response until timeout, client close, or a slow-client drop. */
  serve(req: WatchRequest, res: ServerResponse): void {
    res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private', 'Transfer-Encoding': 'chunked' });
    res.flushHeaders();
    res.socket?.setNoDelay(true);
    const timers: NodeJS.Timeout[] = [];
    let closed = false;
    const w: Watcher = {
      req,
      res,
      apiVersion: apiVersionOf(req.rt),
      close: (why) => {
        if (closed) return;
        closed = true;
        for (const t of timers) clearTimeout(t);
        this.byResource.get(req.rt.storageKey)?.delete(w);
        if (!res.writableEnded) res.end();
        if (why === 'slow') {
          // The unread bytes may never drain; do not keep the socket for them.
          const t = setTimeout(() => res.destroy(), 2000);
          t.unref();
        }
      },
    };
    res.on('close', () => w.close());

    const rv = req.resourceVersion;
    const fromState = rv === undefined || rv === '' || rv === '0' || req.sendInitialEvents === true;
    if (fromState) {
      const { items } = this.objects.list(req.rt, req.namespace, { labelSelector: req.labelSelector, fieldSelector: req.fieldSelector, limit: undefined, continueToken: undefined });
      for (const o of items) this.write(w, this.encode(w, 'ADDED', o));
      if (req.sendInitialEvents === true && req.allowBookmarks) this.bookmark(w, true);
    } else {
      const n = Number(rv);
      if (!Number.isInteger(n) || n < 0) {
        this.write(w, this.encode(w, 'ERROR', gone(`invalid resource version: ${rv}`).toStatus()));
        w.close();
        return;
      }
      const replay = this.store.eventsAfter(req.rt.storageKey, n);
      if (!Array.isArray(replay)) {
        // The real server answers 200 and then an ERROR event carrying a 410 Status; informers relist on it.
        const msg = replay.gap === 'expired' ? `too old resource version: ${rv} (${replay.oldest - 1})` : `too old resource version: ${rv} (${replay.current}): the server's history starts later (was it restarted?)`;
        this.write(w, this.encode(w, 'ERROR', gone(msg).toStatus()));
        w.close();
        return;
      }
      for (const ev of replay) this.deliver(w, ev);
    }
    if (closed) return;
    let set = this.byResource.get(req.rt.storageKey);
    if (!set) this.byResource.set(req.rt.storageKey, (set = new Set()));
    set.add(w);
    if (req.allowBookmarks) {
      const tick = (): void => {
        if (closed) return;
        this.bookmark(w, false);
        const t = setTimeout(tick, this.opts.bookmarkIntervalMs);
        t.unref();
        timers[0] = t;
      };
      const t = setTimeout(tick, this.opts.bookmarkIntervalMs);
      t.unref();
      timers.push(t);
    }
    // Without timeoutSeconds the real server picks 30-60 minutes so watches spread their reconnects.
    const timeout = req.timeoutSeconds !== undefined && req.timeoutSeconds > 0 ? req.timeoutSeconds * 1000 : (1800 + Math.random() * 1800) * 1000;
    const tt = setTimeout(() => w.close(), timeout);
    tt.unref();
    timers.push(tt);
  }

  /** Ends every watch (server shutdown). */
  closeAll(): void {
    for (const set of this.byResource.values()) for (const w of [...set]) w.close();
    this.unsubscribe();
  }
}
