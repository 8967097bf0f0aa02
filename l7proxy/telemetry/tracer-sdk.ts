/**
 * The recording half of the proxy's tracer (tracer.ts `createTracer` with tracing enabled): the OpenTelemetry SDK
 * provider, sampler, batch processor and OTLP exporter. Loaded on first use only, so a proxy with tracing off never
 * loads the SDK, resources, semantic conventions or the exporter (about 15-20 MB of RSS per worker process).
 */
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Attributes, type Context, type Span, type Tracer } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { ParentBasedSampler, TraceIdRatioBasedSampler, TracerProvider } from '@opentelemetry/sdk-trace';
import { ATTR_ERROR_TYPE, ATTR_HTTP_RESPONSE_STATUS_CODE, ATTR_SERVICE_NAME, ATTR_SERVICE_NAMESPACE, ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions';
import { computeConnectionAttributes, computeHttpAttributes, computeMeshAttributes, MESH_ATTR } from './attributes.ts';
import { DEFAULT_TRACING_SETTINGS, type InjectFormat } from './config.ts';
import { CountingBatchSpanProcessor } from './counting-batch-processor.ts';
import { TelemetryError } from './errors.ts';
import { extractTraceContext, injectTraceContext } from './propagation.ts';
import type { CreateTracerOptions, HttpSpan, HttpSpanStart, MeshTracer } from './tracer.ts';

// Still in the incubating HTTP conventions; literals keep us off that entry point (as k8s.node.name below).
const ATTR_HTTP_REQUEST_BODY_SIZE = 'http.request.body.size';
const ATTR_HTTP_RESPONSE_BODY_SIZE = 'http.response.body.size';

/** The OTLP exporter's options (its compression enum is not exported from the exporter package itself). */
type ExporterConfig = NonNullable<ConstructorParameters<typeof OTLPTraceExporter>[0]>;

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

/** createTracer for `enabled`: checks the options, then builds the provider (see createTracer). */
export function createRecordingTracer(opts: CreateTracerOptions, inject: InjectFormat[]): MeshTracer {
  const d = DEFAULT_TRACING_SETTINGS;
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

