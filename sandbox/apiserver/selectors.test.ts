/** Label and field selector parsing and matching. */

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { StatusError } from './errors.ts';
import { formatLabelSelector, labelSelectorFromObject, matchFields, matchLabels, parseFieldSelector, parseLabelSelector } from './selectors.ts';

describe('label selectors', () => {
  const labels = { app: 'web', env: 'prod', 'example.com/tier': 'front', n: '5' };
  const m = (s: string): boolean => matchLabels(parseLabelSelector(s), labels);
  it('equality-based', () => {
    assert.ok(m('app=web'));
    assert.ok(m('app==web,env=prod'));
    assert.ok(!m('app=db'));
    assert.ok(m('app!=db'));
    assert.ok(m('missing!=x'), '!= matches objects without the key');
    assert.ok(m('example.com/tier=front'));
  });
  it('set-based', () => {
    assert.ok(m('env in (prod, staging)'));
    assert.ok(!m('env in (dev)'));
    assert.ok(m('env notin (dev)'));
    assert.ok(m('missing notin (dev)'));
    assert.ok(m('app'));
    assert.ok(!m('!app'));
    assert.ok(m('!missing'));
    assert.ok(m('app,env in (prod),!missing'));
    assert.ok(m('n>4') && !m('n<5'));
  });
  it('empty selects everything; malformed is a 400', () => {
    assert.ok(matchLabels(parseLabelSelector(''), undefined));
    assert.throws(() => parseLabelSelector('a in ('), (e: StatusError) => e.code === 400);
    assert.throws(() => parseLabelSelector('a=b=c'), (e: StatusError) => e.code === 400);
    assert.throws(() => parseLabelSelector('-bad=x'), (e: StatusError) => e.code === 400);
  });
  it('LabelSelector objects and formatting', () => {
    const sel = labelSelectorFromObject({ matchLabels: { app: 'a' }, matchExpressions: [{ key: 'env', operator: 'In', values: ['x', 'y'] }, { key: 'gone', operator: 'DoesNotExist' }] });
    assert.equal(formatLabelSelector(sel), 'app=a,env in (x,y),!gone');
    assert.ok(matchLabels(sel, { app: 'a', env: 'y' }));
  });
});

describe('field selectors', () => {
  const supported = new Set(['metadata.name', 'metadata.namespace', 'spec.nodeName', 'status.phase']);
  const pod = { metadata: { name: 'p', namespace: 'default' }, spec: { nodeName: 'node-1' }, status: { phase: 'Running' } };
  it('matches =, ==, != on supported fields', () => {
    assert.ok(matchFields(parseFieldSelector('spec.nodeName=node-1', supported, 'Pod'), pod));
    assert.ok(matchFields(parseFieldSelector('metadata.name==p,status.phase!=Pending', supported, 'Pod'), pod));
    assert.ok(!matchFields(parseFieldSelector('spec.nodeName=node-2', supported, 'Pod'), pod));
    assert.ok(matchFields(parseFieldSelector('spec.nodeName=', supported, 'Pod'), { metadata: {}, spec: {} }), 'empty value matches an absent field');
  });
  it('rejects unsupported fields with 400', () => {
    assert.throws(() => parseFieldSelector('spec.other=x', supported, 'Pod'), (e: StatusError) => e.code === 400 && /field label not supported: spec.other/.test(e.message));
  });
});
