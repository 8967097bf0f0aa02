/** Drift check: the committed types.generated.ts must equal what the generator makes from the YAML now. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { CRD_DIR, GENERATED_PATH, generateTypes, readCrds } from './generate-types.ts';
import { CRD_FILES, MESH_RESOURCES } from './index.ts';

test('types.generated.ts is up to date with crds/*.yaml (run: node crds/generate-types.ts)', () => {
  const fresh = generateTypes(readCrds(CRD_DIR).map((c) => c.crd));
  const committed = readFileSync(GENERATED_PATH, 'utf8');
  if (fresh !== committed) {
    const a = fresh.split('\n');
    const b = committed.split('\n');
    const line = a.findIndex((l, i) => l !== b[i]);
    assert.fail(`crds/types.generated.ts is stale from line ${line + 1}: expected ${JSON.stringify(a[line])}, found ${JSON.stringify(b[line])}. Run: node crds/generate-types.ts`);
  }
});

test('every CRD file is listed in index.ts and every kind has its coordinates', () => {
  const files = readCrds(CRD_DIR).map((c) => c.file).sort();
  assert.deepEqual([...CRD_FILES].sort(), files);
  const kinds = readCrds(CRD_DIR).map((c) => c.crd.spec.names.kind).sort();
  assert.deepEqual(MESH_RESOURCES.map((r) => r.kind).sort(), kinds);
});

test('the generator refuses one type name for two different shapes', () => {
  const crd = readCrds(CRD_DIR).find((c) => c.crd.spec.names.kind === 'HTTPRoute')!.crd;
  const copy = structuredClone(crd);
  const schema = copy.spec.versions[0]!.schema.openAPIV3Schema;
  const status = schema.properties!['status']!;
  const parentRef = status.properties!['parents']!.items!.properties!['parentRef']!;
  parentRef.properties!['extra'] = { type: 'string', maxLength: 3 };
  assert.throws(() => generateTypes([copy]), /ParentReference is used for different schemas/);
});
