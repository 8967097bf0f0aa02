/**
 * The mesh CA's signing service: an HTTPS endpoint agents call with a CSR and the identity they want.
 *
 * Authentication is a real cluster's: the bearer token is checked by a TokenReview against the API server
 * (audience `nodemesh-ca`). An agent is the ServiceAccount nodemesh-system/nodemesh-agent, and its token must be
 * bound to a node: TokenReview then reports `authentication.kubernetes.io/node-name` (and node-uid) in the
 * user's extra. In a real cluster that is the agent pod's projected token (pod-bound tokens carry the pod's
 * node since Kubernetes 1.30); in the sandbox the supervisor mints one token per node with a TokenRequest whose
 * boundObjectRef is the Node (sandbox/agent-credentials.ts in the sandbox; a projected token in a real cluster). The node-uid must match the Node object, so a
 * token outlives neither its node nor a re-created node of the same name. Any other ServiceAccount token may
 * ask only for its own identity (and, when pod-bound, only while that pod runs there).
 *
 * Authorization is `authorizeCsr` against the Pod objects of the operator's informer: an agent gets
 * certificates only for service accounts of pods on its own node. Then `MeshCa.issue` signs.
 *
 * The CA itself lives in the Secret nodemesh-system/nodemesh-ca (the user may pre-create it with their own
 * root); the first replica to start creates it, the others read it (create is atomic: a 409 means "read").
 * The trust bundle is published in the ConfigMap nodemesh-trust-bundle for agents. The service's own TLS
 * certificate is an SVID of nodemesh-system/nodemesh-operator from the same CA, renewed at half-life: agents
 * verify it against the trust bundle and check that SPIFFE ID (agent/ca-client.ts).
 */
import { createHash, type webcrypto } from 'node:crypto';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { V1ConfigMap, V1Node, V1Pod, V1Secret, V1TokenReview } from '@kubernetes/client-node';
import { ExponentialBackoff, isConflict } from './backoff.ts';
import { authorizeCsr, type CsrRequester } from './ca/authorize-csr.ts';
import { CaError } from './ca/errors.ts';
import { MeshCa } from './ca/mesh-ca.ts';
import * as x509 from './ca/x509.ts';
import { systemRuntimeClock, type RuntimeClock } from './clock.ts';
import type { KubeRest } from './kube-rest.ts';
import { describeError, type OperatorLogger } from './logger.ts';
import type { BundleReport } from './ca-rotation.ts';

/** Secret holding the CA state (in the mesh namespace). */
export const CA_SECRET_NAME = 'nodemesh-ca';
/** ConfigMap holding the trust bundle for agents (in the mesh namespace). */
export const TRUST_BUNDLE_CONFIGMAP = 'nodemesh-trust-bundle';
/** Audience agents request their tokens for; TokenReview checks it. */
export const CA_AUDIENCE = 'nodemesh-ca';
/** ServiceAccount of the agent DaemonSet. */
export const AGENT_SERVICE_ACCOUNT = 'nodemesh-agent';
/** ServiceAccount of the operator (its serving certificate's identity). */
export const OPERATOR_SERVICE_ACCOUNT = 'nodemesh-operator';
/** The signing endpoint. */
export const CSR_PATH = '/v1/certificates';
/**
 * Where agents report the trust bundle their proxy serves (POST `{"nodeName", "fingerprints": [sha256 hex, ...]}`,
 * same node-bound token as for CSRs): the rotation controller switches the issuer only once every live node
 * serves the new root (operator/ca-rotation.ts).
 */
export const BUNDLE_REPORT_PATH = '/v1/trust-bundle/report';
/** Most fingerprints one report may carry (a bundle holds a few roots and intermediates). */
const MAX_REPORTED_FINGERPRINTS = 64;
/** Largest request body accepted (a P-256 CSR is under 1 KiB). */
const MAX_BODY_BYTES = 64 * 1024;

const NODE_NAME_EXTRA = 'authentication.kubernetes.io/node-name';
const NODE_UID_EXTRA = 'authentication.kubernetes.io/node-uid';
const POD_NAME_EXTRA = 'authentication.kubernetes.io/pod-name';

/** The authenticated user as TokenReview reports it. */
export interface ReviewedUser {
  username: string;
  uid?: string;
  groups: string[];
  extra: Record<string, string[]>;
}

