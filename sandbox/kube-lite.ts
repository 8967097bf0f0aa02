/**
 * A tiny read-only REST client from a kubeconfig, for CLI paths that must start fast (`sandbox exec`):
 * @kubernetes/client-node takes seconds to load, node:https takes milliseconds.
 */
import { readFile } from 'node:fs/promises';
import { request } from 'node:https';
import { parse as parseYaml } from 'yaml';

/** How to reach and authenticate to the API server of a kubeconfig's current context. */
export type ApiAccess = { server: string; ca?: string; token?: string; cert?: string; key?: string; insecure: boolean };

type KubeconfigDoc = {
  'current-context'?: string;
  contexts?: { name: string; context: { cluster: string; user: string } }[];
  clusters?: { name: string; cluster: { server: string; 'certificate-authority-data'?: string; 'insecure-skip-tls-verify'?: boolean } }[];
  users?: { name: string; user: { token?: string; 'client-certificate-data'?: string; 'client-key-data'?: string } }[];
};

/** The access of a kubeconfig text's current context (pure). */
export function parseKubeconfigAccess(text: string): ApiAccess {
  const doc = parseYaml(text) as KubeconfigDoc;
  const ctx = doc.contexts?.find((c) => c.name === doc['current-context']) ?? doc.contexts?.[0];
  const cluster = doc.clusters?.find((c) => c.name === ctx?.context.cluster) ?? doc.clusters?.[0];
  const user = doc.users?.find((u) => u.name === ctx?.context.user) ?? doc.users?.[0];
  if (!cluster?.cluster.server) throw new Error('kubeconfig has no cluster with a server');
  const b64 = (v: string | undefined): string | undefined => (v ? Buffer.from(v, 'base64').toString('utf8') : undefined);
  return {
    server: cluster.cluster.server,
    ca: b64(cluster.cluster['certificate-authority-data']),
    insecure: cluster.cluster['insecure-skip-tls-verify'] === true,
    token: user?.user.token,
    cert: b64(user?.user['client-certificate-data']),
    key: b64(user?.user['client-key-data']),
  };
}

/** GETs a path as JSON; resolves with the HTTP status and the parsed body. */
export async function getJson(kubeconfigPath: string, path: string): Promise<{ status: number; body: unknown }> {
  const a = parseKubeconfigAccess(await readFile(kubeconfigPath, 'utf8'));
  const url = new URL(path, a.server);
  return new Promise((resolve, reject) => {
    const req = request(url, {
      method: 'GET', ca: a.ca, cert: a.cert, key: a.key, rejectUnauthorized: !a.insecure, timeout: 10_000,
      headers: { accept: 'application/json', ...(a.token ? { authorization: `Bearer ${a.token}` } : {}) },
    }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (d: string) => { text += d; });
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as unknown });
        } catch {
          resolve({ status: res.statusCode ?? 0, body: text });
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url.href} timed out`)));
    req.on('error', reject);
    req.end();
  });
}
