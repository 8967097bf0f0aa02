/** kube-proxy rule generation: names, probabilities and structure as kube-proxy writes them. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { base32, probability, renderIptablesAddOne, renderIptablesRestore, renderNftables, svcChain } from './kube-proxy-rules.ts';
import { computeShuffled, createRandom } from './lib/stats.ts';

const svc = (i: number) => ({ namespace: 'bench', name: `s${i}`, portName: 'http', clusterIP: `10.96.0.${i + 10}`, port: 80, endpoints: [1, 2, 3, 4].map((j) => ({ ip: `10.253.0.${10 + j}`, port: 8080 })) });

describe('kube-proxy rules', () => {
  it('encodes base32 like Go and names chains with 16 characters', () => {
    assert.equal(base32(Buffer.from('foobar')), 'MZXW6YTBOI');
    assert.match(svcChain(svc(0)), /^KUBE-SVC-[A-Z2-7]{16}$/);
  });

  it('splits 4 endpoints with probabilities 1/4, 1/3, 1/2, then the rest', () => {
    assert.deepEqual([4, 3, 2].map(probability), ['0.2500000000', '0.3333333333', '0.5000000000']);
    const text = renderIptablesRestore([svc(0)]);
    assert.equal((text.match(/--probability/g) ?? []).length, 3);
    assert.equal((text.match(/-j DNAT --to-destination/g) ?? []).length, 4);
    assert.match(text, /^-A KUBE-SERVICES .* -d 10\.96\.0\.10 --dport 80 -j KUBE-SVC-/m);
    assert.ok(text.trimEnd().endsWith('COMMIT'));
  });

  it('keeps service order (the probed service first or last) and rewrites KUBE-SERVICES whole on add', () => {
    const text = renderIptablesRestore([svc(0), svc(1), svc(2)]);
    const order = [...text.matchAll(/^-A KUBE-SERVICES .* -d (\S+) /gm)].map((m) => m[1]);
    assert.deepEqual(order, ['10.96.0.10', '10.96.0.11', '10.96.0.12']);
    const add = renderIptablesAddOne([svc(0), svc(1)], svc(2));
    assert.equal((add.match(/^-A KUBE-SERVICES /gm) ?? []).length, 4, '3 services + the nodeports rule');
  });

  it('renders the nftables verdict map with numgen', () => {
    const text = renderNftables([svc(0)]);
    assert.match(text, /numgen random mod 4 vmap \{ 0 : goto endpoint-/);
    assert.match(text, /add element ip kube-proxy service-ips \{ 10\.96\.0\.10 \. tcp \. 80 : goto service-/);
  });

  it('shuffles reproducibly from a seed', () => {
    assert.deepEqual(computeShuffled([1, 2, 3, 4, 5], createRandom(42)), computeShuffled([1, 2, 3, 4, 5], createRandom(42)));
    assert.deepEqual([...computeShuffled([1, 2, 3, 4, 5], createRandom(7))].sort(), [1, 2, 3, 4, 5]);
  });
});
