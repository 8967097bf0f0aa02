/**
 * The proxy's tracer: OpenTelemetry spans for each request (server span inbound, client span outbound) and
 * each opaque TCP connection, ParentBased(TraceIdRatio) sampling, W3C/B3 propagation, OTLP/HTTP protobuf
 * export through a bounded, counted batch queue. Contexts are passed explicitly: no global context manager.
 * With tracing off only the pass-through tracer below exists: the SDK half (tracer-sdk.ts) is loaded on first use.
 */
import { createRequire } from 'node:module';
import { ROOT_CONTEXT, trace, type Context, type Span } from '@opentelemetry/api';
import type { SpanExporter } from '@opentelemetry/sdk-trace';
import type { HttpRequestInfo, MeshSpanInfo } from './attributes.ts';
import { DEFAULT_TRACING_SETTINGS, type InjectFormat, type TracingSettings } from './config.ts';
import type { SpanPipelineStats } from './counting-batch-processor.ts';
import { extractTraceContext, injectTraceContext, type HeaderBag } from './propagation.ts';

/** Options of createTracer; unset fields take DEFAULT_TRACING_SETTINGS. */
export type CreateTracerOptions = {
  /** `service.name` of the resource; default `nodemesh-proxy`. */
  serviceName?: string;
  serviceVersion?: string;
  /** The node this proxy serves (`k8s.node.name` on the resource, `nodemesh.node` on spans). */
  nodeName: string;
  /** Default: true when `otlp` or `exporter` is given. False: spans are not recorded; headers pass through. */
  enabled?: boolean;
  otlp?: { endpoint: string; headers?: Record<string, string>; compression?: 'none' | 'gzip'; timeoutMs?: number };
  /** Root sampling probability 0..1 (children follow the parent). */
  samplingRatio?: number;
  maxQueueSize?: number;
  maxExportBatchSize?: number;
  scheduledDelayMs?: number;
  exportTimeoutMs?: number;
  /** Header formats written on forwarded requests; default W3C only. */
  inject?: InjectFormat[];
  /** Replaces the OTLP exporter (tests: InMemorySpanExporter). */
  exporter?: SpanExporter;
  /** Told about failed exports (at most once per 10 s); default: nowhere. */
  onExportError?: (message: string) => void;
};

/** What the proxy says when a request ends. */
export type HttpSpanResult = {
  /** The status sent to the client (server span) or received from upstream (client span); absent = none. */
  statusCode?: number;
  /** Low-cardinality error class when no response came (`timeout`, `connect_refused`, `reset`...). */
  errorType?: string;
  /** Why the proxy answered itself (`circuit_breaker`, `rate_limited`, `no_route`, `authz_denied`...). */
  reason?: string;
};

/** A started HTTP span: its context (to inject and to parent children) and how to end it. */
export type HttpSpan = {
  readonly context: Context;
  readonly span: Span;
  /** 32 hex digits (also for unsampled spans: access logs can carry it). */
  readonly traceId: string;
  readonly spanId: string;
  readonly sampled: boolean;
  /** Adds mesh facts learnt after the start (the route matched, the verdict, the attempt). */
  setMesh(m: MeshSpanInfo): void;
  /** Writes this span's context into the headers of the request about to be forwarded. */
  inject(headers: HeaderBag): void;
  /** Request and response body bytes (`http.request.body.size`, `http.response.body.size`), set before end. */
  setBodySizes(requestBytes: number, responseBytes: number): void;
  /** Ends the span once (later calls are ignored), setting status per the HTTP conventions. */
  end(result: HttpSpanResult): void;
};

/** What an opaque TCP connection reports when it closes. */
export type ConnectionSpanResult = { bytesSent: number; bytesReceived: number; errorType?: string; reason?: string };

/** A started L4 connection span. */
export type ConnectionSpan = {
  readonly context: Context;
  readonly span: Span;
  readonly traceId: string;
  readonly sampled: boolean;
  setMesh(m: MeshSpanInfo): void;
  /** For the HTTP/2 CONNECT tunnel request that carries the connection to the other node. */
  inject(headers: HeaderBag): void;
  end(result: ConnectionSpanResult): void;
};

/** Start facts of an HTTP span: the request plus what the mesh knows at that point. */
export type HttpSpanStart = HttpRequestInfo & { mesh?: MeshSpanInfo };

/** Start facts of an L4 connection span. */
export type ConnectionSpanStart = {
  /** outbound: this proxy dials on behalf of a local client (CLIENT span); inbound: it accepts for a local server (SERVER span). */
  direction: 'outbound' | 'inbound';
  peerAddress?: string;
  peerPort?: number;
  serverAddress?: string;
  serverPort?: number;
  mesh?: MeshSpanInfo;
};

