import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { formatLabelSelector, matchLabelMap, matchLabelSelector } from './label-selector.ts';

describe('label selectors', () => {
  it('matches equality maps; an empty map matches everything', () => {
    assert.equal(matchLabelMap({ app: 'web' }, { app: 'web', tier: 'x' }), true);
    assert.equal(matchLabelMap({ app: 'web' }, { app: 'api' }), false);
    assert.equal(matchLabelMap({ app: 'web' }, undefined), false);
    assert.equal(matchLabelMap({}, undefined), true);
  });

  it('matches set-based expressions', () => {
    const sel = { matchLabels: { app: 'web' }, matchExpressions: [
      { key: 'tier', operator: 'In', values: ['a', 'b'] },
      { key: 'canary', operator: 'DoesNotExist' },
      { key: 'env', operator: 'NotIn', values: ['prod'] },
    ] };
    assert.equal(matchLabelSelector(sel, { app: 'web', tier: 'a' }), true);
    assert.equal(matchLabelSelector(sel, { app: 'web', tier: 'c' }), false);
    assert.equal(matchLabelSelector(sel, { app: 'web', tier: 'a', canary: '' }), false);
    assert.equal(matchLabelSelector(sel, { app: 'web', tier: 'b', env: 'prod' }), false);
    assert.equal(matchLabelSelector({ matchExpressions: [{ key: 'x', operator: 'Exists' }] }, { x: '' }), true);
  });

  it('treats a missing selector as nothing and an empty one as everything', () => {
    assert.equal(matchLabelSelector(undefined, { a: 'b' }), false);
    assert.equal(matchLabelSelector({}, { a: 'b' }), true);
  });

  it('formats selectors for list calls', () => {
    assert.equal(
      formatLabelSelector({ matchLabels: { b: '2', a: '1' }, matchExpressions: [{ key: 't', operator: 'In', values: ['y', 'x'] }, { key: 'c', operator: 'DoesNotExist' }] }),
      'a=1,b=2,t in (x,y),!c',
    );
  });
});
