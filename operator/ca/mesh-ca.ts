/** The mesh CA: a root and an intermediate that signs X.509-SVIDs from CSRs, with trust-bundle rotation and Secret persistence. */
import { createHash } from 'node:crypto';
import {
  certPem,
  curveOf,
  exportPrivateKeyPem,
  generateCaKeyPair,
  importKeyFor,
  randomSerial,
  signingAlgorithmFor,
  type CaKey,
} from './ca-keys.ts';
import { CaError } from './errors.ts';
import { computeCaExpiryWarnings, computeLeafValidity, DEFAULT_BACKDATE_MS, LEAF_TTL, type CaCertSummary } from './plan-validity.ts';
import { formatSpiffeId, isValidNamespace, isValidServiceAccount, isValidTrustDomain, type SvidIdentity } from './spiffe-name.ts';
import * as x509 from './x509.ts';

const DAY = 86_400_000;

/** Settings of the CA. */
export interface MeshCaOptions {
  /** SPIFFE trust domain, e.g. `cluster.local`; every issued ID is `spiffe://<trustDomain>/ns/<ns>/sa/<sa>`. */
  trustDomain: string;
  /** Default leaf lifetime (ms, default 24 h, range 1 min … 30 days). */
  leafTtlMs?: number;
  /** How far notBefore is set before now (ms, default 60 s), for peers whose clock lags. */
  backdateMs?: number;
  /** Lifetime of intermediates this CA makes (ms, default 365 days, capped at the root's end). */
  intermediateTtlMs?: number;
  /** Lifetime of roots this CA generates (ms, default 10 years). */
  rootTtlMs?: number;
  /** Clock (ms since epoch); injected so tests can move time. */
  now?: () => number;
}

/** A user-supplied root: certificate PEM and PKCS#8/EC private key PEM. */
export interface SuppliedRoot {
  certPem: string;
  keyPem: string;
}

/** A signed SVID as returned to the agent. */
export interface IssuedSvid {
  /** Leaf then intermediate, PEM (the root is not included: peers have it in their bundle). */
  certChainPem: string;
  notBefore: Date;
  notAfter: Date;
  spiffeId: string;
  /** Hex serial number, for audit logs. */
  serialNumber: string;
}

/** The trust bundle to distribute to every proxy. */
export interface CaBundle {
  /** Trusted roots (two during a rotation overlap). */
  rootsPem: string;
  /** Intermediates that may sign live leaves (issuing, pending and retired-but-unexpired). */
  intermediatesPem: string;
  /** Both, roots first: what `parseTrustBundle` in l7proxy/identity takes. */
  pem: string;
}

/** What `inspect()` reports. */
export interface CaInspection {
  trustDomain: string;
  certificates: CaCertSummary[];
  /** Roots and intermediates expiring within 60 days (see `computeCaExpiryWarnings`). */
  warnings: string[];
}

/** A CA certificate held by the CA, with its key when we have it. */
interface Held {
  cert: x509.X509Certificate;
  key: CaKey | undefined;
  fingerprint: string;
}

/** The issuing pair or the pending pair of a rotation. */
interface Pair {
  root: Held;
  intermediate: Held;
}

/** Secret data keys (Kubernetes allows [-._a-zA-Z0-9]). */
const K = {
  trustDomain: 'trust-domain',
  rootCert: 'ca.crt',
  rootKey: 'ca.key',
  roots: 'roots.pem',
  intermediateCert: 'intermediate.crt',
  intermediateKey: 'intermediate.key',
  pendingRootCert: 'pending-root.crt',
  pendingRootKey: 'pending-root.key',
  pendingIntermediateCert: 'pending-intermediate.crt',
  pendingIntermediateKey: 'pending-intermediate.key',
  retired: 'retired-intermediates.pem',
} as const;

/**
 * The mesh CA. Make one with `MeshCa.create` (fresh or from a user-supplied root) or `MeshCa.fromSecretData`
 * (restore), persist it with `toSecretData()` after every change.
 *
 * Rotation keeps peers working throughout, because a peer only accepts chains ending at a root in its bundle
 * and completes paths from the bundle's intermediates:
 *   1. `rotateAddRoot()`  — new root + its intermediate join the bundle (pending); issuing is unchanged.
 *      Wait until every proxy has the new bundle.
 *   2. `rotateSwitchIssuer()` — the pending intermediate signs from now on. Wait one leaf TTL so every leaf
 *      from the old chain has been renewed.
 *   3. `rotateDropRoot()` — old roots and their intermediates leave the bundle; old-chain leaves are refused.
 * `rotateIntermediate()` + `rotateSwitchIssuer()` renews only the intermediate, the same two-phase way.
 */
