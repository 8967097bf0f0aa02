import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseRouteGet, walkRoute, type RouteLookup } from './isolation.ts';

test('parseRouteGet reads gateways, on-link, local and the kernel refusing', () => {
  assert.deepEqual(parseRouteGet('[{"dst":"8.8.8.8","gateway":"10.244.1.1","dev":"eth0","prefsrc":"10.244.1.2","flags":[],"uid":0,"cache":[]}]', '', 0), { kind: 'via', gateway: '10.244.1.1', dev: 'eth0' });
  assert.deepEqual(parseRouteGet('[{"dst":"10.200.0.12","dev":"eth0","prefsrc":"10.200.0.11"}]', '', 0), { kind: 'onlink', dev: 'eth0' });
  assert.deepEqual(parseRouteGet('[{"type":"local","dst":"10.244.1.1","dev":"lo"}]', '', 0), { kind: 'local', dev: 'lo' });
  assert.equal(parseRouteGet('', 'RTNETLINK answers: No route to host', 2).kind, 'unreachable');
  assert.equal(parseRouteGet('', 'RTNETLINK answers: Network is unreachable', 2).kind, 'unreachable');
  assert.equal(parseRouteGet('', 'Cannot find device', 1).kind, 'error');
  assert.equal(parseRouteGet('garbage', '', 0).kind, 'error');
});

const table: Record<string, Record<string, RouteLookup>> = {
  pod: { '8.8.8.8': { kind: 'via', gateway: '10.244.1.1', dev: 'eth0' } },
  node: { '8.8.8.8': { kind: 'unreachable', reason: 'No route to host' } },
  leaky: { '8.8.8.8': { kind: 'via', gateway: '172.17.0.1', dev: 'eth1' } },
  loop1: { '8.8.8.8': { kind: 'via', gateway: '10.0.0.2', dev: 'eth0' } },
  loop2: { '8.8.8.8': { kind: 'via', gateway: '10.0.0.1', dev: 'eth0' } },
};
const lookup = async (ns: string, a: string): Promise<RouteLookup> => table[ns]?.[a] ?? { kind: 'error', reason: 'no entry' };
const owners: Record<string, string> = { '10.244.1.1': 'node', '10.0.0.1': 'loop1', '10.0.0.2': 'loop2' };

test('a walk from a pod ends unreachable at its node', async () => {
  const w = await walkRoute('pod', '8.8.8.8', lookup, (g) => owners[g]);
  assert.equal(w.ok, true);
  assert.deepEqual(w.hops.map((h) => h.netns), ['pod', 'node']);
});

test('a gateway no sandbox namespace holds is a way out', async () => {
  const w = await walkRoute('leaky', '8.8.8.8', lookup, (g) => owners[g]);
  assert.equal(w.ok, false);
  assert.match(w.verdict, /172\.17\.0\.1, which no sandbox namespace holds/);
});

test('a routing loop fails after the hop limit', async () => {
  const w = await walkRoute('loop1', '8.8.8.8', lookup, (g) => owners[g], 6);
  assert.equal(w.ok, false);
  assert.equal(w.hops.length, 6);
});
