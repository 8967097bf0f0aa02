/** The in-memory store: contiguous revisions, replay, compaction, pagination. */

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { StoreEvent } from './store.ts';
import { MemoryStore } from './store.ts';

const obj = (ns: string, name: string, extra: object = {}) => ({ metadata: { name, namespace: ns }, ...extra });

describe('MemoryStore', () => {
  it('stamps one revision per write and replays events after a revision', () => {
    const s = new MemoryStore({ historyWindow: 100 });
    const seen: StoreEvent[] = [];
    s.subscribe((e) => seen.push(e));
    const a = s.create('/configmaps', obj('ns', 'a'));
    s.update('/configmaps', { ...a, data: { x: '1' } });
    const gone = s.remove('/configmaps', 'ns', 'a')!;
    assert.equal(a['metadata'] && (a['metadata'] as { resourceVersion: string }).resourceVersion, '1');
    assert.equal((gone['metadata'] as { resourceVersion: string }).resourceVersion, '3', 'the deleted object carries the deletion revision');
    assert.deepEqual(
      seen.map((e) => [e.type, e.rv]),
      [
        ['ADDED', 1],
        ['MODIFIED', 2],
        ['DELETED', 3],
      ],
    );
    const replay = s.eventsAfter('/configmaps', 1);
    assert.ok(Array.isArray(replay));
    assert.deepEqual(
      replay.map((e) => e.rv),
      [2, 3],
    );
    assert.deepEqual(s.eventsAfter('/configmaps', 3), []);
    assert.deepEqual(s.eventsAfter('/configmaps', 4), { gap: 'future', current: 3 });
  });

  it('expires revisions older than the window, per resource', () => {
    const s = new MemoryStore({ historyWindow: 5 });
    s.create('/secrets', obj('ns', 'quiet')); // rv 1
    for (let i = 0; i < 12; i++) s.create('/configmaps', obj('ns', `o${i}`)); // rv 2..13
    assert.deepEqual(s.eventsAfter('/configmaps', 3), { gap: 'expired', oldest: 9 });
    const ok = s.eventsAfter('/configmaps', 8);
    assert.ok(Array.isArray(ok) && ok.length === 5 && ok[0]!.rv === 9);
    // Churn in configmaps does not expire the history of secrets.
    const quiet = s.eventsAfter('/secrets', 0);
    assert.ok(Array.isArray(quiet));
    assert.deepEqual(
      quiet.map((e) => e.rv),
      [1],
    );
    assert.deepEqual(s.eventsAfter('/secrets', 5), []);
  });

  it('lists sorted by namespace and name and pages by key', () => {
    const s = new MemoryStore({ historyWindow: 10 });
    for (const [ns, n] of [['b', 'x'], ['a', 'z'], ['a', 'y'], ['c', 'w']] as const) s.create('/configmaps', obj(ns, n));
    const names = (items: Record<string, unknown>[]): string[] => items.map((i) => `${(i['metadata'] as { namespace: string }).namespace}/${(i['metadata'] as { name: string }).name}`);
    assert.deepEqual(names(s.list('/configmaps')), ['a/y', 'a/z', 'b/x', 'c/w']);
    assert.deepEqual(names(s.list('/configmaps', 'a')), ['a/y', 'a/z']);
    const p1 = s.listPage('/configmaps', undefined, undefined, 3);
    assert.deepEqual(names(p1.items), ['a/y', 'a/z', 'b/x']);
    assert.equal(p1.more, true);
    assert.equal(p1.remaining, 1);
    const p2 = s.listPage('/configmaps', undefined, 'b/x', 3);
    assert.deepEqual(names(p2.items), ['c/w']);
    assert.equal(p2.more, false);
    assert.equal(s.count('/configmaps'), 4);
    assert.equal(s.count('/configmaps', 'a'), 2);
  });
});
