import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { runWorkers } from './controller-runner.ts';
import { ControllerError, ControllerErrorCode } from './errors.ts';
import { patchBody } from './kube-api.ts';
import { WorkQueue } from './work-queue.ts';

describe('runWorkers', () => {
  it('retries failures with backoff, waits out stale caches, honours requeueAfter, and stops', async () => {
    const queue = new WorkQueue({ backoff: { baseDelayMs: 5, maxDelayMs: 20, jitter: 0 } });
    const calls: string[] = [];
    const logs: string[] = [];
    let flaky = 2;
    let stale = 1;
    let again = 1;
    const done = new Set<string>();
    const running = runWorkers({
      queue,
      workers: 2,
      log: (l) => logs.push(l),
      reconciler: {
        name: 'test',
        async sync(key) {
          calls.push(key);
          if (key === 'flaky' && flaky-- > 0) throw Object.assign(new Error('boom'), { code: 500 });
          if (key === 'stale' && stale-- > 0) throw new ControllerError(ControllerErrorCode.staleCache, 'not yet');
          if (key === 'again' && again-- > 0) return { requeueAfterMs: 5 };
          done.add(key);
          return undefined;
        },
      },
    });
    for (const k of ['flaky', 'stale', 'again']) queue.add(k);
    const deadline = Date.now() + 5000;
    while (done.size < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    queue.shutDown();
    await running;
    assert.deepEqual([...done].sort(), ['again', 'flaky', 'stale']);
    assert.equal(calls.filter((k) => k === 'flaky').length, 3);
    assert.equal(calls.filter((k) => k === 'stale').length, 2);
    assert.equal(calls.filter((k) => k === 'again').length, 2);
    assert.equal(logs.length, 2, 'only real failures are logged');
    assert.match(logs[0] ?? '', /^test flaky: sync failed, retry 1 in 5 ms: HTTP 500/);
    assert.equal(queue.numRequeues('flaky'), 0, 'forgotten after success');
  });
});

describe('patchBody', () => {
  it('turns Dates into API timestamps, drops undefined, and adds the resourceVersion precondition', () => {
    const body = patchBody({ status: { t: new Date(Date.UTC(2026, 0, 1)), gone: undefined, keep: null } }, '42');
    assert.deepEqual(body, { status: { t: '2026-01-01T00:00:00Z', keep: null }, metadata: { resourceVersion: '42' } });
  });
});
