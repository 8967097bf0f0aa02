/**
 * The access log: one JSON line per request or opaque TCP connection, for namespaces that opt in
 * (annotation `nodemesh.io/access-log: json` on the Namespace). Off the hot path: a request costs a
 * namespace lookup and an array push; serialization and writes happen in batches later. The buffer is
 * bounded; past it lines are dropped and counted, never waited for.
 */
import type { Writable } from 'node:stream';
import type { ConnectionRecord, RequestRecord } from '../../l7proxy/telemetry/records.ts';
import { MetricsError } from './errors.ts';

/** The Namespace annotation that turns the access log on for its workloads. */
export const ACCESS_LOG_ANNOTATION = 'nodemesh.io/access-log';

/** Namespaces (metadata only) whose access log is on: annotation value `json` (or `true`). */
export function computeAccessLogNamespaces(namespaces: readonly { metadata?: { name?: string; annotations?: Record<string, string> } }[]): Set<string> {
  const on = new Set<string>();
  for (const ns of namespaces) {
    const v = ns.metadata?.annotations?.[ACCESS_LOG_ANNOTATION]?.trim().toLowerCase();
    if (ns.metadata?.name && (v === 'json' || v === 'true')) on.add(ns.metadata.name);
  }
  return on;
}

/** Options of AccessLogWriter. */
export type AccessLogOptions = {
  /** Where lines go (a file stream, or stdout for the container log). */
  stream: Writable;
  /** The node name written on every line. */
  node: string;
  /** Records waiting to be written; beyond it new ones are dropped. Default 10000. */
  maxBuffered?: number;
  /** Batching delay in milliseconds. Default 100. */
  flushIntervalMs?: number;
  /** Called for each dropped record (e.g. a metrics counter). */
  onDrop?: () => void;
  /** Called when the stream reports an error; the writer then drops everything until closed. */
  onError?: (err: Error) => void;
};

type Pending = { kind: 'request'; r: RequestRecord } | { kind: 'connection'; r: ConnectionRecord };

/** The namespace whose opt-in decides: the local workload's (source when outbound, destination when inbound). */
function localNamespace(r: { direction: 'outbound' | 'inbound'; source: { namespace: string }; destination: { namespace: string } }): string {
  return r.direction === 'outbound' ? r.source.namespace : r.destination.namespace;
}

/** Turns a record into its JSON line (snake_case keys, flat, absent fields left out). */
export function formatAccessLogLine(p: Pending, node: string): string {
  const base = {
    time: new Date(p.r.startMs).toISOString(),
    type: p.kind,
    node,
    reporter: p.r.direction === 'outbound' ? 'source' : 'destination',
    src_workload: p.r.source.workload || undefined,
    src_namespace: p.r.source.namespace || undefined,
    src_spiffe_id: p.r.source.spiffeId,
    dst_service: p.r.destination.service || undefined,
    dst_namespace: p.r.destination.namespace || undefined,
    dst_workload: p.r.destination.workload,
    peer_address: p.r.peerAddress,
    duration_ms: Math.round(p.r.durationSeconds * 1e6) / 1e3,
    authz_verdict: p.r.authz?.verdict,
    authz_policy: p.r.authz?.policy,
    trace_id: p.r.traceId,
  };
  if (p.kind === 'request') {
    const r = p.r;
    return JSON.stringify({
      ...base,
      protocol: r.protocol, method: r.method, authority: r.authority, path: r.path, code: r.code, route: r.route || undefined,
      attempts: r.attempts, refusal: r.refusal, request_bytes: r.requestBytes, response_bytes: r.responseBytes,
      user_agent: r.userAgent, span_id: r.spanId,
    });
  }
  const r = p.r;
  return JSON.stringify({ ...base, outcome: r.outcome, bytes_sent: r.bytesSent, bytes_received: r.bytesReceived });
}

