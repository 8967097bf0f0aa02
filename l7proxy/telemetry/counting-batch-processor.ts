/**
 * The SDK's BatchSpanProcessor with its queue bound made visible: spans beyond `maxQueueSize` are dropped (and
 * counted) before they reach it, exports are counted by outcome. onEnd never waits: a request pays one array push.
 */
// Why a wrapper: the SDK drops on a full queue too, but only logs it (and resets its count when it logs), so
// an operator could not alert on lost spans. The queue depth is derived exactly: spans accepted minus spans
// the processor has handed to the exporter (it removes them from its queue in the same step).
import type { Context } from '@opentelemetry/api';
import { TraceFlags } from '@opentelemetry/api';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { BatchSpanProcessor, type ReadableSpan, type Span, type SpanExporter, type SpanProcessor } from '@opentelemetry/sdk-trace';

/** Counters of the span pipeline since start. */
export type SpanPipelineStats = {
  /** Sampled spans that entered the queue. */
  queued: number;
  /** Sampled spans dropped because the queue was full. */
  dropped: number;
  /** Spans the collector accepted. */
  exported: number;
  /** Spans in export requests that failed (collector down, timeout, over the in-flight limit). */
  exportFailed: number;
  /** Failed export requests. */
  exportFailures: number;
  /** Spans waiting in the queue now. */
  queueDepth: number;
};

/** Options of the counting processor (a subset of the SDK's BatchSpanProcessor options). */
export type CountingBatchOptions = {
  maxQueueSize: number;
  maxExportBatchSize: number;
  scheduledDelayMillis: number;
  exportTimeoutMillis: number;
  /** Called after a failed export request, with the error (for a rate-limited log line). */
  onExportError?: (err: Error | undefined, spans: number) => void;
};

/** A BatchSpanProcessor whose drops and export outcomes are counted. */
export class CountingBatchSpanProcessor implements SpanProcessor {
  readonly #inner: BatchSpanProcessor;
  readonly #max: number;
  #accepted = 0;
  #handed = 0;
  #dropped = 0;
  #exported = 0;
  #failedSpans = 0;
  #failures = 0;

  constructor(exporter: SpanExporter, opts: CountingBatchOptions) {
    this.#max = opts.maxQueueSize;
    const counting: SpanExporter = {
      export: (spans: ReadableSpan[], done: (r: ExportResult) => void): void => {
        this.#handed += spans.length;
        exporter.export(spans, (r) => {
          if (r.code === ExportResultCode.SUCCESS) this.#exported += spans.length;
          else {
            this.#failedSpans += spans.length;
            this.#failures++;
            opts.onExportError?.(r.error, spans.length);
          }
          done(r);
        });
      },
      shutdown: () => exporter.shutdown(),
      forceFlush: () => exporter.forceFlush?.() ?? Promise.resolve(),
    };
    this.#inner = new BatchSpanProcessor({
      exporter: counting,
      maxQueueSize: opts.maxQueueSize,
      maxExportBatchSize: Math.min(opts.maxExportBatchSize, opts.maxQueueSize),
      scheduledDelayMillis: opts.scheduledDelayMillis,
      exportTimeoutMillis: opts.exportTimeoutMillis,
    });
  }

  onStart(span: Span, parentContext: Context): void {
    this.#inner.onStart(span, parentContext);
  }

  onEnd(span: ReadableSpan): void {
    if ((span.spanContext().traceFlags & TraceFlags.SAMPLED) === 0) return;
    if (this.#accepted - this.#handed >= this.#max) {
      this.#dropped++;
      return;
    }
    this.#accepted++;
    this.#inner.onEnd(span);
  }

  forceFlush(): Promise<void> {
    return this.#inner.forceFlush();
  }

  shutdown(): Promise<void> {
    return this.#inner.shutdown();
  }

  /** A snapshot of the counters. */
  stats(): SpanPipelineStats {
    return {
      queued: this.#accepted,
      dropped: this.#dropped,
      exported: this.#exported,
      exportFailed: this.#failedSpans,
      exportFailures: this.#failures,
      queueDepth: this.#accepted - this.#handed,
    };
  }
}
