// The node control-port guard (B7, CVE-2024-40632 class): plan and nft script. The kernel side is checked by
// test/e2e/confused-deputy.test.ts (a pod connecting to the agent's and the CA's ports is reset).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ADMIN_GUARD_TABLE, normalizeListing, parseAdminGuardRejected, planAdminGuard, renderAdminGuardScript } from './admin-guard.ts';

test('plan: ports deduplicated and sorted, node addresses IPv4 only, nothing to guard → no table', () => {
  const problems: string[] = [];
  assert.deepEqual(planAdminGuard({ ports: [15012, 10256, 10256], nodeAddresses: ['10.0.0.3', '10.0.0.2', 'fd00::1'] }, problems), { ports: [10256, 15012], nodes: ['10.0.0.2', '10.0.0.3'] });
  assert.match(problems.join('\n'), /fd00::1: the admin guard is IPv4 only/);
  assert.equal(planAdminGuard({ ports: [], nodeAddresses: ['10.0.0.2'] }), undefined);
  const bad: string[] = [];
  assert.deepEqual(planAdminGuard({ ports: [0, 70000, 10256], nodeAddresses: [] }, bad), { ports: [10256], nodes: [] });
  assert.equal(bad.length, 2);
});

test('script: replaces the table atomically; only the guarded TCP ports jump to the check; loopback and nodes pass, the rest is reset', () => {
  const s = renderAdminGuardScript({ ports: [10256, 15012], nodes: ['10.0.0.2'] });
  assert.ok(s.startsWith(`add table ip ${ADMIN_GUARD_TABLE}\ndelete table ip ${ADMIN_GUARD_TABLE}\ntable ip ${ADMIN_GUARD_TABLE} {`));
  assert.match(s, /elements = \{ 10256, 15012 \}/);
  assert.match(s, /tcp dport @ports jump admin/);
  // Order matters: the node itself, then other nodes, then the reset. Nothing but the listed ports meets it.
  const admin = s.slice(s.indexOf('chain admin'));
  assert.ok(admin.indexOf('iifname "lo" accept') < admin.indexOf('ip saddr @nodes accept'));
  assert.ok(admin.indexOf('ip saddr @nodes accept') < admin.indexOf('reject with tcp reset'));
  assert.doesNotMatch(s, /drop|policy drop/);
  // One counted reset per guarded port (the metric's port label), and a final reset for anything else that jumped here.
  assert.match(admin, /tcp dport 10256 counter reject with tcp reset\n {4}tcp dport 15012 counter reject with tcp reset\n {4}reject with tcp reset\n {2}\}/);
  // No other node known: an empty set, still valid nft.
  assert.doesNotMatch(renderAdminGuardScript({ ports: [10256], nodes: [] }), /elements = \{ \}/);
  assert.equal(renderAdminGuardScript(undefined), `add table ip ${ADMIN_GUARD_TABLE}\ndelete table ip ${ADMIN_GUARD_TABLE}\n`);
});

test('listing comparison ignores counters and handles only', () => {
  const a = 'chain admin {\n meta l4proto tcp counter packets 12 bytes 720 reject with tcp reset # handle 7\n}';
  const b = 'chain admin {\n meta l4proto tcp counter packets 0 bytes 0 reject with tcp reset\n}';
  assert.equal(normalizeListing(a), normalizeListing(b));
  assert.notEqual(normalizeListing(a), normalizeListing(b.replace('reject with tcp reset', 'accept')));
});

test('the guarded ports and nothing else: the metrics-only port is never in the plan unless asked', () => {
  // The agent hands the status port alone (agent/main.ts adminPorts); the metrics port stays open to Prometheus pods.
  assert.deepEqual(planAdminGuard({ ports: [10256], nodeAddresses: [] })?.ports, [10256]);
  assert.doesNotMatch(renderAdminGuardScript(planAdminGuard({ ports: [9880, 15012], nodeAddresses: [] })), /9881|10249/);
});

test('reset counters per port from a listing (what nft 1.0 prints); no table content, no counters', () => {
  const listing = `table ip ${ADMIN_GUARD_TABLE} {
	chain admin {
		iifname "lo" accept
		ip saddr @nodes accept
		tcp dport 15012 counter packets 2 bytes 120 reject with tcp reset
		tcp dport 10256 counter packets 17 bytes 1020 reject with tcp reset
		reject with tcp reset
	}
}`;
  assert.deepEqual(parseAdminGuardRejected(listing), [{ port: 10256, packets: 17 }, { port: 15012, packets: 2 }]);
  assert.deepEqual(parseAdminGuardRejected(''), []);
});
