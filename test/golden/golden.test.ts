/**
 * Golden scenarios: each test/golden/<scenario>/input.yaml (plus an optional previous.yaml, compiled first
 * to give the last good forms) goes through compileMesh → computeNodeState for every node →
 * computeStatuses, and the result must equal expected/*.yaml. UPDATE_GOLDEN=1 rewrites the expected files.
 * A "GoldenScenario" document in input.yaml sets options: trustDomain, now, unwrittenNodes (nodes whose
 * NodeState the fake writer has not stored yet, to show Programmed=False).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments, stringify } from 'yaml';
import { CRD_DIRECTORY, NODESTATE_MAX_BYTES, type NodeState } from '../../crds/index.ts';
import { readCrds } from '../../crds/generate-types.ts';
import { validateObject } from '../../crds/validate-instance.ts';
import { compileMesh } from '../../operator/compile-mesh.ts';
import { computeNodeState, hashOfSpec } from '../../operator/compute-node-state.ts';
import { computeStatuses } from '../../operator/compute-status.ts';
import { buildSnapshot } from '../../operator/snapshot.ts';

const ROOT = fileURLToPath(new URL('.', import.meta.url));
const UPDATE = process.env['UPDATE_GOLDEN'] === '1';
const CRDS = new Map(readCrds(CRD_DIRECTORY).map(({ crd }) => [crd.spec.names.kind, crd]));

/** Fixtures and outputs must stay inside the CRD schemas (the API server would refuse them otherwise). */
function assertSchemaValid(object: unknown, where: string): void {
  const kind = (object as { kind?: string }).kind ?? '';
  const crd = CRDS.get(kind);
  if (!crd) return;
  const problems = validateObject(crd, object as Record<string, unknown>);
  assert.deepEqual(problems, [], `${where}: ${kind} ${(object as { metadata?: { name?: string } }).metadata?.name} violates its CRD schema`);
}

interface ScenarioOptions {
  kind: 'GoldenScenario';
  description?: string;
  trustDomain?: string;
  now?: string;
  unwrittenNodes?: string[];
}

function load(file: string): { objects: unknown[]; options: ScenarioOptions } {
  const docs = parseAllDocuments(readFileSync(file, 'utf8'));
  const objects: unknown[] = [];
  let options: ScenarioOptions = { kind: 'GoldenScenario' };
  for (const d of docs) {
    if (d.errors.length > 0) throw new Error(`${file}: ${d.errors[0]!.message}`);
    const o = d.toJS() as { kind?: string } | null;
    if (!o) continue;
    if (o.kind === 'GoldenScenario') options = o as ScenarioOptions;
    else objects.push(o);
  }
  return { objects, options };
}

/** Runs one scenario and renders its outputs as file name → YAML text. */
function run(dir: string): Map<string, string> {
  const { objects, options } = load(join(dir, 'input.yaml'));
  const snapOptions = { trustDomain: options.trustDomain ?? 'cluster.local' };
  let lastGood = new Map();
  if (existsSync(join(dir, 'previous.yaml'))) {
    const prev = load(join(dir, 'previous.yaml'));
    lastGood = compileMesh(buildSnapshot(prev.objects, snapOptions)).lastGood;
  }
  for (const o of objects) assertSchemaValid(o, `${dir}/input.yaml`);
  const snapshot = buildSnapshot(objects, snapOptions);
  const compiled = compileMesh(snapshot, lastGood);
  const nodes = snapshot.nodes.map((n) => n.metadata!.name!).sort();
  const states: NodeState[] = nodes.flatMap((n) => computeNodeState(snapshot, n, compiled));
  for (const s of states) {
    assert.equal(s.spec.contentHash, hashOfSpec(s.spec), `${s.metadata!.name}: contentHash matches its content`);
    assert.ok(JSON.stringify(s).length <= NODESTATE_MAX_BYTES, `${s.metadata!.name} fits in 512 KiB`);
    assertSchemaValid(s, 'computed NodeState');
  }
  const unwritten = new Set(options.unwrittenNodes ?? []);
  const written = states.filter((s) => !unwritten.has(s.spec.nodeName));
  const statuses = computeStatuses(snapshot, compiled, written, { now: options.now ?? '2026-11-21T12:00:00Z' });
  for (const st of statuses) {
    const object = { apiVersion: 'x', kind: st.kind, metadata: {}, spec: (objects.find((o) => (o as { kind?: string; metadata?: { name?: string; namespace?: string } }).kind === st.kind && (o as { metadata: { name: string } }).metadata.name === st.name && (o as { metadata: { namespace: string } }).metadata.namespace === st.namespace) as { spec: unknown }).spec, status: st.status };
    assertSchemaValid(object, 'computed status');
  }
  // Determinism: a second run from scratch gives byte-identical output.
  const again = compileMesh(snapshot, lastGood);
  assert.deepEqual(nodes.flatMap((n) => computeNodeState(snapshot, n, again)), states, 'computeNodeState is deterministic');

  const out = new Map<string, string>();
  for (const s of states) out.set(`nodestate-${s.metadata!.name}.yaml`, stringify(s, { lineWidth: 0, aliasDuplicateObjects: false }));
  const statusDocs = statuses.map((s) => stringify({ kind: s.kind, namespace: s.namespace, name: s.name, status: s.status }, { lineWidth: 0, aliasDuplicateObjects: false }));
  out.set('status.yaml', statusDocs.join('---\n'));
  return out;
}

const scenarios = readdirSync(ROOT, { withFileTypes: true })
  .filter((d) => d.isDirectory() && existsSync(join(ROOT, d.name, 'input.yaml')))
  .map((d) => d.name)
  .sort();

test('golden scenarios exist', () => {
  assert.ok(scenarios.length >= 8, `found ${scenarios.length} scenarios`);
});

for (const name of scenarios) {
  test(`golden: ${name}`, () => {
    const dir = join(ROOT, name);
    const expectedDir = join(dir, 'expected');
    const actual = run(dir);
    if (UPDATE) {
      rmSync(expectedDir, { recursive: true, force: true });
      mkdirSync(expectedDir, { recursive: true });
      for (const [file, text] of actual) writeFileSync(join(expectedDir, file), text);
      return;
    }
    assert.ok(existsSync(expectedDir), `${name}: no expected/ yet; run with UPDATE_GOLDEN=1 and review the files`);
    const expectedFiles = readdirSync(expectedDir).filter((f) => f.endsWith('.yaml')).sort();
    assert.deepEqual([...actual.keys()].sort(), expectedFiles, `${name}: the set of output files`);
    for (const [file, text] of actual) {
      assert.equal(text, readFileSync(join(expectedDir, file), 'utf8'), `${name}/expected/${file} differs (UPDATE_GOLDEN=1 rewrites it)`);
    }
  });
}
