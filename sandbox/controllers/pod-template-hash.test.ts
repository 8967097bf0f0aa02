import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { canonicalJson, computePodTemplateHash, fnv32a, templatesEqualIgnoringHash } from './pod-template-hash.ts';

describe('pod-template-hash', () => {
  it('implements FNV-32a', () => {
    assert.equal(fnv32a(''), 0x811c9dc5);
    assert.equal(fnv32a('a'), 0xe40c292c);
    assert.equal(fnv32a('foobar'), 0xbf9cf968);
  });

  it('is stable across key order, nulls and the hash label, and uses the safe alphabet', () => {
    const a = { metadata: { labels: { app: 'x', v: '1' } }, spec: { containers: [{ name: 'c', image: 'i' }] } };
    const b = { spec: { containers: [{ image: 'i', name: 'c' }] }, metadata: { creationTimestamp: null as unknown as undefined, labels: { v: '1', app: 'x', 'pod-template-hash': 'zzz' } } };
    assert.equal(computePodTemplateHash(a), computePodTemplateHash(b));
    assert.match(computePodTemplateHash(a), /^[bcdfghjklmnpqrstvwxz2456789]+$/);
    assert.equal(templatesEqualIgnoringHash(a, b), true);
  });

  it('changes with the template and with the collision count', () => {
    const a = { spec: { containers: [{ name: 'c', image: 'v1' }] } };
    const b = { spec: { containers: [{ name: 'c', image: 'v2' }] } };
    assert.notEqual(computePodTemplateHash(a), computePodTemplateHash(b));
    assert.notEqual(computePodTemplateHash(a, 0), computePodTemplateHash(a, 1));
    assert.equal(templatesEqualIgnoringHash(a, b), false);
  });

  it('renders Dates the way the API server writes timestamps', () => {
    assert.equal(canonicalJson({ t: new Date(Date.UTC(2026, 0, 2, 3, 4, 5)) }), '{"t":"2026-01-02T03:04:05Z"}');
  });
});
