/** Structural checks on every CRD YAML: what a real API server would refuse, plus our own bounds rules. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CRD_DIR, readCrds, type SchemaNode } from './generate-types.ts';

const ALLOWED_KEYS = new Set([
  'type', 'description', 'properties', 'required', 'items', 'additionalProperties', 'enum', 'default', 'format',
  'minimum', 'maximum', 'minLength', 'maxLength', 'pattern', 'minItems', 'maxItems', 'minProperties',
  'maxProperties', 'nullable', 'x-kubernetes-validations', 'x-kubernetes-list-type', 'x-kubernetes-list-map-keys',
  'x-kubernetes-int-or-string', 'x-kubernetes-preserve-unknown-fields', 'x-kubernetes-map-type',
]);
const TYPES = new Set(['string', 'integer', 'number', 'boolean', 'array', 'object']);
const CEL_IDENTIFIERS = new Set(['self', 'has', 'size', 'true', 'false', 'null', 'in']);
const CEL_TOKEN = /\s+|'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|\d+|[A-Za-z_][A-Za-z0-9_]*|&&|\|\||==|!=|<=|>=|[<>!()[\],.]/y;

/** Checks a CEL rule stays in the simple subset and names only fields that exist under `node`. */
function checkCel(rule: string, node: SchemaNode, where: string, problems: string[]): void {
  CEL_TOKEN.lastIndex = 0;
  const tokens: string[] = [];
  while (CEL_TOKEN.lastIndex < rule.length) {
    const at = CEL_TOKEN.lastIndex;
    const m = CEL_TOKEN.exec(rule);
    if (!m) {
      problems.push(`${where}: CEL rule ${JSON.stringify(rule)} has an unsupported token at ${at} (allowed: has, size, self.x, in, comparisons, &&, ||, !)`);
      return;
    }
    if (m[0].trim() !== '') tokens.push(m[0]);
  }
  let chain: SchemaNode | undefined;
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    if (!/^[A-Za-z_]/.test(t)) {
      if (t !== '.') chain = undefined;
      continue;
    }
    if (tokens[i - 1] === '.') {
      const next: SchemaNode | undefined = chain?.properties?.[t];
      if (!chain || !next) problems.push(`${where}: CEL rule ${JSON.stringify(rule)} names ${t}, which is not a field here`);
      chain = next;
      continue;
    }
    if (!CEL_IDENTIFIERS.has(t)) problems.push(`${where}: CEL rule ${JSON.stringify(rule)} uses ${t}, outside the simple subset`);
    chain = t === 'self' ? node : undefined;
  }
}

/** Walks one schema node, collecting every structural or bounds problem with its path. */
function checkNode(node: SchemaNode, path: string, problems: string[]): void {
  for (const key of Object.keys(node)) {
    if (!ALLOWED_KEYS.has(key)) problems.push(`${path}: key ${key} is not allowed in a structural schema`);
  }
  const open = node['x-kubernetes-int-or-string'] === true || node['x-kubernetes-preserve-unknown-fields'] === true;
  if (!node.type && !open) problems.push(`${path}: no type`);
  if (node.type && !TYPES.has(node.type)) problems.push(`${path}: unknown type ${node.type}`);
  if (node.properties && node.additionalProperties !== undefined) problems.push(`${path}: properties and additionalProperties together`);
  for (const r of node.required ?? []) {
    if (!node.properties?.[r]) problems.push(`${path}: required field ${r} is not a property`);
  }
  const min = (a: string, b: string): void => {
    if (typeof node[a] === 'number' && typeof node[b] === 'number' && (node[a] as number) > (node[b] as number)) {
      problems.push(`${path}: ${a} > ${b}`);
    }
  };
  min('minimum', 'maximum');
  min('minLength', 'maxLength');
  min('minItems', 'maxItems');
  min('minProperties', 'maxProperties');
  if (typeof node.pattern === 'string') {
    try {
      new RegExp(node.pattern);
    } catch (err) {
      problems.push(`${path}: pattern does not compile: ${String(err)}`);
    }
  }
  const fits = (v: unknown): boolean => {
    switch (node.type) {
      case 'string': return typeof v === 'string' && (typeof node.pattern !== 'string' || new RegExp(node.pattern).test(v));
      case 'integer': return Number.isInteger(v);
      case 'number': return typeof v === 'number';
      case 'boolean': return typeof v === 'boolean';
      case 'array': return Array.isArray(v);
      case 'object': return typeof v === 'object' && v !== null && !Array.isArray(v);
      default: return true;
    }
  };
  for (const v of node.enum ?? []) {
    if (!fits(v)) problems.push(`${path}: enum value ${JSON.stringify(v)} does not fit type ${node.type}`);
  }
  if (node.default !== undefined) {
    if (!fits(node.default)) problems.push(`${path}: default does not fit the schema`);
    if (node.enum && !node.enum.includes(node.default)) problems.push(`${path}: default is not in enum`);
  }
  switch (node.type) {
    case 'array':
      if (!node.items || Array.isArray(node.items)) problems.push(`${path}: an array needs one items schema`);
      if (typeof node['maxItems'] !== 'number') problems.push(`${path}: array without maxItems`);
      if (node['x-kubernetes-list-type'] === 'map') {
        const keys = node['x-kubernetes-list-map-keys'] as string[] | undefined;
        if (!keys?.length) problems.push(`${path}: list-type map without list-map-keys`);
        for (const k of keys ?? []) {
          const item = node.items;
          if (!item?.properties?.[k]) problems.push(`${path}: list-map key ${k} is not an item property`);
          else if (!item.required?.includes(k) && item.properties[k]!.default === undefined) {
            problems.push(`${path}: list-map key ${k} must be required or defaulted`);
          }
        }
      }
      if (node.items) checkNode(node.items, `${path}[]`, problems);
      break;
    case 'string':
      if (typeof node['maxLength'] !== 'number' && !node.enum) problems.push(`${path}: string without maxLength or enum`);
      break;
    case 'object':
      if (node.additionalProperties !== undefined && typeof node.additionalProperties === 'object') {
        if (typeof node['maxProperties'] !== 'number') problems.push(`${path}: map without maxProperties`);
        checkNode(node.additionalProperties, `${path}.*`, problems);
      }
      break;
  }
  for (const [name, child] of Object.entries(node.properties ?? {})) checkNode(child, `${path}.${name}`, problems);
  const rules = (node['x-kubernetes-validations'] ?? []) as Array<{ rule: string; message?: string }>;
  for (const r of rules) {
    if (!r.message) problems.push(`${path}: CEL rule ${JSON.stringify(r.rule)} has no message`);
    checkCel(r.rule, node, path, problems);
  }
}

