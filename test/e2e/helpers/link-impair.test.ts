/** planImpairment: only sandbox namespaces, valid interface names and loss fractions; parts per million. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { IMPAIR_PIN_ROOT, planImpairment } from './link-impair.ts';

const base = { netns: 'nm-faults-node-2', dev: 'eth0', lossFraction: 0.05, sandboxPrefix: 'nm-faults-' };

describe('planImpairment', () => {
  it('turns the loss fraction into parts per million and pins per namespace and interface', () => {
    assert.deepEqual(planImpairment(base), { netns: 'nm-faults-node-2', dev: 'eth0', lossPpm: 50_000, pinDir: `${IMPAIR_PIN_ROOT}/nm-faults-node-2-eth0` });
    assert.equal(planImpairment({ ...base, lossFraction: 1 }).lossPpm, 1_000_000);
    assert.equal(planImpairment({ ...base, lossFraction: 0 }).lossPpm, 0);
  });

  it('refuses namespaces outside the sandbox instance, whatever their names', () => {
    assert.throws(() => planImpairment({ ...base, netns: 'nm-other-node-2' }), /not one of the sandbox's \(nm-faults-\*\)/);
    assert.throws(() => planImpairment({ ...base, netns: 'nm-faults-../x' }), /not one of the sandbox's/);
    assert.throws(() => planImpairment({ ...base, sandboxPrefix: '' }), /not nm-<instance>-/);
    assert.throws(() => planImpairment({ ...base, sandboxPrefix: 'nm-' }), /not nm-<instance>-/);
  });

  it('refuses bad interface names and loss fractions', () => {
    assert.throws(() => planImpairment({ ...base, dev: 'a-name-far-too-long' }), /not a valid Linux interface name/);
    assert.throws(() => planImpairment({ ...base, dev: 'eth0 root' }), /not a valid Linux interface name/);
    for (const lossFraction of [-0.01, 1.5, Number.NaN]) assert.throws(() => planImpairment({ ...base, lossFraction }), /not within 0\.\.1/);
  });
});
