import { test } from 'node:test';
import assert from 'node:assert/strict';
import { computeRecoveryS, computeWindowGood, type OverloadWindow } from './overload.ts';

const win = (phase: string, startS: number, extra: Partial<OverloadWindow> = {}): OverloadWindow => ({
  phase, startS, scheduled: 100, sent: 100, notSent: 0, byStatus: { 200: 100 }, timeouts: 0, connectErrors: 0, resets: 0, latencyUs: { p50: 1000, p99: 4000, max: 5000 }, ...extra,
});

test('computeWindowGood: all scheduled answered 2xx within the p99 bound; anything else is not', () => {
  assert.equal(computeWindowGood(win('recovery', 0), 5000), true);
  assert.equal(computeWindowGood(win('recovery', 0, { latencyUs: { p50: 1000, p99: 6000, max: 9000 } }), 5000), false, 'p99 over the bound');
  assert.equal(computeWindowGood(win('recovery', 0, { byStatus: { 200: 99, 503: 1 } }), 5000), false, 'a 503');
  assert.equal(computeWindowGood(win('recovery', 0, { byStatus: { 200: 99 }, timeouts: 1 }), 5000), false, 'a timeout');
  assert.equal(computeWindowGood(win('recovery', 0, { byStatus: { 200: 99 } }), 5000), false, 'one still unanswered');
  assert.equal(computeWindowGood(win('recovery', 0, { notSent: 1 }), 5000), false, 'the client could not send one');
  assert.equal(computeWindowGood(win('recovery', 0, { scheduled: 0, sent: 0, byStatus: {} }), 5000), false, 'an empty window proves nothing');
});

test('computeRecoveryS: first recovery second from which every later window is good, at least three of them', () => {
  const bad = { timeouts: 5, byStatus: { 200: 95 } };
  const ws = [win('baseline', 0), win('overload', 1, bad), win('recovery', 2, bad), win('recovery', 3), win('recovery', 4, bad), win('recovery', 5), win('recovery', 6), win('recovery', 7)];
  assert.equal(computeRecoveryS(ws, 5000), 3, 'the good second at 3 does not count: a bad one follows');
  assert.equal(computeRecoveryS([win('recovery', 0), win('recovery', 1), win('recovery', 2)], 5000), 0);
  assert.equal(computeRecoveryS([win('recovery', 0, bad), win('recovery', 1), win('recovery', 2)], 5000), undefined, 'two good windows are not enough');
});
