/** Test helpers: CSRs as an agent makes them, and OpenSSL's own opinion of an issued chain (via a loopback TLS handshake). */
import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import type { webcrypto } from 'node:crypto';
import * as x509 from '../x509.ts';

/** A key pair and a CSR over it; `san` adds a SAN request, `name` a subject. */
export async function makeCsr(opts: { san?: string[]; name?: string; curve?: 'P-256' | 'P-384' } = {}): Promise<{ csrPem: string; keyPem: string; keys: webcrypto.CryptoKeyPair }> {
  const curve = opts.curve ?? 'P-256';
  const keys = (await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: curve }, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: opts.name ?? '',
    keys,
    signingAlgorithm: { name: 'ECDSA', hash: curve === 'P-384' ? 'SHA-384' : 'SHA-256' },
    extensions: opts.san ? [new x509.SubjectAlternativeNameExtension(opts.san.map((value) => ({ type: 'url' as const, value })))] : [],
  });
  const pkcs8 = await crypto.subtle.exportKey('pkcs8', keys.privateKey);
  return { csrPem: csr.toString('pem'), keyPem: x509.PemConverter.encode([{ type: 'PRIVATE KEY', rawData: pkcs8 }]) + '\n', keys };
}

/**
 * Presents `chainPem` as a TLS 1.3 client certificate to a loopback server whose `ca` is `rootsPem`, and
 * returns OpenSSL's verdict (`authorized`, `authorizationError`): an independent check of what the CA issues.
 */
export async function opensslVerdict(chainPem: string, keyPem: string, rootsPem: string): Promise<{ authorized: boolean; error: string | undefined }> {
  const server = tls.createServer({ minVersion: 'TLSv1.3', ...(await selfServerCert()), ca: rootsPem, requestCert: true, rejectUnauthorized: false });
  try {
    const verdict = new Promise<{ authorized: boolean; error: string | undefined }>((resolve) => {
      server.on('secureConnection', (s: tls.TLSSocket) => {
        resolve({ authorized: s.authorized, error: s.authorizationError ? String(s.authorizationError) : undefined });
        s.destroy();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as AddressInfo;
    const client = tls.connect({ host: '127.0.0.1', port, cert: chainPem, key: keyPem, rejectUnauthorized: false, minVersion: 'TLSv1.3' });
    client.on('error', () => {});
    const result = await verdict;
    client.destroy();
    return result;
  } finally {
    await new Promise<void>((r) => server.close(() => r()));
  }
}

let cached: { cert: string; key: string } | undefined;
async function selfServerCert(): Promise<{ cert: string; key: string }> {
  if (cached) return cached;
  const keys = (await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({ name: 'CN=test server', keys, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } });
  const pkcs8 = await crypto.subtle.exportKey('pkcs8', keys.privateKey);
  cached = { cert: cert.toString('pem') + '\n', key: x509.PemConverter.encode([{ type: 'PRIVATE KEY', rawData: pkcs8 }]) + '\n' };
  return cached;
}
