/** Listeners and state: TLS with the server's CA, the unix socket, reuse of stateDir, CRD files, slow watchers. */

import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parse as parseYaml } from 'yaml';
import { startApiServer } from './server.ts';
import { startTestServer } from './testing.ts';

const CRDS = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.files.nodemesh.io}
spec:
  group: files.nodemesh.io
  scope: Cluster
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions:
  - name: v1beta1
    served: true
    storage: false
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, properties: {spec: {type: object, properties: {n: {type: integer}}}}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: not-a-crd}
`;

function get(opts: { socketPath?: string; port?: number; ca?: string; token: string; path: string; tls: boolean }): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = (opts.tls ? httpsRequest : httpRequest)(
      {
        host: '127.0.0.1',
        ...(opts.socketPath ? { socketPath: opts.socketPath } : { port: opts.port }),
        path: opts.path,
        headers: { authorization: `Bearer ${opts.token}` },
        ...(opts.tls ? { ca: opts.ca } : {}),
      },
      (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

describe('listeners and state', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'nm-apiserver-listen-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('serves TLS on TCP and on the unix socket, registers CRD files, and reuses its state on restart', async () => {
    const crdDir = join(dir, 'crds');
    await mkdir(crdDir);
    await writeFile(join(crdDir, 'gadgets.yaml'), CRDS);
    const state = join(dir, 'state');
    const socketPath = join(dir, 'api.sock');
    const logs: string[] = [];
    const a = await startApiServer({ stateDir: state, unixSocketPath: socketPath, crdDirs: [crdDir], logger: (l) => logs.push(l) });
    let port: number;
    try {
      assert.match(a.url, /^https:\/\/127\.0\.0\.1:\d+$/);
      port = Number(new URL(a.url).port);
      const tcp = await get({ port, ca: a.caPem!, token: a.token, path: '/apis/files.nodemesh.io/v1/gadgets', tls: true });
      assert.equal(tcp.status, 200, tcp.body);
      const unix = await get({ socketPath, ca: a.caPem!, token: a.token, path: '/version', tls: true });
      assert.equal(unix.status, 200);
      const served = await get({ socketPath, ca: a.caPem!, token: a.token, path: '/apis/files.nodemesh.io/v1beta1', tls: true });
      assert.equal(served.status, 200, 'every served version is served');
      assert.ok(logs.some((l) => /not a CustomResourceDefinition/.test(l)));
      const kc = parseYaml(await readFile(join(state, 'kubeconfig'), 'utf8')) as { clusters: { name: string; cluster: { server: string; 'certificate-authority-data': string } }[]; users: { user: { token: string } }[]; 'current-context': string };
      assert.equal(kc['current-context'], 'nodemesh-sandbox');
      assert.equal(kc.clusters[0]!.cluster.server, a.url);
      assert.equal(Buffer.from(kc.clusters[0]!.cluster['certificate-authority-data'], 'base64').toString(), a.caPem);
      assert.equal(kc.users[0]!.user.token, a.token);
    } finally {
      await a.close();
    }
    const b = await startApiServer({ stateDir: state, port });
    try {
      assert.equal(b.caPem, a.caPem, 'the CA is reused');
      assert.equal(b.token, a.token, 'the token is reused, so old kubeconfigs keep working');
    } finally {
      await b.close();
    }
  });

  it('refuses to start on a CRD file with an invalid CRD, naming the file', async () => {
    const bad = join(dir, 'bad');
    await mkdir(bad);
    await writeFile(join(bad, 'x.yaml'), 'apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: wrong.name.io}\nspec: {group: a.io, scope: Namespaced, names: {plural: xs, kind: X}, versions: []}\n');
    await assert.rejects(startApiServer({ tls: false, crdDirs: [bad] }), (e: Error & { code?: string }) => e.code === 'NM_ERR_APISERVER_CRD_FILE' && /x\.yaml/.test(e.message) && /metadata\.name/.test(e.message));
  });

  it('closes a watcher that does not read instead of buffering without bound; others keep up', async () => {
    const t = await startTestServer({ watchMaxBufferedBytes: 256 * 1024 });
    try {
      const url = new URL(`${t.server.url}/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=0`);
      let slowRes: IncomingMessage | undefined;
      const slowClosed = new Promise<void>((resolve) => {
        const req = httpRequest({ host: url.hostname, port: url.port, path: url.pathname + url.search, headers: { authorization: `Bearer ${t.server.token}` } }, (res) => {
          slowRes = res;
          res.pause(); // never read
          res.on('close', () => resolve());
          res.on('error', () => resolve());
        });
        req.on('error', () => resolve());
        req.end();
      });
      const fast = await t.watch('/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=0');
      const payload = 'x'.repeat(32 * 1024);
      const N = 600;
      for (let i = 0; i < N; i++) {
        const r = await t.request('POST', '/api/v1/namespaces/default/configmaps', { metadata: { name: `big-${i}` }, data: { payload } });
        assert.equal(r.status, 201);
      }
      await fast.waitFor((e) => e.filter((x) => x.type === 'ADDED').length >= N, 20_000);
      assert.ok(
        t.logs.some((l) => /closing a watcher with \d+ unread bytes/.test(l)),
        `the server closed the slow watcher (logs: ${t.logs.join(' | ')})`,
      );
      // Once the client reads again, its stream ends early: it got only part of the events.
      let received = 0;
      slowRes!.on('data', (c: Buffer) => (received += c.length));
      slowRes!.resume();
      await Promise.race([slowClosed, new Promise((_, reject) => setTimeout(() => reject(new Error('the slow watcher stream did not end')), 10_000))]);
      assert.ok(received < N * payload.length, 'the slow watcher did not get everything buffered for it');
      fast.close();
    } finally {
      await t.close();
    }
  });
});
