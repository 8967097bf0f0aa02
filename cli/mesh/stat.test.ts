/** `stat` pure parts: the text-format reader, the histogram quantile, and rows from two scrapes. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { computeHistogramQuantile, parsePrometheusText } from './prom-text.ts';
import { computeStatView, metricsUrlOf } from './stat.ts';

const scrape = (n200: number, n500: number): string => [
  '# HELP nodemesh_requests_total x',
  `nodemesh_requests_total{reporter="source",destination_service="echo",destination_namespace="demo",route="demo/echo",code="200"} ${n200}`,
  `nodemesh_requests_total{reporter="source",destination_service="echo",destination_namespace="demo",route="demo/echo",code="500"} ${n500}`,
  `nodemesh_requests_total{reporter="destination",destination_service="echo-v1",destination_namespace="demo",route="",code="200"} ${n200}`,
  'nodemesh_requests_total{reporter="source",destination_service="db",destination_namespace="other",route="",code="0"} 1',
].join('\n');

describe('kubectl mesh stat', () => {
  it('parses labels with escapes, +Inf and comments', () => {
    const s = parsePrometheusText('# c\nm{a="x\\"y",le="+Inf"} 3\nn 1.5\n');
    assert.deepEqual(s, [{ name: 'm', labels: { a: 'x"y', le: '+Inf' }, value: 3 }, { name: 'n', labels: {}, value: 1.5 }]);
  });
  it('quantiles interpolate inside the bucket, as histogram_quantile does', () => {
    const b = [{ le: 0.001, count: 10 }, { le: 0.005, count: 60 }, { le: Infinity, count: 100 }];
    assert.ok(Math.abs(computeHistogramQuantile(0.5, b)! - 0.0042) < 1e-12);
    assert.equal(computeHistogramQuantile(0.99, b), 0.005, 'above the last finite bound: that bound');
    assert.equal(computeHistogramQuantile(0.5, []), undefined);
  });
  it('rows: source side only, success excludes 5xx and broken connections, rps over the window', () => {
    const v = computeStatView({ before: [parsePrometheusText(scrape(90, 5))], after: [parsePrometheusText(scrape(100, 6))], windowSeconds: 2, agents: [{ node: 'a' }] });
    assert.deepEqual(v.rows.map((r) => [r.namespace, r.service, r.route, r.requests, r.successRate, r.rps]), [
      ['demo', 'echo', 'demo/echo', 106, 100 / 106, 5.5],
      ['other', 'db', '', 1, 0, 0],
    ]);
    const only = computeStatView({ after: [parsePrometheusText(scrape(1, 0))], namespace: 'demo', service: 'echo', agents: [] });
    assert.equal(only.rows.length, 1);
    assert.equal(only.rows[0]!.rps, undefined);
  });
  it('the metrics URL sits beside the status URL', () => {
    assert.equal(metricsUrlOf('http://127.0.0.1:16444/nodes/node-1/statusz'), 'http://127.0.0.1:16444/nodes/node-1/metrics');
  });
});
