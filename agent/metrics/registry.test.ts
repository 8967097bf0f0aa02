/** The registry: exact text exposition, escaping, histogram layout, the cardinality guard. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Registry, escapeLabelValue, formatSampleValue } from './registry.ts';
import { parseExposition } from './testing/parse-exposition.ts';

describe('Registry exposition', () => {
  it('renders counters, gauges and histograms exactly', () => {
    const r = new Registry();
    const c = r.counter({ name: 'demo_requests_total', help: 'Requests.\nSecond line with \\ backslash.', labelNames: ['code', 'route'] });
    const g = r.gauge({ name: 'demo_version', help: 'Version.' });
    const h = r.histogram({ name: 'demo_seconds', help: 'Latency.', labelNames: ['route'], buckets: [0.1, 1] });
    c.inc({ code: 200, route: 'shop/a' });
    c.inc({ code: 200, route: 'shop/a' }, 2);
    c.inc({ code: 503, route: 'we"ird\\route\nx' });
    c.inc({ code: 200, route: 'shop/a' }, -5); // ignored
    g.set(undefined, 7);
    h.observe({ route: 'shop/a' }, 0.05);
    h.observe({ route: 'shop/a' }, 0.1); // upper bounds are inclusive
    h.observe({ route: 'shop/a' }, 5);
    const text = r.render();
    assert.equal(text, [
      '# HELP nodemesh_metrics_series_overflow_total Observations folded into the __overflow__ series because a metric reached its label-set limit.',
      '# TYPE nodemesh_metrics_series_overflow_total counter',
      '# HELP demo_requests_total Requests.\\nSecond line with \\\\ backslash.',
      '# TYPE demo_requests_total counter',
      'demo_requests_total{code="200",route="shop/a"} 3',
      'demo_requests_total{code="503",route="we\\"ird\\\\route\\nx"} 1',
      '# HELP demo_version Version.',
      '# TYPE demo_version gauge',
      'demo_version 7',
      '# HELP demo_seconds Latency.',
      '# TYPE demo_seconds histogram',
      'demo_seconds_bucket{route="shop/a",le="0.1"} 2',
      'demo_seconds_bucket{route="shop/a",le="1"} 2',
      'demo_seconds_bucket{route="shop/a",le="+Inf"} 3',
      'demo_seconds_sum{route="shop/a"} 5.15',
      'demo_seconds_count{route="shop/a"} 3',
      '',
    ].join('\n'));
    const parsed = parseExposition(text);
    assert.equal(parsed.samples.find((s) => s.labels.code === '503')?.labels.route, 'we"ird\\route\nx', 'escaping round-trips');
  });

  it('label-less metrics expose zero before the first observation', () => {
    const r = new Registry();
    r.counter({ name: 'x_total', help: 'x' });
    r.histogram({ name: 'y_seconds', help: 'y', buckets: [1] });
    const exp = parseExposition(r.render());
    assert.deepEqual(exp.samples.map((s) => `${s.name} ${s.value}`), ['x_total 0', 'y_seconds_bucket 0', 'y_seconds_bucket 0', 'y_seconds_sum 0', 'y_seconds_count 0']);
  });

  it('formats special values', () => {
    assert.deepEqual([Infinity, -Infinity, NaN, 1e21, 0.000001].map(formatSampleValue), ['+Inf', '-Inf', 'NaN', '1e+21', '0.000001']);
    assert.equal(escapeLabelValue('a\\b"c\nd'), 'a\\\\b\\"c\\nd');
  });
});

describe('cardinality guard', () => {
  it('refuses label names that explode', () => {
    const r = new Registry();
    for (const l of ['pod_ip', 'path', 'source_ip', 'destination_address', 'request_path', 'url', 'user_agent', 'pod']) {
      assert.throws(() => r.counter({ name: `t_${l}_total`, help: 'h', labelNames: [l] }), { code: 'NM_ERR_METRICS_FORBIDDEN_LABEL', message: new RegExp(`label "${l}"`) });
    }
    assert.throws(() => r.histogram({ name: 'h_seconds', help: 'h', labelNames: ['le'], buckets: [1] }), { code: 'NM_ERR_METRICS_BAD_NAME' });
    assert.throws(() => r.counter({ name: 'bad-name', help: 'h' }), { code: 'NM_ERR_METRICS_BAD_NAME' });
    r.counter({ name: 'dup_total', help: 'h' });
    assert.throws(() => r.counter({ name: 'dup_total', help: 'h' }), { code: 'NM_ERR_METRICS_DUPLICATE' });
    assert.throws(() => r.histogram({ name: 'b_seconds', help: 'h', buckets: [1, 1] }), { code: 'NM_ERR_METRICS_BAD_BUCKETS' });
  });

  it('folds label sets past the limit into one overflow series and counts them; totals stay right', () => {
    const r = new Registry();
    const c = r.counter({ name: 'req_total', help: 'h', labelNames: ['route'], maxSeries: 3 });
    for (let i = 0; i < 10; i++) c.inc({ route: `r${i}` });
    c.inc({ route: 'r0' });
    assert.equal(c.seriesCount(), 4);
    const exp = parseExposition(r.render());
    const samples = exp.samples.filter((s) => s.name === 'req_total');
    assert.deepEqual(samples.map((s) => [s.labels.route, s.value]), [['r0', 2], ['r1', 1], ['r2', 1], ['__overflow__', 7]]);
    assert.equal(exp.samples.find((s) => s.name === 'nodemesh_metrics_series_overflow_total')?.value, 7);
    assert.deepEqual(exp.samples.find((s) => s.name === 'nodemesh_metrics_series_overflow_total')?.labels, { metric: 'req_total' });
  });

  it('runs collectors before rendering and survives a failing one', () => {
    const r = new Registry();
    const g = r.gauge({ name: 'pulled', help: 'h' });
    let n = 0;
    r.addCollector(() => g.set(undefined, ++n));
    const errors: unknown[] = [];
    r.addCollector(() => { throw new Error('map read failed'); });
    assert.match(r.render((e) => errors.push(e)), /^pulled 1$/m);
    assert.match(r.render(), /^pulled 2$/m);
    assert.equal(errors.length, 1);
  });
});
