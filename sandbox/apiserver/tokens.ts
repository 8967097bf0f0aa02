/**
 * Authentication: the admin bearer token written into the kubeconfig, and ServiceAccount tokens (ES256
 * JWTs in the shape of Kubernetes bound tokens) that the server issues through TokenRequest and checks
 * for API requests and TokenReview (later used to authenticate SPIFFE certificate requests).
 */

import { randomBytes, timingSafeEqual, webcrypto } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { writeFileAtomic } from '../../agent/atomic-file.ts';
import { join } from 'node:path';
import { generateKeyPem, importSigningKey } from './certs.ts';
import type { JsonObject } from './json.ts';
import { asArray, asNumber, asObject, asString, isObject } from './json.ts';

/** The issuer and default audience of ServiceAccount tokens. */
export const TOKEN_ISSUER = 'https://kubernetes.default.svc.cluster.local';

/** An authenticated identity (the UserInfo of TokenReview). */
export interface UserInfo {
  username: string;
  uid?: string;
  groups: string[];
  extra?: Record<string, string[]>;
}

/** What a token is bound to, checked on every use (deleted ServiceAccount or Pod => token invalid). */
export interface TokenBinding {
  namespace: string;
  serviceAccount: { name: string; uid: string };
  pod?: { name: string; uid: string };
  node?: { name: string; uid: string };
}

/** Looks up the uid of a live object, so tokens die with what they are bound to. */
export type UidLookup = (kind: 'ServiceAccount' | 'Pod' | 'Node', namespace: string, name: string) => string | undefined;

const EC = { name: 'ECDSA', namedCurve: 'P-256' } as const;

function b64url(data: Buffer | Uint8Array | string): string {
  return Buffer.from(data).toString('base64url');
}

/** The admin token and the ServiceAccount token signer/verifier. */
export class TokenAuthority {
  readonly adminToken: string;
  private readonly privateKey: webcrypto.CryptoKey;
  private readonly publicJwk: JsonObject;
  private publicKey: webcrypto.CryptoKey | undefined;
  private readonly kid: string;
  private readonly cache = new Map<string, { user: UserInfo; exp: number; binding: TokenBinding; audiences: string[] }>();

  private constructor(adminToken: string, privateKey: webcrypto.CryptoKey, publicJwk: JsonObject, kid: string) {
    this.adminToken = adminToken;
    this.privateKey = privateKey;
    this.publicJwk = publicJwk;
    this.kid = kid;
  }

  /** Loads (or makes, and stores in stateDir) the admin token and the signing key. */
  static async load(stateDir: string | undefined): Promise<TokenAuthority> {
    let token: string | undefined;
    let keyPem: string | undefined;
    if (stateDir) {
      await mkdir(stateDir, { recursive: true, mode: 0o700 });
      token = (await readFile(join(stateDir, 'token'), 'utf8').catch(() => undefined))?.trim();
      keyPem = await readFile(join(stateDir, 'sa.key'), 'utf8').catch(() => undefined);
    }
    if (!token) {
      token = randomBytes(32).toString('base64url');
      // Atomic: a token or key cut short by a crash or a full disk would be read back as a different one next time.
      if (stateDir) await writeFileAtomic(join(stateDir, 'token'), `${token}\n`, { mode: 0o600 });
    }
    if (!keyPem) {
      keyPem = (await generateKeyPem()).pem;
      if (stateDir) await writeFileAtomic(join(stateDir, 'sa.key'), keyPem, { mode: 0o600 });
    }
    const priv = await importSigningKey(keyPem);
    const jwk = await webcrypto.subtle.exportKey('jwk', priv);
    const pub: JsonObject = { kty: 'EC', crv: 'P-256', x: jwk.x ?? '', y: jwk.y ?? '' };
    const digest = await webcrypto.subtle.digest('SHA-256', Buffer.from(`{"crv":"P-256","kty":"EC","x":"${String(pub['x'])}","y":"${String(pub['y'])}"}`));
    return new TokenAuthority(token, priv, pub, b64url(Buffer.from(digest)));
  }

  /** The JWKS document (for /openid/v1/jwks) so other components can verify tokens offline. */
  jwks(): JsonObject {
    return { keys: [{ ...this.publicJwk, use: 'sig', alg: 'ES256', kid: this.kid }] };
  }

  private async verifyKey(): Promise<webcrypto.CryptoKey> {
    if (!this.publicKey) {
      this.publicKey = (await webcrypto.subtle.importKey('jwk', { ...this.publicJwk, key_ops: ['verify'] } as webcrypto.JsonWebKey, EC, true, ['verify']));
    }
    return this.publicKey;
  }

