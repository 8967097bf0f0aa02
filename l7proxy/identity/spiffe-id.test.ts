// SPIFFE ID parsing from raw bytes (the matrix in verify-peer-chain.test.ts covers it through certificates).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { formatSpiffeId, parseSpiffeUri } from './spiffe-id.ts';

const parse = (s: string | Uint8Array, td = 'td.test') => {
  const r = parseSpiffeUri(typeof s === 'string' ? Buffer.from(s, 'latin1') : s, td);
  return r.ok ? `${r.namespace}/${r.serviceAccount}` : r.reason;
};

describe('parseSpiffeUri', () => {
  it('round-trips formatSpiffeId', () => {
    const id = formatSpiffeId('td.test', { namespace: 'a-b', serviceAccount: 'c.d-e' });
    assert.equal(parse(id), 'a-b/c.d-e');
  });
  it('refuses look-alikes', () => {
    assert.equal(parse('spiffe://td.test/ns/a/sa/b/'), 'san_path');
    assert.equal(parse('spiffe://td.test//ns/a/sa/b'), 'san_path');
    assert.equal(parse('spiffe://td.test/ns/a/sa/b#frag'), 'san_path');
    assert.equal(parse('spiffe://td.test/ns/a/sa/.'), 'san_path');
    assert.equal(parse('spiffe://TD.test/ns/a/sa/b'), 'san_trust_domain');
    assert.equal(parse('spiffe:/td.test/ns/a/sa/b'), 'san_scheme');
    assert.equal(parse('spiffe://td.test/ns/a/sa/b\x7f'), 'san_invalid_chars');
    assert.equal(parse('spiffe://td.test/ns/a/sa/b c'), 'san_invalid_chars');
    assert.equal(parse(''), 'san_scheme');
  });
  it('refuses formatting names that would not parse', () => {
    assert.throws(() => formatSpiffeId('td.test', { namespace: 'A', serviceAccount: 'b' }));
    assert.throws(() => formatSpiffeId('td.test:443', { namespace: 'a', serviceAccount: 'b' }));
  });
});
