/** Tracing settings from flat keys, and header propagation edge cases. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ROOT_CONTEXT, trace } from '@opentelemetry/api';
import { computeTracingSettings, DEFAULT_TRACING_SETTINGS } from './config.ts';
import { extractTraceContext, injectTraceContext, parseB3Single, type HeaderBag } from './propagation.ts';

describe('computeTracingSettings', () => {
  it('defaults to disabled at 1% sampling', () => {
    const { settings, issues } = computeTracingSettings({});
    assert.deepEqual(issues, []);
    assert.deepEqual(settings, DEFAULT_TRACING_SETTINGS);
  });

  it('an endpoint enables tracing; headers are URL-decoded', () => {
    const { settings, issues } = computeTracingSettings({
      'tracing.otlp.endpoint': 'http://otel-collector.observability:4318/v1/traces',
      'tracing.otlp.headers': 'x-api-key=abc%3D%3D, X-Tenant=shop',
      'tracing.samplingRatio': '0.25',
      'tracing.inject': 'tracecontext,b3multi',
    });
    assert.deepEqual(issues, []);
    assert.equal(settings.enabled, true);
    assert.deepEqual(settings.headers, { 'x-api-key': 'abc==', 'x-tenant': 'shop' });
    assert.equal(settings.samplingRatio, 0.25);
    assert.deepEqual(settings.inject, ['tracecontext', 'b3multi']);
  });

  it('reports each bad key and keeps its default', () => {
    const { settings, issues } = computeTracingSettings({
      'tracing.otlp.endpoint': 'collector:4318',
      'tracing.samplingRatio': '5',
      'tracing.maxQueueSize': '-1',
      'tracing.otlp.headers': 'novalue',
      'tracing.sampling': '1',
    });
    assert.equal(settings.enabled, false);
    assert.equal(settings.samplingRatio, 0.01);
    assert.deepEqual(issues.map((i) => i.key).sort(), ['tracing.maxQueueSize', 'tracing.otlp.endpoint', 'tracing.otlp.headers', 'tracing.sampling', 'tracing.samplingRatio']);
    assert.match(issues.find((i) => i.key === 'tracing.otlp.endpoint')!.message, /not an http\(s\) URL/);
  });
});

describe('propagation', () => {
  it('ignores a malformed traceparent and starts fresh', () => {
    assert.equal(trace.getSpanContext(extractTraceContext({ traceparent: '00-zz-00f067aa0ba902b7-01' })), undefined);
    assert.equal(trace.getSpanContext(extractTraceContext({ traceparent: '00-00000000000000000000000000000000-00f067aa0ba902b7-01' })), undefined);
  });

  it('prefers W3C over B3 when both are present', () => {
    const sc = trace.getSpanContext(extractTraceContext({ traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', b3: '80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1' }));
    assert.equal(sc?.traceId, '4bf92f3577b34da6a3ce929d0e0e4736');
  });

  it('parses B3 single variants', () => {
    assert.equal(parseB3Single('0'), undefined, 'a sampling-only header has no context');
    assert.equal(parseB3Single('80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1')?.traceFlags, 0, 'deferred = not sampled');
    assert.equal(parseB3Single('80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d-05e3ac9a4f6e3b90')?.traceFlags, 1);
    assert.equal(parseB3Single('80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-x'), undefined);
  });

  it('replaces what the client sent, in any case, with our context', () => {
    const ctx = trace.setSpanContext(ROOT_CONTEXT, { traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: 'e457b5a2e4d86bd1', traceFlags: 1, isRemote: false });
    const h: HeaderBag = { Traceparent: 'old', 'X-B3-SpanId': 'old', b3: 'old' };
    injectTraceContext(ctx, h, ['tracecontext', 'b3', 'b3multi']);
    assert.deepEqual(h, {
      traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-e457b5a2e4d86bd1-01',
      b3: '4bf92f3577b34da6a3ce929d0e0e4736-e457b5a2e4d86bd1-1',
      'x-b3-traceid': '4bf92f3577b34da6a3ce929d0e0e4736',
      'x-b3-spanid': 'e457b5a2e4d86bd1',
      'x-b3-sampled': '1',
    });
  });

  it('joins repeated tracestate headers', () => {
    const sc = trace.getSpanContext(extractTraceContext({ traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', tracestate: ['a=1', 'b=2'] }));
    assert.equal(sc?.traceState?.serialize(), 'a=1,b=2');
  });
});
