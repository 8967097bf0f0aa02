import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { addEntry, createState, parseState, planTeardown, readState, removeEntries, StateStore } from './state.ts';

test('entries are added once and removed by predicate', () => {
  let s = createState('default', 2, new Date(0));
  s = addEntry(s, { kind: 'netns', name: 'nm-fabric' });
  s = addEntry(s, { kind: 'netns', name: 'nm-fabric' });
  s = addEntry(s, { kind: 'process', pid: 10, startTime: '5', role: 'x' });
  s = addEntry(s, { kind: 'process', pid: 10, startTime: '6', role: 'x' });
  assert.equal(s.entries.length, 3);
  s = removeEntries(s, (e) => e.kind === 'process');
  assert.deepEqual(s.entries, [{ kind: 'netns', name: 'nm-fabric' }]);
});

test('teardown order: supervisor, processes, cgroup kills, pods before nodes before fabric, deepest cgroups first, mounts last', () => {
  let s = createState('default', 1);
  for (const e of [
    { kind: 'mount', path: '/run/nodemesh/cgroup2' },
    { kind: 'netns', name: 'nm-fabric' },
    { kind: 'netns', name: 'nm-node-1' },
    { kind: 'cgroup', path: '/cg/nodemesh-sandbox' },
    { kind: 'cgroup', path: '/cg/nodemesh-sandbox/node-1/pod-aa' },
    { kind: 'netns', name: 'nm-pod-aabbccdd' },
    { kind: 'process', pid: 7, startTime: '1', role: 'daemon:forwarder/node-1' },
    { kind: 'process', pid: 5, startTime: '1', role: 'supervisor' },
    { kind: 'bpfdir', path: '/sys/fs/bpf/nodemesh' },
    { kind: 'bpfdir', path: '/sys/fs/bpf/nodemesh/node-1' },
    { kind: 'file', path: '/run/nodemesh/sandbox/kubeconfig' },
  ] as const) s = addEntry(s, e);
  const ops = planTeardown(s).map((x) => `${x.op} ${'name' in x ? x.name : 'path' in x ? x.path : x.role}`);
  assert.deepEqual(ops, [
    'kill-process supervisor',
    'kill-process daemon:forwarder/node-1',
    'kill-cgroup /cg/nodemesh-sandbox',
    'kill-cgroup /cg/nodemesh-sandbox/node-1/pod-aa',
    'delete-netns nm-pod-aabbccdd',
    'delete-netns nm-node-1',
    'delete-netns nm-fabric',
    'remove-cgroup /cg/nodemesh-sandbox/node-1/pod-aa',
    'remove-cgroup /cg/nodemesh-sandbox',
    'remove-tree /sys/fs/bpf/nodemesh/node-1',
    'remove-tree /sys/fs/bpf/nodemesh',
    'remove-file /run/nodemesh/sandbox/kubeconfig',
    'unmount /run/nodemesh/cgroup2',
  ]);
});

test('parseState explains a corrupt file', () => {
  assert.throws(() => parseState('{', '/x/state.json'), /state\.json is not JSON.*sandbox down/);
  assert.throws(() => parseState('{"version":2,"entries":[],"instance":"d"}', '/x/state.json'), /version must be 1/);
});

test('the store writes every change through, atomically and in order', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'nm-state-test-'));
  try {
    const path = join(dir, 'state.json');
    const store = new StateStore(path, createState('t', 1));
    await Promise.all([store.record({ kind: 'netns', name: 'a' }), store.record({ kind: 'netns', name: 'b' }), store.forget((e) => e.kind === 'netns' && e.name === 'a')]);
    const back = await readState(path);
    assert.deepEqual(back?.entries, [{ kind: 'netns', name: 'b' }]);
    assert.ok(!(await readFile(path, 'utf8')).includes('"a"'));
    assert.equal(await readState(join(dir, 'missing.json')), undefined);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