export class MeshCa {
  readonly trustDomain: string;
  #opts: Required<Omit<MeshCaOptions, 'trustDomain'>>;
  #roots: Held[];
  #issuing: Pair;
  #pending: Pair | undefined;
  #retired: Held[];
  /** Set while an async rotation step runs: steps are not reentrant (two concurrent adds would both pass the checks). */
  #rotating = false;

  private constructor(trustDomain: string, opts: Required<Omit<MeshCaOptions, 'trustDomain'>>, roots: Held[], issuing: Pair, pending: Pair | undefined, retired: Held[]) {
    this.trustDomain = trustDomain;
    this.#opts = opts;
    this.#roots = roots;
    this.#issuing = issuing;
    this.#pending = pending;
    this.#retired = retired;
  }

  /** Makes a CA: from `root` when the user supplied one (its key must be present), else with a new root. */
  static async create(opts: MeshCaOptions & { root?: SuppliedRoot }): Promise<MeshCa> {
    const o = resolveOptions(opts);
    const root = opts.root ? await loadRoot(opts.root.certPem, opts.root.keyPem, 'supplied root', o.now()) : await newRoot(opts.trustDomain, o);
    const intermediate = await newIntermediate(opts.trustDomain, root, o);
    return new MeshCa(opts.trustDomain, o, [root], { root, intermediate }, undefined, []);
  }

  /**
   * Restores a CA from Secret `data` (base64 values, as the API returns them; `encoding: 'utf8'` for
   * `stringData`). Accepts our own state (see `toSecretData`) or a user-supplied root alone: `ca.crt` + `ca.key`,
   * or a kubernetes.io/tls Secret's `tls.crt` + `tls.key`; then a new intermediate is made. With no data at all,
   * generates a new root, like `create`.
   */
  static async fromSecretData(data: Record<string, string> | undefined, opts: MeshCaOptions & { encoding?: 'base64' | 'utf8' }): Promise<MeshCa> {
    const o = resolveOptions(opts);
    const enc = opts.encoding ?? 'base64';
    const get = (k: string): string | undefined => {
      const v = data?.[k];
      return v === undefined || v === '' ? undefined : enc === 'base64' ? Buffer.from(v, 'base64').toString('utf8') : v;
    };
    if (!data || Object.keys(data).length === 0) return MeshCa.create(opts);
    const storedTd = get(K.trustDomain);
    if (storedTd !== undefined && storedTd.trim() !== opts.trustDomain) {
      throw new CaError('NM_ERR_CA_TRUST_DOMAIN_CHANGED', `CA Secret holds trust domain ${storedTd.trim()}, configured is ${opts.trustDomain}: changing it would invalidate every identity; use a new Secret or fix the setting`);
    }
    const rootCertPem = get(K.rootCert) ?? get('tls.crt');
    const rootKeyPem = get(K.rootKey) ?? get('tls.key');
    if (!rootCertPem) throw new CaError('NM_ERR_CA_SECRET_INVALID', `CA Secret has no ${K.rootCert} (nor tls.crt): which root should the mesh trust?`);
    const interCertPem = get(K.intermediateCert);
    if (!interCertPem) {
      if (!rootKeyPem) throw new CaError('NM_ERR_CA_SECRET_INVALID', `CA Secret has ${K.rootCert} but neither ${K.rootKey} nor ${K.intermediateCert}: supply the root key, or an intermediate with its key`);
      return MeshCa.create({ ...opts, root: { certPem: rootCertPem, keyPem: rootKeyPem } });
    }
    const now = o.now();
    const issuingRoot = rootKeyPem ? await loadRoot(rootCertPem, rootKeyPem, `Secret ${K.rootCert}`, now) : heldCert(parseOne(rootCertPem, K.rootCert), undefined);
    const intermediate = await loadIntermediate(interCertPem, get(K.intermediateKey), issuingRoot, K.intermediateCert);
    // Keep the stored order of roots.pem, so a restored CA publishes a byte-identical bundle.
    const roots = uniqueByFingerprint([...parseMany(get(K.roots) ?? '', K.roots).map((c) => heldCert(c, undefined)), issuingRoot]);
    let pending: Pair | undefined;
    const pendingInterPem = get(K.pendingIntermediateCert);
    if (pendingInterPem) {
      const pendingRootCertPem = get(K.pendingRootCert);
      const pendingRootKeyPem = get(K.pendingRootKey);
      const pRoot = pendingRootCertPem
        ? pendingRootKeyPem
          ? await loadRoot(pendingRootCertPem, pendingRootKeyPem, `Secret ${K.pendingRootCert}`, now)
          : heldCert(parseOne(pendingRootCertPem, K.pendingRootCert), undefined)
        : issuingRoot;
      pending = { root: pRoot, intermediate: await loadIntermediate(pendingInterPem, get(K.pendingIntermediateKey), pRoot, K.pendingIntermediateCert) };
      if (!roots.some((r) => r.fingerprint === pRoot.fingerprint)) roots.push(pRoot);
    }
    const retired = parseMany(get(K.retired) ?? '', K.retired).map((c) => heldCert(c, undefined));
    // Adopt the root objects that carry keys, so rotation steps can use them.
    const withKeys = roots.map((r) => (r.fingerprint === issuingRoot.fingerprint ? issuingRoot : pending && r.fingerprint === pending.root.fingerprint ? pending.root : r));
    return new MeshCa(opts.trustDomain, o, withKeys, { root: issuingRoot, intermediate }, pending, retired);
  }

