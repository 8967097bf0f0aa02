/**
 * The agent's client of the operator's CA signing service: `createCaClient(...)` gives the
 * `requestCertificate(csrPem, identity)` that agent/certs' CertManager takes.
 *
 * - HTTPS (TLS 1.3) to the operator, whose certificate must chain to the mesh trust bundle (ConfigMap
 *   nodemesh-system/nodemesh-trust-bundle, key ca.crt) and carry exactly one URI SAN: the operator's SPIFFE ID
 *   (`spiffe://<td>/ns/nodemesh-system/sa/nodemesh-operator`), read from the certificate structure.
 * - Authenticated with a bearer token: the agent ServiceAccount's token bound to this node, audience
 *   `nodemesh-ca` (a function may supply a fresh one per request, since bound tokens expire).
 * - The operator answers 200 with the chain, 401 (token), 403 with a reason code (e.g. pod_on_other_node),
 *   400 (bad CSR), 503 (not ready / API server unreachable; retryable).
 */
import { createHash } from 'node:crypto';
import { request } from 'node:https';
import type { PeerCertificate } from 'node:tls';
import type { RequestCertificate, SignedCertificate } from './certs/cert-manager.ts';
import { CertsError } from './certs/errors.ts';
import type { WorkloadIdentity } from './certs/workload-key.ts';
import * as x509 from './certs/x509.ts';

/** Where and how to reach the CA. */
export interface CaClientOptions {
  /** Base URL of the signing service, e.g. https://10.200.0.11:15012. */
  url: string;
  /** Bearer token (node-bound agent token), or a function giving the current one. */
  token: string | (() => string | Promise<string>);
  /** This node's name; the operator checks it against the token's node binding. */
  nodeName: string;
  /** PEM trust bundle (roots and intermediates), or a function giving the current one. */
  caPem: string | (() => string);
  /** The SPIFFE ID the server must present; default: the operator's, in any trust domain of the bundle. */
  serverSpiffeId?: string;
  /** Per-request deadline. Default 10 s. */
  timeoutMs?: number;
}

/** A refused or failed signing request. `status` 0 means no HTTP answer (network, TLS, timeout). */
export class CaRequestError extends CertsError {
  readonly status: number;
  /** The operator's reason code (pod_on_other_node, unauthenticated, ...), when it gave one. */
  readonly reasonCode: string | undefined;
  /** Worth retrying later (network, 5xx, 429); a 4xx refusal will not change by itself. */
  readonly retryable: boolean;
  constructor(message: string, status: number, reasonCode?: string, options?: { cause?: unknown }) {
    super('NM_ERR_CERTS_SIGNER_FAILED', message, options);
    this.name = 'CaRequestError';
    this.status = status;
    this.reasonCode = reasonCode;
    this.retryable = status === 0 || status >= 500 || status === 429;
  }
}

const OPERATOR_ID = /^spiffe:\/\/[a-z0-9._-]+\/ns\/nodemesh-system\/sa\/nodemesh-operator$/;

/** The URI SANs of a DER certificate, parsed structurally. */
function uriSans(raw: Buffer): string[] {
  const cert = new x509.X509Certificate(raw);
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  return (san?.names.items ?? []).filter((n) => n.type === 'url').map((n) => n.value);
}

/** Server identity check replacing the host-name check: exactly one URI SAN, the expected SPIFFE ID. */
export function checkOperatorIdentity(cert: PeerCertificate, expected?: string): Error | undefined {
  let uris: string[];
  try {
    uris = uriSans(cert.raw);
  } catch (err) {
    return new Error(`CA server certificate does not parse: ${(err as Error).message}`);
  }
  if (uris.length !== 1) return new Error(`CA server certificate has ${uris.length} URI SANs; expected exactly one SPIFFE ID`);
  const id = uris[0]!;
  const ok = expected ? id === expected : OPERATOR_ID.test(id);
  return ok ? undefined : new Error(`CA server presents ${id}, not ${expected ?? 'the nodemesh operator (spiffe://<td>/ns/nodemesh-system/sa/nodemesh-operator)'}`);
}

