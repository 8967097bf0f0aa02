/** The CEL subset evaluator and its compile-time rejection of unsupported rules. */

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { CelValue } from './cel.ts';
import { CelCompileError, CelEvalError, compileCel, parseDuration } from './cel.ts';

const ev = (rule: string, self: CelValue, oldSelf?: CelValue): CelValue => compileCel(rule).evaluate(oldSelf === undefined ? { self } : { self, oldSelf });

describe('CEL subset', () => {
  const self = { mode: 'STRICT', port: 8443, tags: ['a', 'b'], rules: [{ timeout: '5s', weight: 10 }, { timeout: '1m', weight: 90 }], labels: { app: 'x' } };
  it('field access, has(), size(), comparisons and logic', () => {
    assert.equal(ev('self.port > 1024 && self.mode == "STRICT"', self), true);
    assert.equal(ev('has(self.port) && !has(self.missing)', self), true);
    assert.equal(ev('size(self.tags) == 2 && self.tags.size() == 2 && size(self.mode) == 6', self), true);
    assert.equal(ev('self.mode != "STRICT" || self.port <= 1024', self), false);
    assert.equal(ev('self.port % 2 == 1 ? "odd" : "even"', self), 'odd');
    assert.equal(ev("self.mode in ['STRICT', 'PERMISSIVE']", self), true);
    assert.equal(ev("'app' in self.labels && self.labels['app'] == 'x'", self), true);
    assert.equal(ev('-self.port + 10000', self), 1557);
  });
  it('list macros and string functions', () => {
    assert.equal(ev('self.rules.all(r, r.weight >= 0)', self), true);
    assert.equal(ev('self.rules.exists(r, r.weight > 50)', self), true);
    assert.equal(ev('self.rules.exists_one(r, r.weight > 5)', self), false);
    assert.equal(ev('self.rules.map(r, r.weight).sum() == 100', self), true);
    assert.equal(ev('self.rules.filter(r, r.weight > 50).size() == 1', self), true);
    assert.equal(ev("self.mode.matches('^[A-Z]+$') && self.mode.startsWith('ST') && self.mode.endsWith('CT') && self.mode.contains('RI')", self), true);
    assert.equal(ev("self.mode.lowerAscii() == 'strict'", self), true);
  });
  it('durations and int()/string() conversions', () => {
    assert.equal(ev("self.rules.all(r, duration(r.timeout) <= duration('1m'))", self), true);
    assert.equal(ev("duration(self.rules[0].timeout) < duration('1s')", self), false);
    assert.equal(ev("int('42') + 1 == 43 && string(self.port) == '8443'", self), true);
    assert.equal(parseDuration('1h30m').nanos, 5400e9);
    assert.equal(parseDuration('250ms').nanos, 250e6);
  });
  it('transition rules see oldSelf', () => {
    const r = compileCel('self.port >= oldSelf.port');
    assert.equal(r.usesOldSelf, true);
    assert.equal(r.evaluate({ self: { port: 2 }, oldSelf: { port: 1 } }), true);
  });
  it('errors: a missing field fails evaluation; false && error is false', () => {
    assert.throws(() => ev('self.nope == 1', self), CelEvalError);
    assert.equal(ev('false && self.nope == 1', self), false);
    assert.equal(ev('self.nope == 1 || true', self), true);
  });
  it('rejects unsupported functions and syntax at compile time', () => {
    assert.throws(() => compileCel('self.x.quantityValue()'), CelCompileError);
    assert.throws(() => compileCel('url(self.x)'), CelCompileError);
    assert.throws(() => compileCel('self.x ==='), CelCompileError);
    assert.throws(() => compileCel('other.x'), CelCompileError);
  });
});
