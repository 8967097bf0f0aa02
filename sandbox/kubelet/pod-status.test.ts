import { test } from 'node:test';
import assert from 'node:assert/strict';
import { computePhase, computePodStatus, computeRestartDelayMs, shouldRestart, type ContainerRuntimeState } from './pod-status.ts';

const c = (over: Partial<ContainerRuntimeState>): ContainerRuntimeState => ({ name: 'c', image: 'nodemesh/echo', state: 'waiting', restartCount: 0, ready: false, done: false, ...over });

test('phase follows the containers', () => {
  assert.equal(computePhase([c({})]), 'Pending');
  assert.equal(computePhase([c({ state: 'running' })]), 'Running');
  assert.equal(computePhase([c({ state: 'waiting', reason: 'CrashLoopBackOff', restartCount: 2 })]), 'Running');
  assert.equal(computePhase([c({ state: 'terminated', exitCode: 0, done: true })]), 'Succeeded');
  assert.equal(computePhase([c({ state: 'terminated', exitCode: 0, done: true }), c({ state: 'terminated', exitCode: 2, done: true })]), 'Failed');
});

test('status carries addresses, container states and conditions; transition times move only on change', () => {
  const t0 = new Date('2026-01-01T00:00:00Z');
  const t1 = new Date('2026-01-01T00:01:00Z');
  const s0 = computePodStatus({ podIp: '10.244.1.2', hostIp: '10.200.0.11', startTime: t0, now: t0, containers: [c({ state: 'running', startedAt: t0, ready: false })] });
  assert.equal(s0.phase, 'Running');
  assert.deepEqual(s0.podIPs, [{ ip: '10.244.1.2' }]);
  assert.equal(s0.hostIP, '10.200.0.11');
  const ready0 = s0.conditions!.find((x) => x.type === 'Ready')!;
  assert.equal(ready0.status, 'False');
  assert.equal(ready0.reason, 'ContainersNotReady');
  const s1 = computePodStatus({ podIp: '10.244.1.2', hostIp: '10.200.0.11', startTime: t0, now: t1, previous: s0.conditions, containers: [c({ state: 'running', startedAt: t0, ready: true })] });
  const byType = Object.fromEntries(s1.conditions!.map((x) => [x.type, x]));
  assert.equal(byType.Ready!.status, 'True');
  assert.equal(byType.Ready!.lastTransitionTime, t1);
  assert.equal(byType.PodScheduled!.lastTransitionTime, t0);
  assert.deepEqual(s1.containerStatuses![0]!.state, { running: { startedAt: t0 } });
});

test('a set-up error is reported as a waiting reason', () => {
  const s = computePodStatus({ hostIp: '10.200.0.11', startTime: new Date(), now: new Date(), containers: [c({})], setupError: 'no command' });
  assert.equal(s.phase, 'Pending');
  assert.equal(s.containerStatuses![0]!.state!.waiting!.reason, 'CreateContainerError');
});

test('restart policy and back-off', () => {
  assert.equal(shouldRestart('Always', 0), true);
  assert.equal(shouldRestart('OnFailure', 0), false);
  assert.equal(shouldRestart('OnFailure', 1), true);
  assert.equal(shouldRestart('Never', 1), false);
  assert.deepEqual([0, 1, 3, 10].map(computeRestartDelayMs), [1000, 2000, 8000, 30_000]);
});
