// Renewal and retry timing as pure functions.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { computeRenewAt, computeRetryDelay, DEFAULT_RETRY } from './plan-renewal.ts';

describe('computeRenewAt', () => {
  it('renews at half of the remaining life, ±10 %', () => {
    assert.equal(computeRenewAt(0, 0, 1000, 0.5), 500);
    assert.equal(computeRenewAt(0, 0, 1000, 0), 450);
    assert.ok(Math.abs(computeRenewAt(0, 0, 1000, 0.999999) - 550) < 0.01);
  });
  it('counts from receipt, not from a backdated notBefore', () => {
    assert.equal(computeRenewAt(100, 40, 1100, 0.5), 600);
  });
});

describe('computeRetryDelay', () => {
  it('grows exponentially up to the cap', () => {
    const d = [1, 2, 3, 4, 5, 6, 7].map((n) => computeRetryDelay(n, 0, undefined, 0.5));
    assert.deepEqual(d, [1000, 2000, 4000, 8000, 16000, 20000, 20000]);
  });
  it('never sleeps past half the time left on a held certificate', () => {
    assert.equal(computeRetryDelay(10, 0, 6000, 0.5), 3000);
  });
  it('keeps a floor right before expiry', () => {
    assert.equal(computeRetryDelay(10, 0, 100, 0.5), DEFAULT_RETRY.floorMs);
  });
});
