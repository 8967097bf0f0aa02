import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { isResourceVersionAtLeast, WriteExpectations } from './write-expectations.ts';

describe('WriteExpectations', () => {
  it('compares integer resourceVersions numerically', () => {
    assert.equal(isResourceVersionAtLeast('10', '9'), true);
    assert.equal(isResourceVersionAtLeast('9', '10'), false);
    assert.equal(isResourceVersionAtLeast(undefined, '1'), false);
    assert.equal(isResourceVersionAtLeast('abc', 'abc'), true);
  });

  it('holds a create until the cache shows it, and a delete until the cache drops it', () => {
    const exp = new WriteExpectations();
    const cache = new Map<string, { metadata: { namespace: string; name: string; resourceVersion: string; deletionTimestamp?: Date } }>();
    const lookup = (k: string): (typeof cache extends Map<string, infer V> ? V : never) | undefined => cache.get(k);
    exp.expectPresent('ns/rs', { metadata: { namespace: 'ns', name: 'p1', resourceVersion: '5' } });
    assert.deepEqual(exp.pending('ns/rs', lookup), ['ns/p1']);
    cache.set('ns/p1', { metadata: { namespace: 'ns', name: 'p1', resourceVersion: '4' } });
    assert.deepEqual(exp.pending('ns/rs', lookup), ['ns/p1'], 'an older version is not our write');
    cache.set('ns/p1', { metadata: { namespace: 'ns', name: 'p1', resourceVersion: '5' } });
    assert.deepEqual(exp.pending('ns/rs', lookup), []);

    exp.expectAbsent('ns/rs', 'ns/p1');
    assert.deepEqual(exp.pending('ns/rs', lookup), ['ns/p1']);
    cache.set('ns/p1', { metadata: { namespace: 'ns', name: 'p1', resourceVersion: '6', deletionTimestamp: new Date() } });
    assert.deepEqual(exp.pending('ns/rs', lookup), [], 'a terminating pod counts as deleted');
  });

  it('settles on informer events and expires after the TTL', () => {
    let now = 0;
    const exp = new WriteExpectations({ ttlMs: 1000, now: () => now });
    exp.expectPresent('o', { metadata: { namespace: 'n', name: 'a', resourceVersion: '3' } });
    exp.observe({ metadata: { namespace: 'n', name: 'a', resourceVersion: '3' } }, false);
    assert.deepEqual(exp.pending('o', () => undefined), []);
    exp.expectPresent('o', { metadata: { namespace: 'n', name: 'b', resourceVersion: '3' } });
    assert.deepEqual(exp.pending('o', () => undefined), ['n/b']);
    now = 2000;
    assert.deepEqual(exp.pending('o', () => undefined), []);
  });
});
