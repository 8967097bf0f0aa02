import { test } from 'node:test';
import assert from 'node:assert/strict';
import { computeCv, computePairedRatios, computePercentile, computeShuffled, computeSpread, createRandom } from './stats.ts';

test('the same seed gives the same shuffle; a shuffle is a permutation', () => {
  const items = ['a', 'b', 'c', 'd', 'e', 'f'];
  const one = computeShuffled(items, createRandom(42));
  assert.deepEqual(one, computeShuffled(items, createRandom(42)));
  assert.deepEqual([...one].sort(), items);
  assert.notDeepEqual(computeShuffled(items, createRandom(42)), computeShuffled(items, createRandom(7)));
});

test('percentiles are nearest-rank on sorted values', () => {
  const v = Float64Array.from({ length: 1000 }, (_, i) => i + 1);
  assert.equal(computePercentile(v, 50), 500);
  assert.equal(computePercentile(v, 99), 990);
  assert.equal(computePercentile(v, 99.9), 999);
  assert.equal(computePercentile(v, 100), 1000);
  assert.ok(Number.isNaN(computePercentile([], 50)));
});

test('spread, CV and paired ratios', () => {
  assert.deepEqual(computeSpread([3, 1, 2, NaN]), { median: 2, min: 1, max: 3, n: 3 });
  assert.deepEqual(computeSpread([4, 1, 2, 3]), { median: 2.5, min: 1, max: 4, n: 4 });
  assert.ok(Math.abs(computeCv([10, 10, 10])) < 1e-12);
  const r = computePairedRatios(new Map([[0, 50], [1, 60], [2, 70]]), new Map([[0, 100], [1, 100], [3, 100]]));
  assert.deepEqual(r, { median: 0.55, min: 0.5, max: 0.6, n: 2 });
});
