/** Structural schema pruning, defaulting and validation messages with field paths. */

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { JsonObject } from '../json.ts';
import { applyDefaults, compileSchema, pruneObject, validateCustomObject } from './openapi.ts';

const schema: JsonObject = {
  type: 'object',
  properties: {
    spec: {
      type: 'object',
      required: ['mode'],
      maxProperties: 6,
      'x-kubernetes-validations': [
        { rule: 'self.mode != "DISABLED" || !has(self.port)', message: 'port must not be set when mode is DISABLED' },
        { rule: 'self.mode.quantity() > 1' },
      ],
      properties: {
        mode: { type: 'string', enum: ['STRICT', 'PERMISSIVE', 'DISABLED'] },
        port: { type: 'integer', minimum: 1, maximum: 65535 },
        name: { type: 'string', minLength: 2, maxLength: 5, pattern: '^[a-z]+$' },
        target: { 'x-kubernetes-int-or-string': true },
        retries: { type: 'integer', default: 3 },
        nullable: { type: 'string', nullable: true },
        free: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true },
        headers: { type: 'object', additionalProperties: { type: 'string', maxLength: 3 } },
        rules: {
          type: 'array',
          minItems: 1,
          maxItems: 2,
          'x-kubernetes-list-type': 'map',
          'x-kubernetes-list-map-keys': ['name'],
          items: {
            type: 'object',
            required: ['name'],
            properties: {
              name: { type: 'string' },
              timeouts: { type: 'object', properties: { request: { type: 'string', pattern: '^[0-9]+(ms|s)$' } } },
            },
            'x-kubernetes-validations': [{ rule: 'self.name.startsWith("r")', message: 'rule names start with r', fieldPath: '.name' }],
          },
        },
      },
    },
  },
};

function check(obj: JsonObject, old?: JsonObject): { fields: string[]; messages: string[]; skipped: string[] } {
  const compiled = compileSchema(schema);
  pruneObject(obj, schema);
  applyDefaults(obj, schema);
  const errs = validateCustomObject(compiled, obj, old);
  return { fields: errs.map((e) => e.field), messages: errs.map((e) => `${e.field}: ${e.message}`), skipped: compiled.skipped };
}

describe('OpenAPI schema validation', () => {
  it('reports enum, type, bounds, length, pattern and required errors with field paths', () => {
    const r = check({ spec: { mode: 'FOO', port: 70000, name: 'ABCDEFG', rules: [{ name: 'r1', timeouts: { request: '5m' } }, {}] } });
    assert.deepEqual(r.messages, [
      'spec.mode: Unsupported value: "FOO": supported values: "STRICT", "PERMISSIVE", "DISABLED"',
      'spec.port: Invalid value: 70000: spec.port in body should be less than or equal to 65535',
      'spec.name: Too long: may not be more than 5 bytes',
      "spec.name: Invalid value: \"ABCDEFG\": spec.name in body should match '^[a-z]+$'",
      "spec.rules[0].timeouts.request: Invalid value: \"5m\": spec.rules[0].timeouts.request in body should match '^[0-9]+(ms|s)$'",
      'spec.rules[1].name: Required value',
      ': some validation rules were not checked because the object was invalid; correct the existing errors to complete validation',
    ]);
  });
  it('checks types, int-or-string, nullable, additionalProperties, list sizes and map-list keys', () => {
    assert.deepEqual(check({ spec: { mode: 'STRICT', port: 'x' } }).messages.slice(0, 1), ['spec.port: Invalid value: "string": spec.port in body must be of type integer: "string"']);
    assert.deepEqual(check({ spec: { mode: 'STRICT', target: 'http', nullable: null } }).messages, []);
    assert.deepEqual(check({ spec: { mode: 'STRICT', target: 1.5 } }).fields[0], 'spec.target');
    assert.deepEqual(check({ spec: { mode: 'STRICT', headers: { a: 'long' } } }).fields[0], 'spec.headers[a]');
    assert.deepEqual(check({ spec: { mode: 'STRICT', rules: [] } }).messages, ['spec.rules: Invalid value: 0: spec.rules in body should have at least 1 items']);
    assert.deepEqual(check({ spec: { mode: 'STRICT', rules: [{ name: 'ra' }, { name: 'rb' }, { name: 'rc' }] } }).messages[0], 'spec.rules: Too many: 3: must have at most 2 items');
    assert.deepEqual(check({ spec: { mode: 'STRICT', rules: [{ name: 'ra' }, { name: 'ra' }] } }).messages, ['spec.rules[1]: Duplicate value: {"name":"ra"}']);
    assert.deepEqual(check({ spec: {} }).messages[0], 'spec.mode: Required value');
  });
  it('prunes unknown fields (except under preserve-unknown-fields) and applies defaults', () => {
    const obj: JsonObject = { apiVersion: 'x/v1', kind: 'X', metadata: { name: 'a', bogus: 1 }, spec: { mode: 'STRICT', extra: 1, free: { any: { thing: 1 } } }, top: 1 };
    const unknown = pruneObject(obj, schema);
    assert.deepEqual(unknown.sort(), ['metadata.bogus', 'spec.extra', 'top']);
    applyDefaults(obj, schema);
    assert.deepEqual(obj, { apiVersion: 'x/v1', kind: 'X', metadata: { name: 'a' }, spec: { mode: 'STRICT', free: { any: { thing: 1 } }, retries: 3 } });
  });
  it('runs CEL rules with their field paths and messages; unsupported rules are skipped and reported', () => {
    const r = check({ spec: { mode: 'DISABLED', port: 80, rules: [{ name: 'x1' }] } });
    assert.deepEqual(r.messages, ['spec.rules[0].name: Invalid value: "object": rule names start with r', 'spec: Invalid value: "object": port must not be set when mode is DISABLED']);
    assert.equal(r.skipped.length, 1);
    assert.match(r.skipped[0]!, /self\.mode\.quantity\(\) > 1.*not supported/);
  });
});