/** Checks bearer tokens. `unavailable` means the API server could not be asked (answer 503, not 401). */
export interface TokenReviewer {
  review(token: string): Promise<{ ok: true; user: ReviewedUser } | { ok: false; unavailable: boolean; error: string }>;
}

/** TokenReview against the API server, positive answers cached briefly (keyed by the token's hash). */
export function createKubeTokenReviewer(rest: KubeRest, opts: { audience?: string; cacheMs?: number; clock?: RuntimeClock } = {}): TokenReviewer {
  const audience = opts.audience ?? CA_AUDIENCE;
  const cacheMs = opts.cacheMs ?? 10_000;
  const clock = opts.clock ?? systemRuntimeClock;
  const cache = new Map<string, { user: ReviewedUser; until: number }>();
  return {
    review: async (token) => {
      const key = createHash('sha256').update(token).digest('hex');
      const hit = cache.get(key);
      if (hit && hit.until > clock.now()) return { ok: true, user: hit.user };
      let status;
      try {
        const r = await rest.json<V1TokenReview>('POST', '/apis/authentication.k8s.io/v1/tokenreviews', {
          body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, audiences: [audience] } },
          timeoutMs: 10_000,
        });
        status = r.status;
      } catch (err) {
        return { ok: false, unavailable: true, error: `TokenReview failed: ${describeError(err)}` };
      }
      if (!status?.authenticated || !status.user?.username) return { ok: false, unavailable: false, error: status?.error || 'token not authenticated' };
      if (status.audiences && !status.audiences.includes(audience)) return { ok: false, unavailable: false, error: `token audiences ${status.audiences.join(',')} do not include ${audience}` };
      const user: ReviewedUser = { username: status.user.username, uid: status.user.uid, groups: status.user.groups ?? [], extra: status.user.extra ?? {} };
      if (cache.size > 10_000) cache.clear();
      cache.set(key, { user, until: clock.now() + cacheMs });
      return { ok: true, user };
    },
  };
}

/** Who is asking, from a reviewed user: the agent of a node, a workload's service account, or nobody we serve. */
export function decideRequester(
  user: ReviewedUser,
  opts: { meshNamespace: string; agentServiceAccount?: string; nodeUid: (name: string) => string | undefined | null; claimedNode?: string },
): { requester: CsrRequester } | { code: string; reason: string } {
  const agent = `system:serviceaccount:${opts.meshNamespace}:${opts.agentServiceAccount ?? AGENT_SERVICE_ACCOUNT}`;
  const m = /^system:serviceaccount:([^:]+):([^:]+)$/.exec(user.username);
  if (!m) return { code: 'invalid_requester', reason: `${user.username} is not a service account; only node agents and workloads may ask for certificates` };
  const nodeName = user.extra[NODE_NAME_EXTRA]?.[0];
  const nodeUidClaim = user.extra[NODE_UID_EXTRA]?.[0];
  if (nodeName !== undefined) {
    // null: the node cache is not ready; undefined: no such node.
    const uid = opts.nodeUid(nodeName);
    if (uid === undefined) return { code: 'unknown_node', reason: `token is bound to node ${nodeName}, which does not exist` };
    if (uid !== null && nodeUidClaim && uid !== nodeUidClaim) return { code: 'unknown_node', reason: `token is bound to node ${nodeName} uid ${nodeUidClaim}, but that node is now uid ${uid} (re-created)` };
  }
  if (opts.claimedNode !== undefined && opts.claimedNode !== nodeName) {
    return { code: 'node_mismatch', reason: `request names node ${opts.claimedNode}, token is bound to ${nodeName ?? 'no node'}` };
  }
  if (user.username === agent) {
    if (!nodeName) return { code: 'invalid_requester', reason: `${agent} token is not bound to a node: request a node-bound token (TokenRequest boundObjectRef kind Node) or use the agent pod's projected token` };
    return { requester: { kind: 'node', nodeName } };
  }
  const podName = user.extra[POD_NAME_EXTRA]?.[0];
  return { requester: { kind: 'serviceaccount', namespace: m[1]!, name: m[2]!, ...(podName ? { podName } : {}), ...(nodeName ? { nodeName } : {}) } };
}

