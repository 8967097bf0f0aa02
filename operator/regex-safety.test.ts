/** Tests for the regex safety check: what it refuses, what it accepts, and that it stays fast. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkRegexSafety } from './regex-safety.ts';

test('accepts ordinary RE2-like patterns', () => {
  for (const p of [
    '/items/[0-9]+',
    '^/api/v[12]/users/[^/]+$',
    '/static/.*\\.(css|js|png)',
    '[a-z]+-[0-9]+-[a-z]+',
    '(?:foo|bar)/baz',
    '(?<id>[0-9]{1,8})',
    'a{3}(bc){2}',
    '(a{3})+',
    '(a|b)*c',
    '.*foo.*',
    '\\d{4}-\\d{2}-\\d{2}',
    '[]]?x',
  ]) {
    assert.equal(checkRegexSafety(p), undefined, p);
  }
});

test('refuses catastrophic and unsupported constructs, naming the problem', () => {
  const cases: Array<[string, RegExp]> = [
    ['(a+)+$', /nested quantifier/],
    ['(a*)*', /nested quantifier/],
    ['(\\w+\\s?)*', /nested quantifier/],
    ['(a|a)*', /alternatives that can start with the same character/],
    ['(a|ab)+c', /alternatives/],
    ['(a?)*', /nested quantifier|empty string/],
    ['(|a)+', /alternatives|empty/],
    ['(.*a){3,}', /nested quantifier/],
    ['.*.*.*x', /polynomial/],
    ['(a)\\1', /backreference/],
    ['(?<n>a)\\k<n>', /named backreference/],
    ['foo(?=bar)', /lookahead/],
    ['(?<!x)y', /lookbehind/],
    ['(?i)abc', /group syntax/],
    ['a{1001}', /repetition count/],
    ['a**', /quantifier directly after a quantifier/],
    ['(abc', /missing "\)"/],
    ['abc)', /unbalanced/],
    ['[a-', /never closed/],
    ['\\p{L}', /not supported/],
  ];
  for (const [p, why] of cases) {
    const got = checkRegexSafety(p);
    assert.ok(got, `${p} must be refused`);
    assert.match(got, why, `${p}: ${got}`);
  }
});

test('an accepted pattern runs in bounded time on an adversarial input', () => {
  const p = '^/api/[a-z]+-[0-9]+$';
  assert.equal(checkRegexSafety(p), undefined);
  const input = `/api/${'a'.repeat(50_000)}!`;
  const start = performance.now();
  new RegExp(p).test(input);
  assert.ok(performance.now() - start < 100);
});

test('the check is fast on the longest pattern allowed', () => {
  const p = '(?:ab|cd)'.repeat(113);
  const start = performance.now();
  checkRegexSafety(p);
  checkRegexSafety('a'.repeat(1024));
  checkRegexSafety('[a-z]*x'.repeat(146));
  assert.ok(performance.now() - start < 100, 'checking stays cheap');
  assert.match(checkRegexSafety('a'.repeat(1025))!, /at most 1024/);
});
