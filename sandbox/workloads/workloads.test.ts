import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { addToSummary, emptySummary, formatResult, formatSummary, sendOnce } from './client.ts';
import { parseDurationMs } from './duration.ts';
import { planEchoResponse, startEcho, versionFromEnv } from './echo.ts';

test('durations', () => {
  assert.deepEqual(['200ms', '1.5s', '2m', '250', 'x', undefined].map((t) => parseDurationMs(t)), [200, 1500, 120_000, 250, undefined, undefined]);
});

test('echo plans status and delay from query, then headers, then the failure fraction', () => {
  const o = { failFraction: 0.5, failStatus: 503, delayMs: 0 };
  assert.deepEqual(planEchoResponse(new URL('http://e/?status=418&delay=20ms'), {}, o, 0.9), { status: 418, delayMs: 20 });
  assert.deepEqual(planEchoResponse(new URL('http://e/'), { 'x-echo-status': '500', 'x-echo-delay': '1s' }, o, 0.9), { status: 500, delayMs: 1000 });
  assert.deepEqual(planEchoResponse(new URL('http://e/'), {}, o, 0.1), { status: 503, delayMs: 0 });
  assert.deepEqual(planEchoResponse(new URL('http://e/?status=abc'), {}, o, 0.9), { status: 200, delayMs: 0 });
  assert.equal(versionFromEnv({ POD_LABELS: '{"version":"v3"}' }), 'v3');
  assert.equal(versionFromEnv({ VERSION: 'v9', POD_LABELS: '{"version":"v3"}' }), 'v9');
});

test('echo answers with who it is and what it saw; the client reports it; raw bytes are logged', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'nm-echo-test-'));
  const lines: string[] = [];
  const echo = await startEcho({ port: 0, host: '127.0.0.1', pod: 'echo-1', namespace: 'default', node: 'node-2', version: 'v1', failFraction: 0, failStatus: 503, delayMs: 0, rawLog: join(dir, 'raw'), log: (l) => lines.push(l) });
  try {
    const r = await sendOnce(`http://127.0.0.1:${echo.port}/a/b?status=202`, 2000);
    assert.equal(r.status, 202);
    assert.equal(r.pod, 'echo-1');
    assert.equal(r.node, 'node-2');
    const res = await fetch(`http://127.0.0.1:${echo.port}/x`, { headers: { 'x-test': '1' } });
    const body = (await res.json()) as Record<string, unknown>;
    assert.equal(body.version, 'v1');
    assert.equal(body.method, 'GET');
    assert.equal(body.path, '/x');
    assert.match(String(body.client), /^127\.0\.0\.1:\d+$/);
    assert.equal((body.headers as Record<string, string>)['x-test'], '1');
    const slow = await sendOnce(`http://127.0.0.1:${echo.port}/?delay=300ms`, 100);
    assert.equal(slow.error, 'TIMEOUT');
    assert.ok(lines.some((l) => /^connection from 127\.0\.0\.1:\d+$/.test(l)));
    await new Promise((r) => setTimeout(r, 50));
    assert.match(await readFile(join(dir, 'raw'), 'utf8'), /GET \/a\/b\?status=202 HTTP\/1\.1\r\n/);
    let s = addToSummary(emptySummary(), r);
    s = addToSummary(s, slow);
    assert.equal(formatSummary(s), 'summary: 2 requests, 1 ok, 1 failed | status: 202=1 error:TIMEOUT=1 | pods: echo-1=1 | nodes: node-2=1');
    assert.match(formatResult(r), /^202 pod=echo-1 node=node-2 version=v1 \d+ms http:/);
  } finally {
    await echo.close();
    await rm(dir, { recursive: true, force: true });
  }
});