/** Storage of the CA Secret and the trust-bundle ConfigMap (the API server, or a fake). */
export interface CaStore {
  readSecret(): Promise<{ data: Record<string, string>; annotations: Record<string, string>; resourceVersion: string } | undefined>;
  createSecret(data: Record<string, string>): Promise<void>;
  /** Replaces data and annotations (a PUT: annotations left out are removed, so pass the ones read). */
  replaceSecret(data: Record<string, string>, resourceVersion: string, annotations?: Record<string, string>): Promise<void>;
  readBundle(): Promise<{ data: Record<string, string>; resourceVersion: string } | undefined>;
  writeBundle(data: Record<string, string>, resourceVersion: string | undefined): Promise<void>;
}

/** CaStore over the API server. */
export function createKubeCaStore(rest: KubeRest, namespace: string): CaStore {
  const ns = `/api/v1/namespaces/${encodeURIComponent(namespace)}`;
  const labels = { 'app.kubernetes.io/managed-by': 'nodemesh-operator' };
  const timeoutMs = 15_000;
  const secretBody = (data: Record<string, string>, resourceVersion?: string, annotations?: Record<string, string>): V1Secret => ({
    apiVersion: 'v1',
    kind: 'Secret',
    type: 'Opaque',
    metadata: { name: CA_SECRET_NAME, namespace, labels, ...(annotations && Object.keys(annotations).length ? { annotations } : {}), ...(resourceVersion ? { resourceVersion } : {}) },
    data,
  });
  const bundleBody = (data: Record<string, string>, resourceVersion?: string): V1ConfigMap => ({
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name: TRUST_BUNDLE_CONFIGMAP, namespace, labels, ...(resourceVersion ? { resourceVersion } : {}) },
    data,
  });
  return {
    readSecret: async () => {
      const s = await rest.getOrUndefined<V1Secret>(`${ns}/secrets/${CA_SECRET_NAME}`, timeoutMs);
      return s ? { data: s.data ?? {}, annotations: s.metadata?.annotations ?? {}, resourceVersion: s.metadata?.resourceVersion ?? '' } : undefined;
    },
    createSecret: async (data) => {
      await rest.json('POST', `${ns}/secrets`, { body: secretBody(data), timeoutMs });
    },
    replaceSecret: async (data, rv, annotations) => {
      await rest.json('PUT', `${ns}/secrets/${CA_SECRET_NAME}`, { body: secretBody(data, rv, annotations), timeoutMs });
    },
    readBundle: async () => {
      const c = await rest.getOrUndefined<V1ConfigMap>(`${ns}/configmaps/${TRUST_BUNDLE_CONFIGMAP}`, timeoutMs);
      return c ? { data: c.data ?? {}, resourceVersion: c.metadata?.resourceVersion ?? '' } : undefined;
    },
    writeBundle: async (data, rv) => {
      if (rv === undefined) await rest.json('POST', `${ns}/configmaps`, { body: bundleBody(data), timeoutMs });
      else await rest.json('PUT', `${ns}/configmaps/${TRUST_BUNDLE_CONFIGMAP}`, { body: bundleBody(data, rv), timeoutMs });
    },
  };
}

/**
 * Loads the CA from its Secret, or makes one and stores it. A Secret holding only a user's root (no
 * intermediate yet) gets our intermediate written back, keeping the user's keys. Races between replicas are
 * settled by the API server: whoever loses a create or replace reads the winner's state.
 */
export async function loadOrCreateMeshCa(store: CaStore, opts: { trustDomain: string; leafTtlMs?: number; log: OperatorLogger }): Promise<MeshCa> {
  for (let attempt = 0; ; attempt++) {
    const stored = await store.readSecret();
    if (!stored || Object.keys(stored.data).length === 0) {
      const ca = await MeshCa.create({ trustDomain: opts.trustDomain, leafTtlMs: opts.leafTtlMs });
      try {
        if (stored) await store.replaceSecret(await ca.toSecretData(), stored.resourceVersion, stored.annotations);
        else await store.createSecret(await ca.toSecretData());
        opts.log.info('created the mesh CA', { secret: CA_SECRET_NAME, trustDomain: opts.trustDomain });
        return ca;
      } catch (err) {
        if (isConflict(err) && attempt < 5) continue; // another replica stored its CA first: use that one
        throw err;
      }
    }
    const ca = await MeshCa.fromSecretData(stored.data, { trustDomain: opts.trustDomain, leafTtlMs: opts.leafTtlMs });
    if (stored.data['intermediate.crt']) return ca;
    // A user-supplied root: persist the intermediate made for it, or every restart would make another.
    try {
      await store.replaceSecret({ ...stored.data, ...(await ca.toSecretData()) }, stored.resourceVersion, stored.annotations);
      opts.log.info('made an intermediate for the supplied root and stored it', { secret: CA_SECRET_NAME });
      return ca;
    } catch (err) {
      if (isConflict(err) && attempt < 5) continue;
      throw err;
    }
  }
}