for (const { file, crd } of readCrds(CRD_DIR)) {
  test(`${file} is a structurally valid CRD`, () => {
    const problems: string[] = [];
    const { group, names, scope, versions } = crd.spec;
    assert.equal(crd.apiVersion, 'apiextensions.k8s.io/v1');
    assert.equal(crd.kind, 'CustomResourceDefinition');
    assert.equal(crd.metadata.name, `${names.plural}.${group}`);
    assert.equal(file, `${crd.metadata.name}.yaml`);
    assert.match(names.kind, /^[A-Z][A-Za-z]+$/);
    assert.equal(names.listKind, `${names.kind}List`);
    assert.equal(names.singular, names.kind.toLowerCase());
    assert.ok(['Namespaced', 'Cluster'].includes(scope));
    assert.equal(versions.filter((v) => v.storage).length, 1, 'exactly one storage version');
    if (group === 'nodemesh.io') assert.ok(names.shortNames?.length, 'our kinds have short names');
    for (const v of versions) {
      assert.ok(v.served, `${v.name} is served`);
      const root = v.schema.openAPIV3Schema;
      assert.equal(root.type, 'object');
      assert.deepEqual(root.properties?.['metadata'], { type: 'object' }, 'metadata stays the plain ObjectMeta');
      assert.ok(root.properties?.['spec'], 'a spec');
      if (root.properties?.['status']) assert.ok(v.subresources?.status, 'a status field comes with the status subresource');
      if (root.properties?.['status'] && group === 'nodemesh.io') {
        assert.ok(root.properties['status'].properties?.['observedGeneration'], 'status.observedGeneration');
        assert.ok(root.properties['status'].properties?.['conditions'], 'status.conditions');
      }
      for (const c of v.additionalPrinterColumns ?? []) {
        assert.match(c.jsonPath, /^\./, `printer column ${c.name}`);
        assert.ok(['string', 'integer', 'number', 'boolean', 'date'].includes(c.type), `printer column ${c.name} type`);
      }
      checkNode(root, `${names.kind}`, problems);
    }
    assert.deepEqual(problems, []);
  });
}

test('the checker catches what it must', () => {
  const problems: string[] = [];
  checkNode({
    type: 'object',
    properties: {
      a: { type: 'array', items: { type: 'string', maxLength: 3 } },
      b: { type: 'string' },
      c: { properties: {} },
      d: { type: 'object', properties: { x: { type: 'string', maxLength: 1 } }, additionalProperties: { type: 'string' } },
      e: { type: 'object', properties: { n: { type: 'integer' } }, 'x-kubernetes-validations': [{ rule: 'self.m > 1', message: 'm' }, { rule: 'self.n > 1 ? true : false', message: 'n' }] },
    },
  }, 'T', problems);
  assert.ok(problems.some((p) => p.includes('T.a: array without maxItems')));
  assert.ok(problems.some((p) => p.includes('T.b: string without maxLength')));
  assert.ok(problems.some((p) => p.includes('T.c: no type')));
  assert.ok(problems.some((p) => p.includes('T.d: properties and additionalProperties')));
  assert.ok(problems.some((p) => p.includes('names m, which is not a field')));
  assert.ok(problems.some((p) => p.includes('unsupported token')));
});
