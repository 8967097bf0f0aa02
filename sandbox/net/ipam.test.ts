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

test('exhaustion names the CIDR; reserve adopts and refuses conflicts', () => {
  const a = new PodIpAllocator('10.244.1.0/24');
  for (let i = 0; i < 253; i++) a.allocate(`p${i}`);
  assert.throws(() => a.allocate('one-more'), /10\.244\.1\.0\/24 has no free address/);
  const b = new PodIpAllocator('10.244.2.0/24');
  assert.equal(b.reserve('x', '10.244.2.9'), true);
  assert.equal(b.reserve('y', '10.244.2.9'), false);
  assert.equal(b.reserve('y', '10.244.9.9'), false);
  assert.equal(b.reserve('y', '10.244.2.1'), false, '.1 is the node');
  assert.equal(b.allocate('z'), '10.244.2.2');
});

test('rejects a CIDR that is not a /24', () => {
  assert.throws(() => new PodIpAllocator('10.244.0.0/16'), /must be an IPv4 \/24/);
});
