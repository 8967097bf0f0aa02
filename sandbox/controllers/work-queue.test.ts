import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { computeBackoffMs, WorkQueue } from './work-queue.ts';

describe('computeBackoffMs', () => {
  it('doubles from the base, stops at the ceiling, and jitters within bounds', () => {
    const opts = { baseDelayMs: 10, maxDelayMs: 1000, jitter: 0.2 };
    const mid = (): number => 0.5;
    assert.deepEqual([0, 1, 2, 3].map((n) => computeBackoffMs(n, opts, mid)), [10, 20, 40, 80]);
    assert.equal(computeBackoffMs(20, opts, mid), 1000);
    assert.equal(computeBackoffMs(0, opts, () => 0), 8);
    assert.equal(computeBackoffMs(0, opts, () => 1), 12);
  });
});

describe('WorkQueue', () => {
  it('deduplicates waiting keys and keeps order', async () => {
    const q = new WorkQueue();
    q.add('a');
    q.add('b');
    q.add('a');
    assert.equal(q.len(), 2);
    assert.equal(await q.get(), 'a');
    assert.equal(await q.get(), 'b');
    q.shutDown();
  });

  it('never hands a key to two workers; a key added while processing comes back after done', async () => {
    const q = new WorkQueue();
    q.add('a');
    const key = await q.get();
    q.add('a');
    assert.equal(q.len(), 0, 'a key being processed is not queued again yet');
    q.done(key as string);
    assert.equal(q.len(), 1);
    assert.equal(await q.get(), 'a');
    q.shutDown();
  });

  it('wakes a waiting worker on add and ends waiters on shutdown', async () => {
    const q = new WorkQueue();
    const waiting = q.get();
    q.add('x');
    assert.equal(await waiting, 'x');
    const ended = q.get();
    q.shutDown();
    assert.equal(await ended, undefined);
  });

  it('retries with growing delay per key and forgets on success', async () => {
    const q = new WorkQueue({ backoff: { baseDelayMs: 5, maxDelayMs: 100, jitter: 0 } });
    assert.equal(q.addRateLimited('k'), 5);
    assert.equal(await q.get(), 'k');
    q.done('k');
    assert.equal(q.addRateLimited('k'), 10);
    assert.equal(q.numRequeues('k'), 2);
    q.forget('k');
    assert.equal(q.numRequeues('k'), 0);
    assert.equal(await q.get(), 'k');
    q.shutDown();
  });

  it('keeps the earliest of several delayed adds', async () => {
    const q = new WorkQueue();
    q.addAfter('k', 10_000);
    q.addAfter('k', 5);
    const start = Date.now();
    assert.equal(await q.get(), 'k');
    assert.ok(Date.now() - start < 5_000);
    q.shutDown();
  });
});
