/**
 * TLS material of the server: an ECDSA P-256 CA and a serving certificate (SANs 127.0.0.1, localhost,
 * kubernetes.default.svc, the first service IP), made with @peculiar/x509 on Node's webcrypto and kept
 * in stateDir so restarts reuse them (and kubeconfigs stay valid).
 */

// @peculiar/x509 resolves its algorithms through tsyringe, which needs the Reflect polyfill loaded first.
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { writeFileAtomic } from '../../agent/atomic-file.ts';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { ApiServerError, ERROR_CODES } from './errors.ts';

type Key = webcrypto.CryptoKey;
type KeyPair = webcrypto.CryptoKeyPair;
type SelfSignedParams = Parameters<typeof x509.X509CertificateGenerator.createSelfSigned>[0];
type CreateParams = Parameters<typeof x509.X509CertificateGenerator.create>[0];

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const EC = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };

/** PEM texts of the CA and the serving certificate. */
export interface ServerCertificates {
  caPem: string;
  caKeyPem: string;
  certPem: string;
  keyPem: string;
}

/** Names the serving certificate must cover. */
export interface CertificateNames {
  dns: string[];
  ips: string[];
}

function toPem(der: ArrayBuffer, label: string): string {
  const b64 = Buffer.from(der).toString('base64');
  return `-----BEGIN ${label}-----\n${b64.match(/.{1,64}/g)!.join('\n')}\n-----END ${label}-----\n`;
}

function fromPem(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
}

/** Imports a PKCS#8 PEM EC private key for signing. */
export async function importSigningKey(pem: string): Promise<Key> {
  return webcrypto.subtle.importKey('pkcs8', fromPem(pem), EC, true, ['sign']);
}

/** Generates an EC P-256 key pair and returns the private key as PKCS#8 PEM. */
export async function generateKeyPem(): Promise<{ keys: KeyPair; pem: string }> {
  const keys = (await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as KeyPair;
  const der = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  return { keys, pem: toPem(der, 'PRIVATE KEY') };
}

async function publicFromPrivatePem(pem: string): Promise<Key> {
  // webcrypto cannot derive a public key from a private one; go through JWK (d dropped).
  const priv = await webcrypto.subtle.importKey('pkcs8', fromPem(pem), EC, true, ['sign']);
  const jwk = await webcrypto.subtle.exportKey('jwk', priv);
  delete jwk.d;
  jwk.key_ops = ['verify'];
  return webcrypto.subtle.importKey('jwk', jwk, EC, true, ['verify']);
}

async function makeCa(): Promise<{ certPem: string; keyPem: string }> {
  const { keys, pem } = await generateKeyPem();
  const now = new Date(Date.now() - 60_000);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: 'CN=nodemesh-sandbox-ca, O=nodemesh',
    notBefore: now,
    notAfter: new Date(now.getTime() + 10 * 365 * 86400_000),
    signingAlgorithm: EC,
    keys: keys as unknown as SelfSignedParams['keys'],
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey as never),
    ],
  });
  return { certPem: cert.toString('pem') + '\n', keyPem: pem };
}

async function makeServing(caPem: string, caKeyPem: string, names: CertificateNames): Promise<{ certPem: string; keyPem: string }> {
  const ca = new x509.X509Certificate(caPem);
  const caKey = await importSigningKey(caKeyPem);
  const caPub = await publicFromPrivatePem(caKeyPem);
  const { keys, pem } = await generateKeyPem();
  const now = new Date(Date.now() - 60_000);
  const cert = await x509.X509CertificateGenerator.create({
    subject: 'CN=nodemesh-apiserver, O=nodemesh',
    issuer: ca.subject,
    notBefore: now,
    notAfter: new Date(now.getTime() + 2 * 365 * 86400_000),
    signingAlgorithm: EC,
    publicKey: keys.publicKey as never,
    signingKey: caKey as unknown as (CreateParams & { signingKey: unknown })['signingKey'],
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], false),
      new x509.SubjectAlternativeNameExtension([...names.dns.map((value) => ({ type: 'dns' as const, value })), ...names.ips.map((value) => ({ type: 'ip' as const, value }))], false),
      await x509.AuthorityKeyIdentifierExtension.create(caPub as never),
    ],
  });
  return { certPem: cert.toString('pem') + '\n', keyPem: pem };
}

function covers(certPem: string, names: CertificateNames): boolean {
  const cert = new x509.X509Certificate(certPem);
  if (cert.notAfter.getTime() < Date.now() + 30 * 86400_000) return false;
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  if (!san) return false;
  const have = new Set(san.names.items.map((n) => `${n.type}:${n.value}`));
  return names.dns.every((d) => have.has(`dns:${d}`)) && names.ips.every((ip) => have.has(`ip:${ip}`));
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

/** The CA and serving key must survive a crash or a full disk: the old pair, or the new one (agent/atomic-file.ts). */
async function writeAtomic(path: string, text: string, mode: number): Promise<void> {
  await writeFileAtomic(path, text, { mode });
}

/**
 * Loads the CA and serving certificate from stateDir, making whatever is missing; a serving certificate
 * that does not cover `names` (or expires within 30 days) is reissued from the same CA.
 */
export async function ensureCertificates(stateDir: string | undefined, names: CertificateNames, log: (line: string) => void): Promise<ServerCertificates> {
  try {
    if (!stateDir) {
      const ca = await makeCa();
      const serving = await makeServing(ca.certPem, ca.keyPem, names);
      return { caPem: ca.certPem, caKeyPem: ca.keyPem, certPem: serving.certPem, keyPem: serving.keyPem };
    }
    await mkdir(stateDir, { recursive: true, mode: 0o700 });
    const paths = { ca: join(stateDir, 'ca.crt'), caKey: join(stateDir, 'ca.key'), cert: join(stateDir, 'apiserver.crt'), key: join(stateDir, 'apiserver.key') };
    let caPem = await readIfExists(paths.ca);
    let caKeyPem = await readIfExists(paths.caKey);
    if (!caPem || !caKeyPem) {
      const ca = await makeCa();
      caPem = ca.certPem;
      caKeyPem = ca.keyPem;
      await writeAtomic(paths.caKey, caKeyPem, 0o600);
      await writeAtomic(paths.ca, caPem, 0o644);
      log(`apiserver: made a new CA in ${paths.ca}`);
    }
    let certPem = await readIfExists(paths.cert);
    let keyPem = await readIfExists(paths.key);
    if (!certPem || !keyPem || !covers(certPem, names)) {
      const serving = await makeServing(caPem, caKeyPem, names);
      certPem = serving.certPem;
      keyPem = serving.keyPem;
      await writeAtomic(paths.key, keyPem, 0o600);
      await writeAtomic(paths.cert, certPem, 0o644);
      log(`apiserver: issued a serving certificate for ${[...names.dns, ...names.ips].join(', ')}`);
    }
    return { caPem, caKeyPem, certPem, keyPem };
  } catch (e) {
    throw new ApiServerError(ERROR_CODES.certs, `cannot prepare the API server's TLS certificates in ${stateDir ?? '(memory)'}: ${(e as Error).message}; remove the directory's *.crt/*.key files to start over`, { cause: e });
  }
}