/** POSTs JSON to the CA service (TLS 1.3, operator identity checked, bearer token); status 0 never returned: rejects instead. */
async function postToCa(o: CaClientOptions, base: URL, path: string, payload: unknown): Promise<{ status: number; text: string }> {
  const token = typeof o.token === 'function' ? await o.token() : o.token;
  const ca = typeof o.caPem === 'function' ? o.caPem() : o.caPem;
  const body = JSON.stringify(payload);
  return new Promise<{ status: number; text: string }>((resolve, reject) => {
    const req = request(
      new URL(path, base),
      {
        method: 'POST',
        ca,
        minVersion: 'TLSv1.3',
        checkServerIdentity: (_host, cert) => checkOperatorIdentity(cert, o.serverSpiffeId),
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), authorization: `Bearer ${token}` },
        timeout: o.timeoutMs ?? 10_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size <= 1024 * 1024) chunks.push(c);
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${o.timeoutMs ?? 10_000} ms`)));
    req.on('error', reject);
    req.end(body);
  });
}

function baseUrlOf(o: CaClientOptions): URL {
  const base = new URL(o.url);
  if (base.protocol !== 'https:') throw new CertsError('NM_ERR_CERTS_SIGNER_FAILED', `CA url ${o.url}: must be https`);
  return base;
}

/** Makes the `requestCertificate` function for CertManager. */
export function createCaClient(o: CaClientOptions): RequestCertificate {
  const base = baseUrlOf(o);
  return async (csrPem: string, identity: WorkloadIdentity): Promise<SignedCertificate> => {
    const who = `${identity.namespace}/${identity.serviceAccount}`;
    const { status, text } = await postToCa(o, base, '/v1/certificates', { csr: csrPem, namespace: identity.namespace, serviceAccount: identity.serviceAccount, nodeName: o.nodeName }).catch((err: unknown) => {
      throw new CaRequestError(`certificate for ${who}: CA ${base.origin} unreachable: ${(err as Error).message}`, 0, undefined, { cause: err });
    });
    let parsed: { certChainPem?: unknown; notAfter?: unknown; code?: unknown; message?: unknown } = {};
    try {
      parsed = JSON.parse(text) as typeof parsed;
    } catch {
      // handled below
    }
    if (status !== 200) {
      const code = typeof parsed.code === 'string' ? parsed.code : undefined;
      const msg = typeof parsed.message === 'string' ? parsed.message : text.slice(0, 200);
      throw new CaRequestError(`certificate for ${who}: CA answered ${status}${code ? ` ${code}` : ''}: ${msg}`, status, code);
    }
    if (typeof parsed.certChainPem !== 'string') throw new CaRequestError(`certificate for ${who}: CA answer has no certChainPem`, status);
    return { certChainPem: parsed.certChainPem, ...(typeof parsed.notAfter === 'string' ? { notAfter: parsed.notAfter } : {}) };
  };
}

/**
 * Makes the function that tells the operator which trust bundle this node's proxy serves (SHA-256 fingerprints of
 * every certificate in it). The CA rotation controller switches the issuer only once every live node reports the
 * new root and intermediate, so a new-chain certificate never meets a proxy that would refuse it.
 */
export function createBundleReporter(o: CaClientOptions): (fingerprints: readonly string[]) => Promise<void> {
  const base = baseUrlOf(o);
  return async (fingerprints) => {
    const { status, text } = await postToCa(o, base, '/v1/trust-bundle/report', { nodeName: o.nodeName, fingerprints }).catch((err: unknown) => {
      throw new CaRequestError(`trust bundle report: CA ${base.origin} unreachable: ${(err as Error).message}`, 0, undefined, { cause: err });
    });
    if (status !== 200) throw new CaRequestError(`trust bundle report: CA answered ${status}: ${text.slice(0, 200)}`, status);
  };
}

/** SHA-256 fingerprints (hex) of every certificate of a PEM bundle, in order. */
export function pemFingerprints(pem: string): string[] {
  return [...pem.matchAll(/-----BEGIN CERTIFICATE-----([^-]*)-----END CERTIFICATE-----/g)].map((m) => createHash('sha256').update(Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64')).digest('hex'));
}
