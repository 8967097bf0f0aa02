import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compileLinearRegex } from './regex.ts';

test('RE2-style syntax, full match', () => {
  const cases: [string, string, boolean][] = [
    ['/api/v[0-9]+/.*', '/api/v12/users', true],
    ['/api/v[0-9]+/.*', '/api/vx/users', false],
    ['/api/v[0-9]+/.*', 'x/api/v1/', false],
    ['^/users/\\d{1,3}$', '/users/123', true],
    ['^/users/\\d{1,3}$', '/users/1234', false],
    ['(foo|bar)baz', 'barbaz', true],
    ['(?:ab)*c', 'ababc', true],
    ['(?:ab)*c', 'abac', false],
    ['[^/]+', 'abc', true],
    ['[^/]+', 'a/c', false],
    ['a?b+', 'bbb', true],
    ['\\.json', '.json', true],
    ['x{2,}', 'xxxx', true],
    ['x{2,}', 'x', false],
    ['', '', true],
    ['[a-c\\-]+', 'a-b', true],
  ];
  for (const [re, input, want] of cases) assert.equal(compileLinearRegex(re).test(input), want, `${re} on ${input}`);
});

test('refuses constructs that need backtracking', () => {
  for (const re of ['(a)\\1', '(?=a)', '(?!a)', '(?<=a)', 'a{2000}', '*a', '(a', 'a)', '[a', 'a^b', '\\q']) {
    assert.throws(() => compileLinearRegex(re), (e: Error & { code?: string }) => e.code === 'NM_ERR_PROXY_REGEX_UNSUPPORTED', re);
  }
});

test('catastrophic patterns run in linear time', () => {
  const input = 'a'.repeat(20_000) + '!';
  const t0 = performance.now();
  assert.equal(compileLinearRegex('(a+)+$').test(input), false);
  assert.equal(compileLinearRegex('(a|aa)*b').test(input), false);
  assert.equal(compileLinearRegex('(.*a){12}').test(input), false);
  assert.ok(performance.now() - t0 < 1000, 'took too long');
});
