import assert from 'node:assert/strict';
import test from 'node:test';
import type { ProxyConfig } from './config.ts';
import { compileSnapshot, reconcileBackendStates, type BackendState } from './snapshot.ts';

function config(backends: ProxyConfig['backends']): ProxyConfig {
  return { version: 'v', services: [{ name: 'shop/a', addresses: [{ ip: '10.96.0.1', port: 80 }], protocol: 'http', defaultBackend: 'shop/a:80' }], backends };
}

const budgetMade = (s: BackendState | undefined): boolean => (s as { budgetIfMade?: unknown } | undefined)?.budgetIfMade !== undefined;

test('a backend gets its retry budget on first use, not at config time (10,000 idle services carry none)', () => {
  const cfg = config([{ name: 'shop/a:80', endpoints: [{ ip: '10.0.0.1', port: 8080, ready: true }] }]);
  const states = reconcileBackendStates(new Map(), compileSnapshot(cfg));
  const s = states.get('shop/a:80')!;
  assert.equal(budgetMade(s), false);
  // The default budget (20 %, 10 retries/s over 10 s) allows the floor of 100 retries with no requests at all.
  let allowed = 0;
  for (let i = 0; i < 150; i++) if (s.budget.tryRetry(1000)) allowed++;
  assert.equal(allowed, 100);
  assert.equal(budgetMade(s), true);
});

test('the budget survives a config push with the same policy and restarts with a changed one', () => {
  const tp = { retryBudget: { percent: 0, minRetriesPerSecond: 1 } };
  const first = config([{ name: 'shop/a:80', endpoints: [{ ip: '10.0.0.1', port: 8080, ready: true }], trafficPolicy: tp }]);
  const s1 = reconcileBackendStates(new Map(), compileSnapshot(first));
  const state = s1.get('shop/a:80')!;
  let allowed = 0;
  for (let i = 0; i < 20; i++) if (state.budget.tryRetry(1000)) allowed++;
  assert.equal(allowed, 10, 'floor of 1/s over the 10 s window');
  // Same policy, endpoints changed: the spent budget is kept (no fresh retries).
  const same = config([{ name: 'shop/a:80', endpoints: [{ ip: '10.0.0.2', port: 8080, ready: true }], trafficPolicy: { retryBudget: { percent: 0, minRetriesPerSecond: 1 } } }]);
  const s2 = reconcileBackendStates(s1, compileSnapshot(same));
  assert.equal(s2.get('shop/a:80'), state, 'the state object is kept (in-flight requests hold it)');
  assert.equal(state.budget.tryRetry(1000), false);
  // A new policy: a fresh budget with the new numbers.
  const changed = config([{ name: 'shop/a:80', endpoints: [{ ip: '10.0.0.2', port: 8080, ready: true }], trafficPolicy: { retryBudget: { percent: 0, minRetriesPerSecond: 2 } } }]);
  const s3 = reconcileBackendStates(s2, compileSnapshot(changed));
  allowed = 0;
  for (let i = 0; i < 30; i++) if (s3.get('shop/a:80')!.budget.tryRetry(1000)) allowed++;
  assert.equal(allowed, 20);
});
