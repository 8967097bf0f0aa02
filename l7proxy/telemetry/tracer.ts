/**
 * The proxy's tracer: OpenTelemetry spans for each request (server span inbound, client span outbound) and
 * each opaque TCP connection, ParentBased(TraceIdRatio) sampling, W3C/B3 propagation, OTLP/HTTP protobuf
 * export through a bounded, counted batch queue. Contexts are passed explicitly: no global context manager.
 */
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Attributes, type Context, type Span, type Tracer } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { ParentBasedSampler, TraceIdRatioBasedSampler, TracerProvider, type SpanExporter } from '@opentelemetry/sdk-trace';
import { ATTR_ERROR_TYPE, ATTR_HTTP_RESPONSE_STATUS_CODE, ATTR_SERVICE_NAME, ATTR_SERVICE_NAMESPACE, ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions';
import { computeConnectionAttributes, computeHttpAttributes, computeMeshAttributes, MESH_ATTR, type HttpRequestInfo, type MeshSpanInfo } from './attributes.ts';
import { DEFAULT_TRACING_SETTINGS, type InjectFormat, type TracingSettings } from './config.ts';
import { CountingBatchSpanProcessor, type SpanPipelineStats } from './counting-batch-processor.ts';
import { TelemetryError } from './errors.ts';
import { extractTraceContext, injectTraceContext, type HeaderBag } from './propagation.ts';

// Still in the incubating HTTP conventions; literals keep us off that entry point (as k8s.node.name below).
const ATTR_HTTP_REQUEST_BODY_SIZE = 'http.request.body.size';
const ATTR_HTTP_RESPONSE_BODY_SIZE = 'http.response.body.size';

/** The OTLP exporter's options (its compression enum is not exported from the exporter package itself). */
type ExporterConfig = NonNullable<ConstructorParameters<typeof OTLPTraceExporter>[0]>;

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

function validateRatio(r: number): number {
  if (!Number.isFinite(r) || r < 0 || r > 1) throw new TelemetryError('NM_ERR_TELEMETRY_BAD_CONFIG', `createTracer: samplingRatio ${r} is not between 0 and 1`);
  return r;
}

function positiveInt(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 1) throw new TelemetryError('NM_ERR_TELEMETRY_BAD_CONFIG', `createTracer: ${name} ${v} is not a positive integer`);
  return v;
}

/** Span name per the HTTP conventions: the method, or `HTTP` when it is not a known one. */
function httpSpanName(attrs: Attributes): string {
  const m = attrs['http.request.method'];
  return typeof m === 'string' && m !== '_OTHER' ? m : 'HTTP';
}