/** Buffered, bounded, asynchronous JSON-lines access log. */
export class AccessLogWriter {
  readonly #opts: Required<Omit<AccessLogOptions, 'onDrop' | 'onError'>> & Pick<AccessLogOptions, 'onDrop' | 'onError'>;
  #enabled: ReadonlySet<string> = new Set();
  #pending: Pending[] = [];
  #timer: NodeJS.Timeout | undefined;
  #waitingDrain = false;
  #broken = false;
  #dropped = 0;
  #written = 0;
  #idle: (() => void)[] = [];

  constructor(opts: AccessLogOptions) {
    const maxBuffered = opts.maxBuffered ?? 10_000;
    if (!Number.isInteger(maxBuffered) || maxBuffered < 1) throw new MetricsError('NM_ERR_METRICS_BAD_OPTION', `access log: maxBuffered ${maxBuffered} is not a positive integer`);
    this.#opts = { maxBuffered, flushIntervalMs: opts.flushIntervalMs ?? 100, stream: opts.stream, node: opts.node, onDrop: opts.onDrop, onError: opts.onError };
    opts.stream.on('error', (e: Error) => {
      this.#broken = true;
      this.#opts.onError?.(e);
    });
  }

  /** Replaces the set of opted-in namespaces (see computeAccessLogNamespaces). */
  setNamespaces(namespaces: Iterable<string>): void {
    this.#enabled = new Set(namespaces);
  }

  /** True when records for this namespace would be logged: callers may skip building a record otherwise. */
  isEnabledFor(namespace: string): boolean {
    return this.#enabled.has(namespace);
  }

  /** Queues a request line if its local namespace opted in. Never throws, never waits. */
  logRequest(r: RequestRecord): void {
    if (this.#enabled.has(localNamespace(r))) this.#enqueue({ kind: 'request', r });
  }

  /** Queues a connection line if its local namespace opted in. */
  logConnection(r: ConnectionRecord): void {
    if (this.#enabled.has(localNamespace(r))) this.#enqueue({ kind: 'connection', r });
  }

  /** Records dropped (buffer full or stream broken) since start. */
  dropped(): number {
    return this.#dropped;
  }

  /** Lines handed to the stream since start. */
  written(): number {
    return this.#written;
  }

  #enqueue(p: Pending): void {
    if (this.#broken || this.#pending.length >= this.#opts.maxBuffered) {
      this.#dropped++;
      this.#opts.onDrop?.();
      return;
    }
    this.#pending.push(p);
    if (!this.#timer && !this.#waitingDrain) {
      this.#timer = setTimeout(() => this.#flushNow(), this.#opts.flushIntervalMs);
      this.#timer.unref();
    }
  }

  #flushNow(): void {
    this.#timer = undefined;
    if (this.#waitingDrain) return;
    const batch = this.#pending;
    this.#pending = [];
    if (batch.length > 0 && !this.#broken) {
      let text = '';
      for (const p of batch) text += formatAccessLogLine(p, this.#opts.node) + '\n';
      this.#written += batch.length;
      // Respect backpressure: while the stream is full, records accumulate (bounded) instead of memory in the stream.
      if (!this.#opts.stream.write(text)) {
        this.#waitingDrain = true;
        this.#opts.stream.once('drain', () => {
          this.#waitingDrain = false;
          this.#flushNow();
        });
        return;
      }
    }
    if (this.#pending.length > 0) {
      this.#flushNow();
      return;
    }
    for (const w of this.#idle.splice(0)) w();
  }

  /** Writes everything queued now; resolves when the stream has taken it. */
  flush(): Promise<void> {
    if (this.#pending.length === 0 && !this.#waitingDrain) return Promise.resolve();
    return new Promise((resolve) => {
      this.#idle.push(resolve);
      if (this.#timer) {
        clearTimeout(this.#timer);
        this.#timer = undefined;
      }
      if (!this.#waitingDrain) this.#flushNow();
    });
  }

  /** Flushes, then ends the stream. */
  async close(): Promise<void> {
    await this.flush();
    await new Promise<void>((resolve) => this.#opts.stream.end(() => resolve()));
  }
}