  /**
   * Signs an X.509-SVID for `identity` over the public key of `csrPem`.
   *
   * Decisions: the identity comes from the (already authorized) request, never from the CSR. The CSR's
   * self-signature must verify (proof the requester holds the key) and its key must be ECDSA P-256. If the CSR
   * carries a SAN request, it must be exactly the one URI of `identity`, else the request is refused: a
   * mismatch means a confused or malicious requester, and failing loudly beats silently issuing something
   * else. The subject and all other CSR extensions and attributes are ignored; the issued certificate has an
   * empty subject and exactly the SVID profile below.
   */
  async issue(csrPem: string, identity: SvidIdentity, ttlMs?: number): Promise<IssuedSvid> {
    if (!isValidNamespace(identity.namespace) || !isValidServiceAccount(identity.serviceAccount)) {
      throw new CaError('NM_ERR_CA_IDENTITY_INVALID', `identity ${identity.namespace}/${identity.serviceAccount}: namespace must be a DNS-1123 label, service account a DNS-1123 subdomain`);
    }
    const ttl = ttlMs ?? this.#opts.leafTtlMs;
    checkTtl(ttl, 'ttl');
    const spiffeId = formatSpiffeId(this.trustDomain, identity);
    const csr = await parseAndCheckCsr(csrPem, spiffeId);
    const { intermediate } = this.#issuing;
    if (!intermediate.key) throw new CaError('NM_ERR_CA_SECRET_INVALID', `issuing intermediate ${intermediate.cert.subject} has no private key in the CA Secret (${K.intermediateKey})`);
    const now = this.#opts.now();
    const validity = computeLeafValidity(now, ttl, this.#opts.backdateMs, intermediate.cert.notAfter.getTime());
    if (validity.notAfter.getTime() <= now) {
      throw new CaError('NM_ERR_CA_ROTATION_STATE', `issuing intermediate ${intermediate.cert.subject} expired at ${intermediate.cert.notAfter.toISOString()}: rotate it (rotateIntermediate + rotateSwitchIssuer)`);
    }
    const serialNumber = randomSerial();
    const extensions: x509.Extension[] = [
      // SPIFFE X509-SVID §4: leaf, not a CA; digitalSignature only (keyEncipherment means nothing for EC keys).
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth], false),
      // The subject is empty, so RFC 5280 §4.2.1.6 requires the SAN to be critical.
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: spiffeId }], true),
      await x509.SubjectKeyIdentifierExtension.create(csr.publicKey),
      ...authorityKeyId(intermediate.cert),
    ];
    const leaf = await x509.X509CertificateGenerator.create({
      serialNumber,
      subject: '',
      issuer: intermediate.cert.subjectName,
      notBefore: validity.notBefore,
      notAfter: validity.notAfter,
      publicKey: csr.publicKey,
      signingKey: intermediate.key,
      signingAlgorithm: signingAlgorithmFor('P-256'),
      extensions,
    });
    return { certChainPem: certPem(leaf) + certPem(intermediate.cert), notBefore: leaf.notBefore, notAfter: leaf.notAfter, spiffeId, serialNumber };
  }

  /** The bundle to distribute: every trusted root and every intermediate that may have signed a live leaf. */
  bundle(): CaBundle {
    const now = this.#opts.now();
    const rootsPem = this.#roots.map((r) => certPem(r.cert)).join('');
    const inters = uniqueByFingerprint([this.#issuing.intermediate, ...(this.#pending ? [this.#pending.intermediate] : []), ...this.#retired.filter((r) => r.cert.notAfter.getTime() > now)]);
    const intermediatesPem = inters.map((i) => certPem(i.cert)).join('');
    return { rootsPem, intermediatesPem, pem: rootsPem + intermediatesPem };
  }

  /** Rotation step 1: adds a new root (supplied or generated) and its intermediate to the bundle, not yet issuing. */
  async rotateAddRoot(root?: SuppliedRoot): Promise<{ rootFingerprint: string }> {
    return this.#exclusive(() => this.#addRoot(root));
  }

  async #addRoot(root: SuppliedRoot | undefined): Promise<{ rootFingerprint: string }> {
    if (this.#pending) throw new CaError('NM_ERR_CA_ROTATION_STATE', 'a rotation is already pending: call rotateSwitchIssuer() first');
    const r = root ? await loadRoot(root.certPem, root.keyPem, 'rotation root', this.#opts.now()) : await newRoot(this.trustDomain, this.#opts);
    if (this.#roots.some((x) => x.fingerprint === r.fingerprint)) throw new CaError('NM_ERR_CA_ROTATION_STATE', `root ${r.cert.subject} is already trusted`);
    this.#pending = { root: r, intermediate: await newIntermediate(this.trustDomain, r, this.#opts) };
    this.#roots = [...this.#roots, r];
    return { rootFingerprint: r.fingerprint };
  }

  /** Prepares a new intermediate under the issuing root (published in the bundle, not yet issuing). */
  async rotateIntermediate(): Promise<void> {
    return this.#exclusive(() => this.#prepareIntermediate());
  }

  async #prepareIntermediate(): Promise<void> {
    if (this.#pending) throw new CaError('NM_ERR_CA_ROTATION_STATE', 'a rotation is already pending: call rotateSwitchIssuer() first');
    if (!this.#issuing.root.key) throw new CaError('NM_ERR_CA_ROTATION_STATE', `root ${this.#issuing.root.cert.subject} has no key here (offline root): sign a new intermediate offline and restore it via the Secret`);
    this.#pending = { root: this.#issuing.root, intermediate: await newIntermediate(this.trustDomain, this.#issuing.root, this.#opts) };
  }

  /** Rotation step 2: the pending intermediate becomes the issuer; the old one stays in the bundle until it expires or its root is dropped. */
  rotateSwitchIssuer(): void {
    if (this.#rotating) throw new CaError('NM_ERR_CA_ROTATION_STATE', 'another rotation step is still running: run rotation steps one after another');
    if (!this.#pending) throw new CaError('NM_ERR_CA_ROTATION_STATE', 'nothing to switch to: call rotateAddRoot() or rotateIntermediate() first');
    this.#retired.push(this.#issuing.intermediate);
    this.#issuing = this.#pending;
    this.#pending = undefined;
  }

  /**
   * Rotation step 3: removes every root except the issuing one (and a pending one), with the intermediates
   * they signed. Leaves from the old chain are refused by peers from the moment they get the new bundle.
   * Returns the fingerprints removed.
   */
  async rotateDropRoot(): Promise<{ dropped: string[] }> {
    return this.#exclusive(() => this.#dropRoots());
  }

  async #dropRoots(): Promise<{ dropped: string[] }> {
    const keep = new Set([this.#issuing.root.fingerprint, ...(this.#pending ? [this.#pending.root.fingerprint] : [])]);
    const dropped = this.#roots.filter((r) => !keep.has(r.fingerprint));
    if (dropped.length === 0) throw new CaError('NM_ERR_CA_ROTATION_STATE', 'no old root to drop: only the issuing root is trusted');
    const keptRoots = this.#roots.filter((r) => keep.has(r.fingerprint));
    const retired: Held[] = [];
    for (const i of this.#retired) if (await isSignedByAny(i.cert, keptRoots)) retired.push(i);
    // Swap state only after every await, so a concurrent issue() never sees half a rotation.
    this.#roots = keptRoots;
    this.#retired = retired;
    return { dropped: dropped.map((d) => d.fingerprint) };
  }

  async #exclusive<T>(step: () => Promise<T>): Promise<T> {
    if (this.#rotating) throw new CaError('NM_ERR_CA_ROTATION_STATE', 'another rotation step is still running: run rotation steps one after another');
    this.#rotating = true;
    try {
      return await step();
    } finally {
      this.#rotating = false;
    }
  }

  /** Expiry of every root and intermediate, and warnings for those within 60 days (for `kubectl mesh check`). */
  inspect(): CaInspection {
    const now = this.#opts.now();
    const certificates: CaCertSummary[] = [
      ...this.#roots.map((r) => summary('root', r, r.fingerprint === this.#issuing.root.fingerprint, r.fingerprint === this.#pending?.root.fingerprint && r !== this.#issuing.root)),
      summary('intermediate', this.#issuing.intermediate, true, false),
      ...(this.#pending ? [summary('intermediate', this.#pending.intermediate, false, true)] : []),
      ...this.#retired.map((r) => summary('intermediate', r, false, false)),
    ];
    return { trustDomain: this.trustDomain, certificates, warnings: computeCaExpiryWarnings(certificates.filter((c) => c.role === 'root' || c.issuing || c.pending), now) };
  }

  /** The whole state as Secret `data` (base64 values). Holds private keys: store it in a Secret only. */
  async toSecretData(): Promise<Record<string, string>> {
    // Snapshot first: the awaits below must not interleave with a rotation step's state swap.
    const issuing = this.#issuing;
    const pending = this.#pending;
    const roots = this.#roots;
    const retired = this.#retired;
    const out: Record<string, string> = {};
    const put = (k: string, v: string): void => {
      out[k] = Buffer.from(v, 'utf8').toString('base64');
    };
    put(K.trustDomain, this.trustDomain);
    put(K.rootCert, certPem(issuing.root.cert));
    if (issuing.root.key) put(K.rootKey, await exportPrivateKeyPem(issuing.root.key));
    put(K.roots, roots.map((r) => certPem(r.cert)).join(''));
    put(K.intermediateCert, certPem(issuing.intermediate.cert));
    if (issuing.intermediate.key) put(K.intermediateKey, await exportPrivateKeyPem(issuing.intermediate.key));
    if (pending) {
      put(K.pendingRootCert, certPem(pending.root.cert));
      if (pending.root.key) put(K.pendingRootKey, await exportPrivateKeyPem(pending.root.key));
      put(K.pendingIntermediateCert, certPem(pending.intermediate.cert));
      if (pending.intermediate.key) put(K.pendingIntermediateKey, await exportPrivateKeyPem(pending.intermediate.key));
    }
    if (retired.length > 0) put(K.retired, retired.map((r) => certPem(r.cert)).join(''));
    return out;
  }
}

function resolveOptions(opts: MeshCaOptions): Required<Omit<MeshCaOptions, 'trustDomain'>> {
  if (!isValidTrustDomain(opts.trustDomain)) {
    throw new CaError('NM_ERR_CA_IDENTITY_INVALID', `trustDomain ${JSON.stringify(opts.trustDomain)}: use lowercase letters, digits, '.', '-', '_' (no scheme, port or path)`);
  }
  const o = {
    leafTtlMs: opts.leafTtlMs ?? LEAF_TTL.default,
    backdateMs: opts.backdateMs ?? DEFAULT_BACKDATE_MS,
    intermediateTtlMs: opts.intermediateTtlMs ?? 365 * DAY,
    rootTtlMs: opts.rootTtlMs ?? 10 * 365 * DAY,
    now: opts.now ?? Date.now,
  };
  checkTtl(o.leafTtlMs, 'leafTtlMs');
  if (o.backdateMs < 0 || o.backdateMs > DAY) throw new CaError('NM_ERR_CA_TTL_INVALID', `backdateMs ${o.backdateMs}: use 0 … 86400000 ms`);
  return o;
}

function checkTtl(ttl: number, field: string): void {
  if (!Number.isFinite(ttl) || ttl < LEAF_TTL.min || ttl > LEAF_TTL.max) {
    throw new CaError('NM_ERR_CA_TTL_INVALID', `${field} ${ttl} ms is outside ${LEAF_TTL.min} ms (1 minute) … ${LEAF_TTL.max} ms (30 days)`);
  }
}

async function parseAndCheckCsr(csrPem: string, spiffeId: string): Promise<x509.Pkcs10CertificateRequest> {
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
  } catch (err) {
    throw new CaError('NM_ERR_CA_CSR_INVALID', `CSR for ${spiffeId} does not parse as PKCS#10 PEM/DER: ${(err as Error).message}`, { cause: err });
  }
  const alg = csr.publicKey.algorithm as { name?: string; namedCurve?: string };
  if (alg.name !== 'ECDSA' || alg.namedCurve !== 'P-256') {
    throw new CaError('NM_ERR_CA_CSR_INVALID', `CSR for ${spiffeId}: key is ${alg.name ?? '?'} ${alg.namedCurve ?? ''}, the mesh issues ECDSA P-256 only`);
  }
  let ok = false;
  try {
    ok = await csr.verify();
  } catch {
    ok = false;
  }
  if (!ok) throw new CaError('NM_ERR_CA_CSR_INVALID', `CSR for ${spiffeId}: self-signature does not verify (tampered, or signed with another key)`);
  const sanExts = csr.extensions.filter((e) => e.type === '2.5.29.17');
  if (sanExts.length > 1) throw new CaError('NM_ERR_CA_CSR_SAN_MISMATCH', `CSR for ${spiffeId} requests ${sanExts.length} SAN extensions`);
  if (sanExts.length === 1) {
    const names = new x509.SubjectAlternativeNameExtension(sanExts[0]!.rawData).names.toJSON();
    if (names.length !== 1 || names[0]!.type !== 'url' || names[0]!.value !== spiffeId) {
      throw new CaError('NM_ERR_CA_CSR_SAN_MISMATCH', `CSR asks for SAN ${JSON.stringify(names.map((n) => `${n.type}:${n.value}`))}, but the request is authorized for ${spiffeId} only`);
    }
  }
  return csr;
}

function authorityKeyId(issuer: x509.X509Certificate): x509.Extension[] {
  // Copy the issuer's own SKI: a user-supplied root may compute it differently than we would, and OpenSSL
  // refuses an issuer whose SKI differs from the child's AKI.
  const ski = issuer.getExtension(x509.SubjectKeyIdentifierExtension);
  return ski ? [new x509.AuthorityKeyIdentifierExtension(ski.keyId)] : [];
}

function fingerprintOf(cert: x509.X509Certificate): string {
  return createHash('sha256').update(new Uint8Array(cert.rawData)).digest('hex');
}

function heldCert(cert: x509.X509Certificate, key: CaKey | undefined): Held {
  return { cert, key, fingerprint: fingerprintOf(cert) };
}

function uniqueByFingerprint(list: Held[]): Held[] {
  const seen = new Set<string>();
  return list.filter((h) => (seen.has(h.fingerprint) ? false : (seen.add(h.fingerprint), true)));
}

function parseOne(pem: string, what: string): x509.X509Certificate {
  const all = parseMany(pem, what);
  if (all.length !== 1) throw new CaError('NM_ERR_CA_SECRET_INVALID', `${what}: expected one certificate, found ${all.length}`);
  return all[0]!;
}

function parseMany(pem: string, what: string): x509.X509Certificate[] {
  try {
    return x509.PemConverter.decodeWithHeaders(pem)
      .filter((b) => b.type === 'CERTIFICATE')
      .map((b) => new x509.X509Certificate(b.rawData));
  } catch (err) {
    throw new CaError('NM_ERR_CA_SECRET_INVALID', `${what}: certificate PEM does not parse: ${(err as Error).message}`, { cause: err });
  }
}

async function isSignedByAny(child: x509.X509Certificate, roots: Held[]): Promise<boolean> {
  for (const r of roots) if (await child.verify({ publicKey: r.cert.publicKey, signatureOnly: true }).catch(() => false)) return true;
  return false;
}

async function newRoot(trustDomain: string, o: Required<Omit<MeshCaOptions, 'trustDomain'>>): Promise<Held> {
  const keys = await generateCaKeyPair('P-256');
  const now = o.now();
  const serialNumber = randomSerial();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber,
    // Distinct names per root keep chain building unambiguous while two roots overlap.
    name: `O=nodemesh, OU=${trustDomain}, CN=nodemesh root ${serialNumber.slice(0, 8)}`,
    keys,
    notBefore: new Date(now - o.backdateMs),
    notAfter: new Date(now + o.rootTtlMs),
    signingAlgorithm: signingAlgorithmFor('P-256'),
    extensions: [
      // pathLen 1: exactly one intermediate below the root.
      new x509.BasicConstraintsExtension(true, 1, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return heldCert(cert, keys.privateKey);
}

async function newIntermediate(trustDomain: string, root: Held, o: Required<Omit<MeshCaOptions, 'trustDomain'>>): Promise<Held> {
  if (!root.key) throw new CaError('NM_ERR_CA_ROTATION_STATE', `root ${root.cert.subject} has no private key here: cannot sign an intermediate`);
  const keys = await generateCaKeyPair('P-256');
  const now = o.now();
  const serialNumber = randomSerial();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber,
    subject: `O=nodemesh, OU=${trustDomain}, CN=nodemesh intermediate ${serialNumber.slice(0, 8)}`,
    issuer: root.cert.subjectName,
    notBefore: new Date(now - o.backdateMs),
    notAfter: new Date(Math.min(now + o.intermediateTtlMs, root.cert.notAfter.getTime())),
    publicKey: keys.publicKey,
    signingKey: root.key,
    signingAlgorithm: signingAlgorithmFor(curveOf(root.cert, 'root')),
    extensions: [
      // pathLen 0: signs leaves only.
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ...authorityKeyId(root.cert),
    ],
  });
  return heldCert(cert, keys.privateKey);
}

/** Loads and checks a root: a self-signed CA, allowed to sign one intermediate, currently valid, key matching. */
async function loadRoot(certPemText: string, keyPem: string, what: string, now: number): Promise<Held> {
  const certs = parseMany(certPemText, what);
  if (certs.length !== 1) throw new CaError('NM_ERR_CA_ROOT_INVALID', `${what}: expected exactly one certificate in the PEM, found ${certs.length}`);
  const cert = certs[0]!;
  const bc = cert.getExtension(x509.BasicConstraintsExtension);
  if (!bc?.ca) throw new CaError('NM_ERR_CA_ROOT_INVALID', `${what} ${cert.subject}: basicConstraints cA is not TRUE, it cannot sign certificates`);
  if (bc.pathLength !== undefined && bc.pathLength < 1) throw new CaError('NM_ERR_CA_ROOT_INVALID', `${what} ${cert.subject}: pathLenConstraint ${bc.pathLength} leaves no room for the intermediate the mesh needs`);
  const ku = cert.getExtension(x509.KeyUsagesExtension);
  if (ku && (ku.usages & x509.KeyUsageFlags.keyCertSign) === 0) throw new CaError('NM_ERR_CA_ROOT_INVALID', `${what} ${cert.subject}: keyUsage lacks keyCertSign`);
  if (!(await cert.isSelfSigned())) throw new CaError('NM_ERR_CA_ROOT_INVALID', `${what} ${cert.subject}: not self-signed; supply the root itself (an intermediate as mesh root is not supported yet)`);
  if (cert.notAfter.getTime() <= now) throw new CaError('NM_ERR_CA_ROOT_INVALID', `${what} ${cert.subject}: expired at ${cert.notAfter.toISOString()}`);
  const key = await importKeyFor(cert, keyPem, `${what} ${cert.subject}`);
  return heldCert(cert, key);
}

async function loadIntermediate(certPemText: string, keyPem: string | undefined, root: Held, what: string): Promise<Held> {
  const cert = parseOne(certPemText, what);
  if (!(await cert.verify({ publicKey: root.cert.publicKey, signatureOnly: true }))) {
    throw new CaError('NM_ERR_CA_SECRET_INVALID', `${what} ${cert.subject} is not signed by root ${root.cert.subject}: the Secret mixes two CAs`);
  }
  const key = keyPem ? await importKeyFor(cert, keyPem, `${what} ${cert.subject}`) : undefined;
  return heldCert(cert, key);
}

function summary(role: 'root' | 'intermediate', h: Held, issuing: boolean, pending: boolean): CaCertSummary {
  return { role, fingerprint: h.fingerprint, subject: h.cert.subject, notBefore: h.cert.notBefore, notAfter: h.cert.notAfter, issuing, pending };
}