  /** Issues a ServiceAccount token (TokenRequest). */
  async issue(binding: TokenBinding, audiences: string[], expirationSeconds: number): Promise<{ token: string; expirationTimestamp: string }> {
    const now = Math.floor(Date.now() / 1000);
    const exp = now + expirationSeconds;
    const claims: JsonObject = {
      aud: audiences.length ? audiences : [TOKEN_ISSUER],
      exp,
      iat: now,
      iss: TOKEN_ISSUER,
      jti: randomBytes(16).toString('hex'),
      nbf: now,
      sub: `system:serviceaccount:${binding.namespace}:${binding.serviceAccount.name}`,
      'kubernetes.io': {
        namespace: binding.namespace,
        serviceaccount: { name: binding.serviceAccount.name, uid: binding.serviceAccount.uid },
        ...(binding.pod ? { pod: { name: binding.pod.name, uid: binding.pod.uid } } : {}),
        ...(binding.node ? { node: { name: binding.node.name, uid: binding.node.uid } } : {}),
      },
    };
    const head = b64url(JSON.stringify({ alg: 'ES256', kid: this.kid }));
    const body = b64url(JSON.stringify(claims));
    const sig = await webcrypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, this.privateKey, Buffer.from(`${head}.${body}`));
    return { token: `${head}.${body}.${b64url(Buffer.from(sig))}`, expirationTimestamp: new Date(exp * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z') };
  }

  /** True when `token` is the admin token (constant time). */
  isAdmin(token: string): boolean {
    const a = Buffer.from(token);
    const b = Buffer.from(this.adminToken);
    return a.length === b.length && timingSafeEqual(a, b);
  }

  /**
   * Authenticates a bearer token: the admin token, or a ServiceAccount token whose signature, expiry,
   * audience and bindings (ServiceAccount, Pod) still hold. `audiences` empty means the API server's own.
   */
  async authenticate(token: string, audiences: string[], lookup: UidLookup): Promise<{ user: UserInfo; audiences: string[] } | { error: string }> {
    if (this.isAdmin(token)) return { user: { username: 'nodemesh-admin', groups: ['system:masters', 'system:authenticated'] }, audiences: [TOKEN_ISSUER] };
    const want = audiences.length ? audiences : [TOKEN_ISSUER];
    let entry = this.cache.get(token);
    if (!entry) {
      const parts = token.split('.');
      if (parts.length !== 3) return { error: 'invalid bearer token' };
      const [head, body, sig] = parts as [string, string, string];
      let claims: unknown;
      try {
        const ok = await webcrypto.subtle.verify({ name: 'ECDSA', hash: 'SHA-256' }, (await this.verifyKey()), Buffer.from(sig, 'base64url'), Buffer.from(`${head}.${body}`));
        if (!ok) return { error: 'invalid bearer token, signature is invalid' };
        claims = JSON.parse(Buffer.from(body, 'base64url').toString('utf8'));
      } catch {
        return { error: 'invalid bearer token' };
      }
      if (!isObject(claims)) return { error: 'invalid bearer token' };
      const k8s = asObject(claims['kubernetes.io']);
      const sa = asObject(k8s?.['serviceaccount']);
      const pod = asObject(k8s?.['pod']);
      const node = asObject(k8s?.['node']);
      const ns = asString(k8s?.['namespace']) ?? '';
      const saName = asString(sa?.['name']) ?? '';
      const binding: TokenBinding = {
        namespace: ns,
        serviceAccount: { name: saName, uid: asString(sa?.['uid']) ?? '' },
        ...(pod ? { pod: { name: asString(pod['name']) ?? '', uid: asString(pod['uid']) ?? '' } } : {}),
        ...(node ? { node: { name: asString(node['name']) ?? '', uid: asString(node['uid']) ?? '' } } : {}),
      };
      const extra: Record<string, string[]> = {};
      if (binding.pod) {
        extra['authentication.kubernetes.io/pod-name'] = [binding.pod.name];
        extra['authentication.kubernetes.io/pod-uid'] = [binding.pod.uid];
      }
      if (binding.node) {
        extra['authentication.kubernetes.io/node-name'] = [binding.node.name];
        extra['authentication.kubernetes.io/node-uid'] = [binding.node.uid];
      }
      entry = {
        user: {
          username: `system:serviceaccount:${ns}:${saName}`,
          uid: binding.serviceAccount.uid,
          groups: ['system:serviceaccounts', `system:serviceaccounts:${ns}`, 'system:authenticated'],
          ...(Object.keys(extra).length ? { extra } : {}),
        },
        exp: asNumber(claims['exp']) ?? 0,
        binding,
        audiences: asArray(claims['aud']).map(String),
      };
      if (this.cache.size > 10_000) this.cache.clear();
      this.cache.set(token, entry);
    }
    if (entry.exp * 1000 < Date.now()) return { error: 'invalid bearer token, token has expired' };
    const matched = entry.audiences.filter((a) => want.includes(a));
    if (!matched.length) return { error: 'invalid bearer token, token audiences do not match' };
    const b = entry.binding;
    if (lookup('ServiceAccount', b.namespace, b.serviceAccount.name) !== b.serviceAccount.uid) {
      return { error: `invalid bearer token, service account ${b.namespace}/${b.serviceAccount.name} has been deleted` };
    }
    if (b.pod && lookup('Pod', b.namespace, b.pod.name) !== b.pod.uid) return { error: `invalid bearer token, pod ${b.namespace}/${b.pod.name} has been deleted` };
    return { user: entry.user, audiences: matched };
  }
}