function wrapHttpSpan(span: Span, parent: Context, kind: 'server' | 'client', inject: InjectFormat[]): HttpSpan {
  const context = trace.setSpan(parent, span);
  const sc = span.spanContext();
  let ended = false;
  return {
    context,
    span,
    traceId: sc.traceId,
    spanId: sc.spanId,
    sampled: (sc.traceFlags & 1) === 1,
    setMesh: (m) => {
      if (!ended) span.setAttributes(computeMeshAttributes(m));
    },
    inject: (headers) => injectTraceContext(context, headers, inject),
    setBodySizes: (req, res) => {
      if (ended || !span.isRecording()) return;
      span.setAttributes({ [ATTR_HTTP_REQUEST_BODY_SIZE]: req, [ATTR_HTTP_RESPONSE_BODY_SIZE]: res });
    },
    end: (r) => {
      if (ended) return;
      ended = true;
      if (!span.isRecording()) {
        span.end();
        return;
      }
      if (r.statusCode !== undefined) span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, r.statusCode);
      if (r.reason) span.setAttribute(MESH_ATTR.proxyReason, r.reason);
      // Server spans: only 5xx is an error (a 4xx is the client's fault). Client spans: 4xx and 5xx.
      const errorStatus = r.statusCode !== undefined && r.statusCode >= (kind === 'server' ? 500 : 400);
      if (r.errorType || errorStatus) {
        span.setAttribute(ATTR_ERROR_TYPE, r.errorType ?? String(r.statusCode));
        span.setStatus({ code: SpanStatusCode.ERROR, ...(r.reason ? { message: r.reason } : {}) });
      }
      span.end();
    },
  };
}

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
  if (!opts.nodeName) throw new TelemetryError('NM_ERR_TELEMETRY_BAD_CONFIG', 'createTracer: nodeName is empty; pass the Node name so spans say which proxy made them');
  const ratio = validateRatio(opts.samplingRatio ?? d.samplingRatio);
  const maxQueueSize = positiveInt('maxQueueSize', opts.maxQueueSize ?? d.maxQueueSize);
  let exporter = opts.exporter;
  if (!exporter) {
    if (!opts.otlp) throw new TelemetryError('NM_ERR_TELEMETRY_BAD_CONFIG', 'createTracer: enabled without otlp.endpoint or an exporter: where should spans go?');
    exporter = new OTLPTraceExporter({
      url: opts.otlp.endpoint,
      headers: opts.otlp.headers ?? {},
      compression: (opts.otlp.compression ?? d.compression) as ExporterConfig['compression'],
      timeoutMillis: opts.otlp.timeoutMs ?? opts.exportTimeoutMs ?? d.exportTimeoutMs,
      // Bounded in-flight exports: past it the export fails fast (counted) instead of piling up sockets.
      concurrencyLimit: 4,
    });
  }
  let lastErrorReport = 0;
  const processor = new CountingBatchSpanProcessor(exporter, {
    maxQueueSize,
    maxExportBatchSize: positiveInt('maxExportBatchSize', opts.maxExportBatchSize ?? d.maxExportBatchSize),
    scheduledDelayMillis: positiveInt('scheduledDelayMs', opts.scheduledDelayMs ?? d.scheduledDelayMs),
    exportTimeoutMillis: positiveInt('exportTimeoutMs', opts.exportTimeoutMs ?? d.exportTimeoutMs),
    onExportError: (err, spans) => {
      const now = Date.now();
      if (!opts.onExportError || now - lastErrorReport < 10_000) return;
      lastErrorReport = now;
      opts.onExportError(`span export of ${spans} spans to ${opts.otlp?.endpoint ?? 'the exporter'} failed: ${err?.message ?? 'unknown error'} (is the collector reachable from this node?)`);
    },
  });
  const provider = new TracerProvider({
    resource: resourceFromAttributes({
      [ATTR_SERVICE_NAME]: opts.serviceName ?? 'nodemesh-proxy',
      [ATTR_SERVICE_NAMESPACE]: 'nodemesh',
      ...(opts.serviceVersion ? { [ATTR_SERVICE_VERSION]: opts.serviceVersion } : {}),
      // k8s.node.name is still in the incubating conventions; the literal keeps us off that entry point.
      'k8s.node.name': opts.nodeName,
    }),
    sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio) }),
    spanProcessors: [processor],
    spanLimits: { attributeValueLengthLimit: 1024, attributeCountLimit: 64, eventCountLimit: 32, linkCountLimit: 8 },
  });
  const tracer: Tracer = provider.getTracer('nodemesh-proxy', opts.serviceVersion);
  const node = { [MESH_ATTR.node]: opts.nodeName };

  const startHttp = (kind: 'server' | 'client', req: HttpSpanStart, parent: Context): HttpSpan => {
    const attributes: Attributes = { ...computeHttpAttributes(req), ...(req.mesh ? computeMeshAttributes(req.mesh) : {}), ...node };
    const span = tracer.startSpan(httpSpanName(attributes), { kind: kind === 'server' ? SpanKind.SERVER : SpanKind.CLIENT, attributes }, parent);
    return wrapHttpSpan(span, parent, kind, inject);
  };

  return {
    enabled: true,
    extract: (h) => extractTraceContext(h),
    inject: (ctx, h) => injectTraceContext(ctx, h, inject),
    startServerSpan: (req, parent) => startHttp('server', req, parent),
    startClientSpan: (req, parent) => startHttp('client', req, parent),
    startConnectionSpan: (c, parent = ROOT_CONTEXT) => {
      const attributes: Attributes = { ...computeConnectionAttributes(c), ...(c.mesh ? computeMeshAttributes(c.mesh) : {}), ...node };
      const name = c.mesh?.destinationService ? `tcp ${c.mesh.destinationService}` : 'tcp';
      const span = tracer.startSpan(name, { kind: c.direction === 'outbound' ? SpanKind.CLIENT : SpanKind.SERVER, attributes }, parent);
      const context = trace.setSpan(parent, span);
      const sc = span.spanContext();
      let ended = false;
      return {
        context,
        span,
        traceId: sc.traceId,
        sampled: (sc.traceFlags & 1) === 1,
        setMesh: (m) => {
          if (!ended) span.setAttributes(computeMeshAttributes(m));
        },
        inject: (h) => injectTraceContext(context, h, inject),
        end: (r) => {
          if (ended) return;
          ended = true;
          span.setAttributes({ [MESH_ATTR.tcpBytesSent]: r.bytesSent, [MESH_ATTR.tcpBytesReceived]: r.bytesReceived });
          if (r.reason) span.setAttribute(MESH_ATTR.proxyReason, r.reason);
          if (r.errorType) {
            span.setAttribute(ATTR_ERROR_TYPE, r.errorType);
            span.setStatus({ code: SpanStatusCode.ERROR, ...(r.reason ? { message: r.reason } : {}) });
          }
          span.end();
        },
      };
    },
    stats: () => processor.stats(),
    forceFlush: () => provider.forceFlush(),
    shutdown: () => provider.shutdown(),
  };
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