/** The proxy's tracer. */
export type MeshTracer = {
  readonly enabled: boolean;
  /** The remote parent in incoming headers (W3C, then B3 single, then B3 multi); ROOT_CONTEXT if none. */
  extract(headers: HeaderBag): Context;
  /** Writes `ctx` into headers in the configured formats. */
  inject(ctx: Context, headers: HeaderBag): void;
  /** SERVER span for a request this proxy received for a local destination (destination node). */
  startServerSpan(req: HttpSpanStart, parent: Context): HttpSpan;
  /** CLIENT span for a request (and one per upstream attempt under it when the route retries) this proxy sends on a local client's behalf (source node). */
  startClientSpan(req: HttpSpanStart, parent: Context): HttpSpan;
  /** Span covering one opaque TCP connection through the proxy. */
  startConnectionSpan(conn: ConnectionSpanStart, parent?: Context): ConnectionSpan;
  /** Pipeline counters (queued, dropped, exported, failed). */
  stats(): SpanPipelineStats;
  /** Exports what is queued now (tests, drain before exit). */
  forceFlush(): Promise<void>;
  /** Flushes and stops; later spans are not recorded. */
  shutdown(): Promise<void>;
};

const ZERO_STATS: SpanPipelineStats = { queued: 0, dropped: 0, exported: 0, exportFailed: 0, exportFailures: 0, queueDepth: 0 };

/** A tracer that records nothing but keeps the client's trace headers intact through the proxy. */
function createPassThroughTracer(inject: InjectFormat[]): MeshTracer {
  // Reusing the parent's span context means inject() rewrites the same traceparent the client sent.
  const passSpan = (parent: Context): { span: Span; context: Context } => {
    const sc = trace.getSpanContext(parent);
    const span = trace.wrapSpanContext(sc ?? { traceId: '00000000000000000000000000000000', spanId: '0000000000000000', traceFlags: 0 });
    return { span, context: parent };
  };
  const http = (parent: Context): HttpSpan => {
    const { span, context } = passSpan(parent);
    const sc = span.spanContext();
    return { context, span, traceId: sc.traceId, spanId: sc.spanId, sampled: false, setMesh: () => {}, inject: (h) => injectTraceContext(context, h, inject), setBodySizes: () => {}, end: () => {} };
  };
  return {
    enabled: false,
    extract: (h) => extractTraceContext(h),
    inject: (ctx, h) => injectTraceContext(ctx, h, inject),
    startServerSpan: (_r, parent) => http(parent),
    startClientSpan: (_r, parent) => http(parent),
    startConnectionSpan: (_c, parent = ROOT_CONTEXT) => {
      const { span, context } = passSpan(parent);
      return { context, span, traceId: span.spanContext().traceId, sampled: false, setMesh: () => {}, inject: (h) => injectTraceContext(context, h, inject), end: () => {} };
    },
    stats: () => ({ ...ZERO_STATS }),
    forceFlush: () => Promise.resolve(),
    shutdown: () => Promise.resolve(),
  };
}

/**
 * Makes the proxy's tracer. Spans are exported over OTLP/HTTP protobuf to `otlp.endpoint` (or to `exporter`).
 * Nothing here blocks a request: a full queue drops the span and counts it in `stats().dropped`.
 */
export function createTracer(opts: CreateTracerOptions): MeshTracer {
  const d = DEFAULT_TRACING_SETTINGS;
  const inject = opts.inject ?? d.inject;
  const enabled = opts.enabled ?? (opts.otlp !== undefined || opts.exporter !== undefined);
  if (!enabled) return createPassThroughTracer(inject);
  return loadRecordingTracer()(opts, inject);
}

type RecordingTracerFactory = (opts: CreateTracerOptions, inject: InjectFormat[]) => MeshTracer;
let recordingTracer: RecordingTracerFactory | undefined;

/**
 * tracer-sdk.ts, loaded on the first enabled tracer. Synchronously (require of an ES module, Node >= 22.12) so
 * createTracer stays synchronous for its callers; it is the same module instance a static import would give.
 */
function loadRecordingTracer(): RecordingTracerFactory {
  if (recordingTracer === undefined) {
    const load = createRequire(import.meta.url);
    recordingTracer = (load('./tracer-sdk.ts') as { createRecordingTracer: RecordingTracerFactory }).createRecordingTracer;
  }
  return recordingTracer;
}

/** Makes a tracer from resolved mesh settings (see computeTracingSettings). */
export function createTracerFromSettings(settings: TracingSettings, who: { nodeName: string; serviceName?: string; serviceVersion?: string; onExportError?: (message: string) => void }): MeshTracer {
  return createTracer({
    ...who,
    enabled: settings.enabled,
    otlp: { endpoint: settings.endpoint, headers: settings.headers, compression: settings.compression, timeoutMs: settings.exportTimeoutMs },
    samplingRatio: settings.samplingRatio,
    maxQueueSize: settings.maxQueueSize,
    maxExportBatchSize: settings.maxExportBatchSize,
    scheduledDelayMs: settings.scheduledDelayMs,
    exportTimeoutMs: settings.exportTimeoutMs,
    inject: settings.inject,
  });
}