/** The trust-bundle ConfigMap's data. */
export function trustBundleData(ca: MeshCa): Record<string, string> {
  const b = ca.bundle();
  return { 'ca.crt': b.pem, 'roots.pem': b.rootsPem, 'intermediates.pem': b.intermediatesPem, 'trust-domain': ca.trustDomain };
}

/** Writes the trust bundle ConfigMap when it differs (leader only: the caller checks). Returns true on a write. */
export async function publishTrustBundle(store: CaStore, ca: MeshCa): Promise<boolean> {
  const want = trustBundleData(ca);
  for (let attempt = 0; ; attempt++) {
    const have = await store.readBundle();
    if (have && Object.keys(want).every((k) => have.data[k] === want[k]) && Object.keys(have.data).length === Object.keys(want).length) return false;
    try {
      await store.writeBundle(want, have?.resourceVersion);
      return true;
    } catch (err) {
      if (isConflict(err) && attempt < 5) continue;
      throw err;
    }
  }
}

/** A fresh P-256 key and a CSR (for the service's own certificate). */
async function makeKeyAndCsr(): Promise<{ keyPem: string; csrPem: string }> {
  const keys = (await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: '', keys, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } });
  const pkcs8 = await crypto.subtle.exportKey('pkcs8', keys.privateKey);
  return { keyPem: x509.PemConverter.encode([{ type: 'PRIVATE KEY', rawData: pkcs8 }]) + '\n', csrPem: csr.toString('pem') };
}

/** Settings of the CaService. */
export interface CaServiceOptions {
  ca: MeshCa;
  reviewer: TokenReviewer;
  /** Pods from the informer; undefined while it has not listed yet. */
  pods: () => readonly V1Pod[] | undefined;
  /** A Node from the informer; undefined when absent; null while the informer has not listed yet. */
  node: (name: string) => V1Node | undefined | null;
  meshNamespace: string;
  host?: string;
  port?: number;
  log: OperatorLogger;
  clock?: RuntimeClock;
  /** Most signing requests in flight; more get 503. Default 64. */
  maxInFlight?: number;
}

/** Counters for /status. */
export interface CaServiceStatus {
  url: string | undefined;
  trustDomain: string;
  issued: number;
  denied: Record<string, number>;
  unauthenticated: number;
  unavailable: number;
  badRequests: number;
  servingCertNotAfter?: string;
  /** Bundle reports received (agents re-report every 30 s and on change). */
  bundleReports: number;
}

/** An answer: HTTP status and JSON body. */
interface Answer {
  status: number;
  body: Record<string, unknown>;
  headers?: Record<string, string>;
}

/** The HTTPS signing endpoint. */
export class CaService {
  readonly #o: CaServiceOptions;
  readonly #clock: RuntimeClock;
  #ca: MeshCa;
  readonly #reports = new Map<string, BundleReport>();
  #server: Server | undefined;
  #url: string | undefined;
  #renewTimer: unknown;
  #inFlight = 0;
  #servingNotAfter: Date | undefined;
  readonly #stats: CaServiceStatus;

  constructor(opts: CaServiceOptions) {
    this.#o = opts;
    this.#ca = opts.ca;
    this.#clock = opts.clock ?? systemRuntimeClock;
    this.#stats = { url: undefined, trustDomain: opts.ca.trustDomain, issued: 0, denied: {}, unauthenticated: 0, unavailable: 0, badRequests: 0, bundleReports: 0 };
  }

  /** Signs with `ca` from now on (a rotation step, or the Secret changed under a follower). */
  setCa(ca: MeshCa): void {
    this.#ca = ca;
  }

  /** The CA signing now. */
  get ca(): MeshCa {
    return this.#ca;
  }

  /** What each node's agent last reported about the bundle its proxy serves (received on this replica). */
  bundleReports(): ReadonlyMap<string, BundleReport> {
    return this.#reports;
  }

