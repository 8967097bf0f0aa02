import { test } from 'node:test';
import assert from 'node:assert/strict';
import { computeDrainSettings, planDrainStep, type DrainCensus } from './drain.ts';

const none: DrainCensus = { http1: 0, http2: 0, http2WithoutGoaway: 0, tunnels: 0, pending: 0 };
const s = computeDrainSettings(10_000);

test('settings: idle HTTP/1 connections wait 2 s, or a quarter of a short drain; bad values are refused', () => {
  assert.deepEqual(computeDrainSettings(10_000), { timeoutMs: 10_000, idleCloseAfterMs: 2000 });
  assert.deepEqual(computeDrainSettings(400), { timeoutMs: 400, idleCloseAfterMs: 100 });
  assert.deepEqual(computeDrainSettings(0), { timeoutMs: 0, idleCloseAfterMs: 0 });
  assert.equal(computeDrainSettings().timeoutMs, 15_000);
  assert.throws(() => computeDrainSettings(-1), /drain timeout -1 ms/);
  assert.throws(() => computeDrainSettings(Number.NaN), /finite/);
});

test('nothing open: done at once, whatever the time', () => {
  assert.deepEqual(planDrainStep(none, 0, s), { goawayHttp2: false, closeIdleHttp1: false, cutAll: false, done: true });
  assert.equal(planDrainStep(none, 60_000, s).done, true);
});

test('HTTP/2 sessions get GOAWAY from the first step, only those without one', () => {
  assert.equal(planDrainStep({ ...none, http2: 2, http2WithoutGoaway: 2 }, 0, s).goawayHttp2, true);
  assert.equal(planDrainStep({ ...none, http2: 2, http2WithoutGoaway: 0 }, 5, s).goawayHttp2, false);
});

test('idle HTTP/1 connections stay open until the idle grace (clients may be sending), then close', () => {
  const c = { ...none, http1: 3 };
  assert.equal(planDrainStep(c, 0, s).closeIdleHttp1, false);
  assert.equal(planDrainStep(c, 1999, s).closeIdleHttp1, false);
  assert.equal(planDrainStep(c, 2000, s).closeIdleHttp1, true);
  assert.equal(planDrainStep(c, 2000, s).cutAll, false);
});

test('tunnels and pending connections are left alone until the deadline, then everything is cut', () => {
  const c = { ...none, tunnels: 1, pending: 1, http1: 1 };
  const mid = planDrainStep(c, 9_999, s);
  assert.equal(mid.cutAll, false);
  assert.equal(mid.done, false);
  assert.deepEqual(planDrainStep(c, 10_000, s), { goawayHttp2: false, closeIdleHttp1: false, cutAll: true, done: false });
  assert.equal(planDrainStep({ ...none, tunnels: 1 }, 0, computeDrainSettings(0)).cutAll, true);
});
