/** ClusterIP and NodePort allocators. */

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AllocationError, ClusterIpAllocator, NodePortAllocator } from './service-ips.ts';

describe('ClusterIpAllocator', () => {
  it('reserves the first address, allocates the rest, honours requests and rejects duplicates', () => {
    const a = new ClusterIpAllocator('10.96.0.0/29'); // usable .1-.6; .1 reserved
    assert.equal(a.firstAddress, '10.96.0.1');
    const got = [a.allocate(), a.allocate(), a.allocate(), a.allocate(), a.allocate()];
    assert.deepEqual(got, ['10.96.0.2', '10.96.0.3', '10.96.0.4', '10.96.0.5', '10.96.0.6']);
    assert.throws(() => a.allocate(), AllocationError);
    a.release('10.96.0.4');
    assert.equal(a.allocate(), '10.96.0.4');
    assert.equal(a.allocate('10.96.0.1'), '10.96.0.1');
    assert.throws(() => a.allocate('10.96.0.1'), /already allocated/);
    assert.throws(() => a.allocate('10.97.0.1'), /not in the valid range. The range of valid IPs is 10.96.0.0\/29/);
    assert.throws(() => a.allocate('10.96.0.7'), /not in the valid range/, 'broadcast address');
  });
});

describe('NodePortAllocator', () => {
  it('allocates within the range, honours requests, rejects conflicts and out-of-range', () => {
    const p = new NodePortAllocator([30000, 30002]);
    assert.equal(p.allocate(30001), 30001);
    assert.equal(p.allocate(), 30000);
    assert.equal(p.allocate(), 30002);
    assert.throws(() => p.allocate(), /range is full/);
    assert.throws(() => p.allocate(30001), /already allocated/);
    assert.throws(() => p.allocate(80), /The range of valid ports is 30000-30002/);
    p.release(30001);
    assert.equal(p.allocate(), 30001);
  });
});