  /** Re-issues the service's own certificate now (after an issuer switch: it must not outlive the old root). */
  renewServingCertificate(): void {
    this.#servingCredentials().then(
      (c) => this.#server?.setSecureContext({ ...c, minVersion: 'TLSv1.3' }),
      (err: unknown) => this.#o.log.error('could not renew the CA service certificate', { error: describeError(err) }),
    );
  }

  /** Issues the serving certificate and listens. Resolves with the URL. */
  async start(): Promise<string> {
    const creds = await this.#servingCredentials();
    const server = createServer({ ...creds, minVersion: 'TLSv1.3' }, (req, res) => {
      this.#handle(req, res).catch((err: unknown) => {
        this.#o.log.error('CA request failed unexpectedly', { error: describeError(err) });
        send(res, { status: 500, body: { code: 'internal', message: 'internal error' } });
      });
    });
    server.headersTimeout = 10_000;
    server.requestTimeout = 30_000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.#o.port ?? 0, this.#o.host ?? '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.#server = server;
    const addr = server.address() as AddressInfo;
    const host = addr.address.includes(':') ? `[${addr.address}]` : addr.address === '0.0.0.0' ? '127.0.0.1' : addr.address;
    this.#url = `https://${host}:${addr.port}`;
    this.#stats.url = this.#url;
    this.#o.log.info('CA signing service listening', { url: this.#url, path: CSR_PATH });
    return this.#url;
  }

  /** Stops listening. */
  async stop(): Promise<void> {
    this.#clock.clearTimeout(this.#renewTimer);
    const s = this.#server;
    if (!s) return;
    await new Promise<void>((r) => {
      s.close(() => r());
      s.closeAllConnections();
    });
  }

  /** For /status. */
  status(): CaServiceStatus {
    return { ...this.#stats, denied: { ...this.#stats.denied }, ...(this.#servingNotAfter ? { servingCertNotAfter: this.#servingNotAfter.toISOString() } : {}) };
  }

  async #servingCredentials(): Promise<{ cert: string; key: string }> {
    const { keyPem, csrPem } = await makeKeyAndCsr();
    const svid = await this.#ca.issue(csrPem, { namespace: this.#o.meshNamespace, serviceAccount: OPERATOR_SERVICE_ACCOUNT });
    this.#servingNotAfter = svid.notAfter;
    const lifetime = svid.notAfter.getTime() - svid.notBefore.getTime();
    const renewIn = Math.max(1_000, svid.notBefore.getTime() + lifetime / 2 - this.#clock.now());
    this.#clock.clearTimeout(this.#renewTimer);
    this.#renewTimer = this.#clock.setTimeout(() => {
      this.#servingCredentials().then(
        (c) => this.#server?.setSecureContext({ ...c, minVersion: 'TLSv1.3' }),
        (err: unknown) => this.#o.log.error('could not renew the CA service certificate', { error: describeError(err) }),
      );
    }, renewIn);
    return { cert: svid.certChainPem, key: keyPem };
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method === 'GET' && path === '/healthz') return send(res, { status: 200, body: { ok: true } });
    if (req.method === 'GET' && path === '/v1/trust-bundle') {
      const b = this.#ca.bundle();
      return send(res, { status: 200, body: { trustDomain: this.#ca.trustDomain, pem: b.pem, rootsPem: b.rootsPem, intermediatesPem: b.intermediatesPem } });
    }
    if (req.method === 'POST' && path === BUNDLE_REPORT_PATH) {
      const body = await readBody(req, MAX_BODY_BYTES);
      return send(res, await this.reportBundle(req.headers.authorization, body));
    }
    if (path !== CSR_PATH) return send(res, { status: 404, body: { code: 'not_found', message: `no such endpoint ${path}; POST ${CSR_PATH}` } });
    if (req.method !== 'POST') return send(res, { status: 405, body: { code: 'method_not_allowed', message: `use POST ${CSR_PATH}` }, headers: { allow: 'POST' } });
    if (this.#inFlight >= (this.#o.maxInFlight ?? 64)) {
      this.#stats.unavailable++;
      return send(res, { status: 503, body: { code: 'busy', message: 'too many signing requests in flight; retry' }, headers: { 'retry-after': '1' } });
    }
    this.#inFlight++;
    try {
      const body = await readBody(req, MAX_BODY_BYTES);
      if (body === undefined) {
        // The rest of the body is not read: answer and drop the connection.
        this.#stats.badRequests++;
        res.on('finish', () => req.destroy());
        return send(res, { status: 413, body: { code: 'too_large', message: `request body larger than ${MAX_BODY_BYTES} bytes` }, headers: { connection: 'close' } });
      }
      send(res, await this.sign(req.headers.authorization, body));
    } finally {
      this.#inFlight--;
    }
  }

  /** The whole decision for one request (exposed for unit tests): authenticate, authorize, sign. */
  async sign(authorization: string | undefined, rawBody: string | undefined): Promise<Answer> {
    const bad = (message: string): Answer => {
      this.#stats.badRequests++;
      return { status: 400, body: { code: 'bad_request', message } };
    };
    if (rawBody === undefined) return bad(`request body larger than ${MAX_BODY_BYTES} bytes`);
    let req: { csr?: unknown; namespace?: unknown; serviceAccount?: unknown; nodeName?: unknown };
    try {
      req = JSON.parse(rawBody) as typeof req;
    } catch {
      return bad('body is not JSON: send {"csr": "<PEM>", "namespace": "...", "serviceAccount": "...", "nodeName": "..."}');
    }
    if (typeof req?.csr !== 'string' || typeof req.namespace !== 'string' || typeof req.serviceAccount !== 'string' || (req.nodeName !== undefined && typeof req.nodeName !== 'string')) {
      return bad('fields csr, namespace and serviceAccount must be strings (nodeName optional)');
    }
    const token = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '')?.[1];
    if (!token) {
      this.#stats.unauthenticated++;
      return { status: 401, body: { code: 'unauthenticated', message: 'send Authorization: Bearer <token of the agent ServiceAccount, bound to its node, audience nodemesh-ca>' } };
    }
    const review = await this.#o.reviewer.review(token);
    if (!review.ok) {
      if (review.unavailable) {
        this.#stats.unavailable++;
        return { status: 503, body: { code: 'unavailable', message: review.error }, headers: { 'retry-after': '2' } };
      }
      this.#stats.unauthenticated++;
      return { status: 401, body: { code: 'unauthenticated', message: review.error } };
    }
    const requested = { namespace: req.namespace, serviceAccount: req.serviceAccount };
    const who = decideRequester(review.user, {
      meshNamespace: this.#o.meshNamespace,
      claimedNode: req.nodeName as string | undefined,
      nodeUid: (name) => {
        const n = this.#o.node(name);
        return n === null ? null : n?.metadata?.uid;
      },
    });
    if ('code' in who) return this.#deny(who.code, who.reason, review.user.username, requested);
    const pods = this.#o.pods();
    if (!pods) {
      this.#stats.unavailable++;
      return { status: 503, body: { code: 'unavailable', message: 'the operator has not listed pods yet; retry' }, headers: { 'retry-after': '2' } };
    }
    const decision = authorizeCsr({ requester: who.requester, requested, pods });
    if (!decision.allowed) return this.#deny(decision.code, decision.reason, review.user.username, requested);
    try {
      const svid = await this.#ca.issue(req.csr, requested);
      this.#stats.issued++;
      this.#o.log.info('issued SVID', { spiffeId: svid.spiffeId, serial: svid.serialNumber, requester: review.user.username, notAfter: svid.notAfter.toISOString(), why: decision.reason });
      return { status: 200, body: { certChainPem: svid.certChainPem, notBefore: svid.notBefore.toISOString(), notAfter: svid.notAfter.toISOString(), spiffeId: svid.spiffeId, serialNumber: svid.serialNumber } };
    } catch (err) {
      if (err instanceof CaError) return bad(`${err.code}: ${err.message}`);
      throw err;
    }
  }

  /** An agent's report of the bundle its proxy serves (exposed for unit tests). Only a node's own agent may report for it. */
  async reportBundle(authorization: string | undefined, rawBody: string | undefined): Promise<Answer> {
    const bad = (message: string): Answer => {
      this.#stats.badRequests++;
      return { status: 400, body: { code: 'bad_request', message } };
    };
    if (rawBody === undefined) return bad(`request body larger than ${MAX_BODY_BYTES} bytes`);
    let req: { nodeName?: unknown; fingerprints?: unknown };
    try {
      req = JSON.parse(rawBody) as typeof req;
    } catch {
      return bad('body is not JSON: send {"nodeName": "...", "fingerprints": ["<sha256 hex>", ...]}');
    }
    const fps = req?.fingerprints;
    if (typeof req?.nodeName !== 'string' || !Array.isArray(fps) || fps.length > MAX_REPORTED_FINGERPRINTS || !fps.every((f) => typeof f === 'string' && /^[0-9a-f]{64}$/.test(f))) {
      return bad(`nodeName must be a string and fingerprints at most ${MAX_REPORTED_FINGERPRINTS} lowercase SHA-256 hex strings`);
    }
    const token = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '')?.[1];
    if (!token) {
      this.#stats.unauthenticated++;
      return { status: 401, body: { code: 'unauthenticated', message: 'send Authorization: Bearer <node-bound agent token, audience nodemesh-ca>' } };
    }
    const review = await this.#o.reviewer.review(token);
    if (!review.ok) {
      if (review.unavailable) {
        this.#stats.unavailable++;
        return { status: 503, body: { code: 'unavailable', message: review.error }, headers: { 'retry-after': '2' } };
      }
      this.#stats.unauthenticated++;
      return { status: 401, body: { code: 'unauthenticated', message: review.error } };
    }
    const who = decideRequester(review.user, {
      meshNamespace: this.#o.meshNamespace,
      claimedNode: req.nodeName,
      nodeUid: (name) => {
        const n = this.#o.node(name);
        return n === null ? null : n?.metadata?.uid;
      },
    });
    if ('code' in who) return this.#deny(who.code, who.reason, review.user.username, { namespace: '-', serviceAccount: '-' });
    // A workload's own token could otherwise vouch for a whole node's proxy.
    if (who.requester.kind !== 'node') return this.#deny('invalid_requester', `${review.user.username} is not a node agent: only agents report their node's bundle`, review.user.username, { namespace: '-', serviceAccount: '-' });
    const prev = this.#reports.get(who.requester.nodeName);
    const fingerprints = new Set(fps as string[]);
    this.#reports.set(who.requester.nodeName, { fingerprints, at: this.#clock.now() });
    this.#stats.bundleReports++;
    if (!prev || prev.fingerprints.size !== fingerprints.size || [...fingerprints].some((f) => !prev.fingerprints.has(f))) {
      this.#o.log.info('node reports its trust bundle', { node: who.requester.nodeName, certificates: fingerprints.size });
    }
    return { status: 200, body: { ok: true } };
  }

  #deny(code: string, reason: string, username: string, requested: { namespace: string; serviceAccount: string }): Answer {
    this.#stats.denied[code] = (this.#stats.denied[code] ?? 0) + 1;
    this.#o.log.warn('refused a certificate request', { code, reason, requester: username, requested: `${requested.namespace}/${requested.serviceAccount}` });
    return { status: 403, body: { code, message: reason } };
  }
}

