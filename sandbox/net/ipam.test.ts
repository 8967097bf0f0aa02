import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PodIpAllocator } from './ipam.ts';

test('allocates lowest free from .2, stable per key, reuses released addresses', () => {
  const a = new PodIpAllocator('10.244.3.0/24');
  assert.equal(a.allocate('p1'), '10.244.3.2');
  assert.equal(a.allocate('p2'), '10.244.3.3');
  assert.equal(a.allocate('p1'), '10.244.3.2');
  a.release('p1');
  assert.equal(a.addressOf('p1'), undefined);
  assert.equal(a.allocate('p3'), '10.244.3.2');
  assert.equal(a.size, 2);
});

test('exhaustion names the CIDR; .1 (the node) and .255 are never handed out', () => {
  const a = new PodIpAllocator('10.244.1.0/24');
  const got = new Set<string>();
  for (let i = 0; i < 253; i++) got.add(a.allocate(`p${i}`));
  assert.equal(got.size, 253);
  assert.ok(!got.has('10.244.1.1') && !got.has('10.244.1.255') && !got.has('10.244.1.0'));
  assert.throws(() => a.allocate('one-more'), /10\.244\.1\.0\/24 has no free address/);
});

test('rejects a CIDR that is not a /24', () => {
  assert.throws(() => new PodIpAllocator('10.244.0.0/16'), /must be an IPv4 \/24/);
});
