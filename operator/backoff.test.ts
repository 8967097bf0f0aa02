import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ExponentialBackoff, retryOnConflict, withTimeout } from './backoff.ts';

test('without jitter the delays double from 800 ms and stop at 30 s', () => {
  const b = new ExponentialBackoff({ random: () => 0 });
  const delays = Array.from({ length: 9 }, (_, i) => b.next(1000 + i));
  assert.deepEqual(delays, [800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000]);
});

test('jitter adds up to one delay more, never past the cap', () => {
  const b = new ExponentialBackoff({ random: () => 0.999 });
  assert.equal(b.next(0), 1599);
  assert.equal(b.next(1), 3198);
  for (let i = 0; i < 10; i++) assert.ok(b.next(2 + i) <= 30_000);
  const spread = new Set<number>();
  for (let i = 0; i < 50; i++) spread.add(new ExponentialBackoff().next(0));
  assert.ok(spread.size > 10, 'random jitter spreads first retries');
  for (const d of spread) assert.ok(d >= 800 && d < 1600, `first delay ${d} within [800, 1600)`);
});

test('two minutes without failure start over at 800 ms', () => {
  const b = new ExponentialBackoff({ random: () => 0 });
  b.next(0);
  b.next(1000);
  assert.equal(b.next(2000), 3200);
  assert.equal(b.next(2000 + 120_000), 6400, 'exactly 2 min later: still the same series');
  assert.equal(b.next(2000 + 240_001), 800, 'more than 2 min after the last failure: reset');
  b.reset();
  assert.equal(b.step, 0);
});

test('retryOnConflict re-runs the attempt on 409 only, up to the limit', async () => {
  let calls = 0;
  const v = await retryOnConflict(async (i) => {
    calls++;
    if (i < 2) throw Object.assign(new Error('conflict'), { code: 409 });
    return 'ok';
  }, { sleep: async () => {} });
  assert.equal(v, 'ok');
  assert.equal(calls, 3);
  calls = 0;
  await assert.rejects(retryOnConflict(async () => {
    calls++;
    throw Object.assign(new Error('conflict'), { code: 409 });
  }, { sleep: async () => {} }), /conflict/);
  assert.equal(calls, 5);
  calls = 0;
  await assert.rejects(retryOnConflict(async () => {
    calls++;
    throw Object.assign(new Error('forbidden'), { code: 403 });
  }, { sleep: async () => {} }), /forbidden/);
  assert.equal(calls, 1, 'other errors are not retried here');
});

test('withTimeout names what timed out', async () => {
  await assert.rejects(withTimeout(new Promise(() => {}), 10, 'list pods'), /list pods: no answer from the API server within 10 ms/);
  assert.equal(await withTimeout(Promise.resolve(3), 10, 'x'), 3);
});
