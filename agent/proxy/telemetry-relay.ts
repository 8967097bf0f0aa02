/**
 * Carries the proxy workers' telemetry records to the agent: each worker batches its records (bounded; overflow
 * dropped and counted, a request never waits) and sends one IPC message per interval to the proxy process, which
 * forwards it to the agent (proxy/main.ts), where they feed the metrics registry and the access log.
 */
// Why batches over IPC and not a metrics endpoint per worker: the access log needs each record, the agent owns the
// one /metrics a scraper sees, and a message per 250 ms per worker costs nothing next to the requests it carries.
import type { ProxyStats } from '../../l7proxy/stats.ts';
import type { SpanPipelineStats } from '../../l7proxy/telemetry/counting-batch-processor.ts';
import type { ConnectionRecord, RequestRecord, TelemetrySink } from '../../l7proxy/telemetry/records.ts';

/** Records one worker sends per interval, with its counters at that moment. */
export type TelemetryBatch = {
  t: 'nm-telemetry';
  /** The worker's pid: counters are per worker and restart with it. */
  pid: number;
  requests: RequestRecord[];
  opened: Pick<ConnectionRecord, 'direction' | 'source' | 'destination'>[];
  closed: ConnectionRecord[];
  /** Records dropped because the buffer was full since the last batch. */
  dropped: number;
  /** The worker's proxy counters (outbound and inbound side summed) and its span pipeline's. */
  proxyStats?: ProxyStats;
  spanStats?: SpanPipelineStats;
};

/** Whether an IPC message is a telemetry batch. */
export function isTelemetryBatch(m: unknown): m is TelemetryBatch {
  return typeof m === 'object' && m !== null && (m as { t?: unknown }).t === 'nm-telemetry';
}

/** A TelemetrySink that buffers records for `drain` (the worker's flush timer). */
export class BatchingSink implements TelemetrySink {
  readonly #max: number;
  #requests: RequestRecord[] = [];
  #opened: TelemetryBatch['opened'] = [];
  #closed: ConnectionRecord[] = [];
  #dropped = 0;

  /** `max`: records held between flushes (all kinds together); beyond it new ones are dropped and counted. */
  constructor(max = 20_000) {
    this.#max = max;
  }

  #room(): boolean {
    if (this.#requests.length + this.#opened.length + this.#closed.length < this.#max) return true;
    this.#dropped++;
    return false;
  }

  connectionOpened(r: TelemetryBatch['opened'][number]): void { if (this.#room()) this.#opened.push(r); }
  connectionClosed(r: ConnectionRecord): void { if (this.#room()) this.#closed.push(r); }
  requestFinished(r: RequestRecord): void { if (this.#room()) this.#requests.push(r); }

  /** Takes what is buffered (empty lists when nothing happened). */
  drain(): Pick<TelemetryBatch, 'requests' | 'opened' | 'closed' | 'dropped'> {
    const out = { requests: this.#requests, opened: this.#opened, closed: this.#closed, dropped: this.#dropped };
    this.#requests = [];
    this.#opened = [];
    this.#closed = [];
    this.#dropped = 0;
    return out;
  }
}