function send(res: ServerResponse, a: Answer): void {
  if (res.headersSent) return;
  const text = JSON.stringify(a.body);
  res.writeHead(a.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...(a.headers ?? {}) });
  res.end(text);
}

/** The body as text, or undefined when it passes `limit` bytes (the rest is not read). */
function readBody(req: IncomingMessage, limit: number): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        over = true;
        req.pause();
        resolve(undefined);
        return;
      }
      if (!over) chunks.push(c);
    });
    req.on('end', () => {
      if (!over) resolve(Buffer.concat(chunks).toString('utf8'));
    });
    req.on('error', reject);
  });
}

/** Retries `fn` with back-off until it succeeds or `stopped()` (for loading the CA while the API is down). */
export async function retryUntil<T>(fn: () => Promise<T>, opts: { stopped: () => boolean; log: OperatorLogger; what: string; clock?: RuntimeClock }): Promise<T | undefined> {
  const backoff = new ExponentialBackoff();
  const clock = opts.clock ?? systemRuntimeClock;
  for (;;) {
    if (opts.stopped()) return undefined;
    try {
      return await fn();
    } catch (err) {
      const delay = backoff.next(clock.now());
      opts.log.warn(`${opts.what} failed; retrying`, { error: describeError(err), inMs: delay });
      await new Promise<void>((r) => clock.setTimeout(r, delay));
    }
  }
}
