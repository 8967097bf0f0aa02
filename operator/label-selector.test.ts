import assert from 'node:assert/strict';
import test from 'node:test';
import { matchesSelector, validateSelector } from './label-selector.ts';

test('matchLabels must be a map: an array (which Object.entries would read as keys "0", "1") names the field', () => {
  assert.deepEqual(validateSelector({ matchLabels: ['app', 'echo'] }, 'spec.selector'), [{ path: 'spec.selector.matchLabels', message: 'must be a map of label keys to values' }]);
  assert.deepEqual(validateSelector({ matchLabels: null }, 'spec.selector').map((p) => p.path), ['spec.selector.matchLabels']);
  assert.deepEqual(validateSelector({ matchLabels: { app: 'echo' } }, 'spec.selector'), []);
});

test('a valid selector matches by every label it names', () => {
  assert.ok(matchesSelector({ matchLabels: { app: 'echo' } }, { app: 'echo', tier: 'web' }));
  assert.ok(!matchesSelector({ matchLabels: { app: 'echo' } }, { app: 'web' }));
});
