/** Clock and version skew decisions on hand-made readings. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { computeClockChecks, computeClockOffset, computeVersionChecks, parseVersion, type ClockReading } from './skew.ts';

const T = Date.parse('2026-11-21T12:00:00Z');
/** A reading whose remote clock is `offsetMs` from ours, answered in `rttMs`. */
const reading = (offsetMs: number, rttMs = 20): ClockReading => ({ sentMs: T, receivedMs: T + rttMs, date: new Date(T + rttMs / 2 + offsetMs).toUTCString() });

describe('clock skew', () => {
  it('estimates an offset from a Date header within RTT/2 + 0.5 s', () => {
    for (const off of [0, 1_500, -90_000]) {
      const o = computeClockOffset(reading(off))!;
      assert.ok(Math.abs(o.offsetMs - off) <= o.uncertaintyMs, `offset ${off}: got ${o.offsetMs} ±${o.uncertaintyMs}`);
      assert.equal(o.uncertaintyMs, 510);
    }
    assert.equal(computeClockOffset({ sentMs: T, receivedMs: T + 1, date: 'not a date' }), undefined);
    assert.equal(computeClockOffset({ sentMs: T, receivedMs: T + 1, date: undefined }), undefined);
  });

  it('passes agents within 5 s, warns beyond, fails beyond the CA\'s 60 s backdating', () => {
    const r = computeClockChecks(reading(0), [{ node: 'a', clock: reading(1_000) }, { node: 'b', clock: reading(12_000) }, { node: 'c', clock: reading(-75_000) }, { node: 'd' }]);
    const by = (node: string) => r.find((c) => c.name.includes(`of ${node} `));
    assert.equal(by('a'), undefined, 'a is fine: no line of its own');
    assert.equal(by('b')?.status, 'warn');
    assert.match(by('b')?.detail ?? '', /b is 12\.0s ahead of the API server/);
    assert.equal(by('c')?.status, 'fail');
    assert.match(by('c')?.detail ?? '', /c is 75\.0s behind/);
    assert.match(by('c')?.hint ?? '', /backdating/);
    assert.equal(r.some((c) => c.name === 'agent clocks agree with the API server'), false, 'no overall pass when one is off');
  });

  it('the API server is the reference: a machine off by minutes only warns about itself', () => {
    const r = computeClockChecks(reading(300_000), [{ node: 'a', clock: reading(300_500) }]);
    assert.deepEqual(r.map((c) => [c.name, c.status]), [["this machine's clock agrees with the API server", 'warn'], ['agent clocks agree with the API server', 'pass']]);
    assert.equal(computeClockChecks(undefined, [])[0]?.status, 'skip');
  });
});

describe('version skew', () => {
  it('parses release versions', () => {
    assert.deepEqual(parseVersion('v1.32.0-nodemesh'), { major: 1, minor: 32, patch: 0, text: 'v1.32.0-nodemesh' });
    assert.equal(parseVersion('dev'), undefined);
  });

  it('agents one minor behind the operator pass; ahead, two behind or another major fail', () => {
    const ok = computeVersionChecks({ cli: '0.4.0', operator: { version: '0.4.1', source: 'x' }, agents: [{ node: 'a', version: '0.3.2' }, { node: 'b', version: '0.4.0' }] });
    assert.equal(ok.find((c) => c.name.startsWith('agents are within'))?.status, 'pass');
    assert.equal(ok.find((c) => c.name === 'agents run one version')?.status, 'warn', 'two versions: a roll in progress');
    for (const agent of ['0.5.0', '0.2.9', '1.4.0']) {
      const r = computeVersionChecks({ cli: '0.4.0', operator: { version: '0.4.0', source: 'x' }, agents: [{ node: 'a', version: agent }] });
      const c = r.find((x) => x.name.startsWith('agents are within'));
      assert.equal(c?.status, 'fail', `agent ${agent}`);
      assert.match(c?.hint ?? '', /CRDs → operator → agents/);
    }
  });

  it('the CLI tolerates one minor either way; without an operator version it compares with the agents', () => {
    const r = computeVersionChecks({ cli: '0.1.0', agents: [{ node: 'a', version: '0.3.0' }] });
    assert.equal(r.find((c) => c.name === 'operator version is known')?.status, 'skip');
    assert.equal(r.find((c) => c.name.startsWith('kubectl-mesh'))?.status, 'warn');
    assert.equal(computeVersionChecks({ cli: '0.2.0', agents: [{ node: 'a', version: '0.3.0' }] }).find((c) => c.name.startsWith('kubectl-mesh'))?.status, 'pass');
  });
});
