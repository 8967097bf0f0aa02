/**
 * `kubectl apply --dry-run=server` of the rendered deploy/ kustomization against the embedded API server: every
 * object whose kind the server serves must be accepted (schema, defaults, admission). Kinds it does not serve
 * yet are listed as a diagnostic, so the gap is visible rather than silently skipped. Loopback only.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments, stringify } from 'yaml';
import { CRD_DIRECTORY } from '../../crds/index.ts';
import { startApiServer, type ApiServer } from '../../sandbox/apiserver/server.ts';

const DEPLOY = fileURLToPath(new URL('../../deploy/', import.meta.url));

function kubectl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => execFile('/usr/bin/kubectl', args, { timeout: 60_000 }, (err, stdout, stderr) => resolve({ code: err ? 1 : 0, stdout, stderr })));
}

describe('deploy/ against the sandbox API server', () => {
  let dir: string;
  let api: ApiServer;
  let kubeconfig: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'nm-deploy-dry-'));
    api = await startApiServer({ crdDirs: [CRD_DIRECTORY] });
    kubeconfig = join(dir, 'kubeconfig');
    await api.writeKubeconfig(kubeconfig);
  });
  after(async () => {
    await api?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('accepts every served kind with --dry-run=server', async (t) => {
    const rendered = await kubectl(['kustomize', DEPLOY]);
    assert.equal(rendered.code, 0, rendered.stderr);
    const docs = parseAllDocuments(rendered.stdout).map((d) => d.toJSON() as { apiVersion: string; kind: string; metadata: { name: string } });
    const resources = await kubectl(['--kubeconfig', kubeconfig, 'api-resources', '--no-headers', '-o', 'wide']);
    assert.equal(resources.code, 0, resources.stderr);
    const served = new Set(resources.stdout.split('\n').filter(Boolean).map((l) => {
      const cols = l.trim().split(/\s+/);
      // NAME [SHORTNAMES] APIVERSION NAMESPACED KIND VERBS...: find the column that looks like an API version.
      const i = cols.findIndex((c) => /^(v\d|[a-z0-9.-]+\/v\d)/.test(c));
      return `${cols[i]}/${cols[i + 2]}`;
    }));
    const accepted = docs.filter((d) => served.has(`${d.apiVersion}/${d.kind}`));
    const missing = docs.filter((d) => !served.has(`${d.apiVersion}/${d.kind}`));
    t.diagnostic(`not served by the sandbox API server yet (not checked): ${[...new Set(missing.map((d) => `${d.apiVersion} ${d.kind}`))].join(', ') || 'none'}`);
    assert.ok(accepted.some((d) => d.kind === 'CustomResourceDefinition') && accepted.some((d) => d.kind === 'Deployment'), 'the core of the install is checked');
    const file = join(dir, 'served.yaml');
    await writeFile(file, accepted.map((d) => stringify(d)).join('---\n'));
    const r = await kubectl(['--kubeconfig', kubeconfig, 'apply', '--dry-run=server', '-f', file]);
    assert.equal(r.code, 0, `kubectl apply --dry-run=server refused part of deploy/:\n${r.stderr}`);
    for (const d of accepted) assert.match(r.stdout, new RegExp(`${d.metadata.name}.*\\(server dry run\\)`), `${d.kind} ${d.metadata.name} was not applied`);
  });
});
