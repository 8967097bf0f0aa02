/** Test-only signer: a root and intermediate that sign CSRs on a given clock, with a switch to simulate a CA outage. */
import type { webcrypto } from 'node:crypto';
import * as x509 from '../x509.ts';
import type { RequestCertificate } from '../cert-manager.ts';
import type { WorkloadIdentity } from '../workload-key.ts';

const ALG = { name: 'ECDSA', hash: 'SHA-256' } as const;

/** A signer and what it saw. */
export interface TestSigner {
  request: RequestCertificate;
  /** When set, requests fail as if the CA were unreachable. */
  down: boolean;
  /** Clock time of every request (successful or not). */
  calls: number[];
  /** Root PEM, to verify what was issued. */
  rootPem: string;
  /** Makes the next answers deliberately wrong: a certificate for another key. */
  wrongKey: boolean;
}

/** Makes a signer issuing leaves of `ttlMs` from `now()`. */
export async function makeTestSigner(trustDomain: string, now: () => number, ttlMs: number): Promise<TestSigner> {
  const gen = async () => (await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const rootKeys = await gen();
  const t0 = now();
  const far = new Date(t0 + 365 * 86_400_000);
  const root = await x509.X509CertificateGenerator.createSelfSigned({
    name: 'CN=signer root',
    keys: rootKeys,
    signingAlgorithm: ALG,
    notBefore: new Date(t0 - 86_400_000),
    notAfter: far,
    extensions: [new x509.BasicConstraintsExtension(true, 1, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true)],
  });
  const interKeys = await gen();
  const inter = await x509.X509CertificateGenerator.create({
    subject: 'CN=signer intermediate',
    issuer: root.subjectName,
    publicKey: interKeys.publicKey,
    signingKey: rootKeys.privateKey,
    signingAlgorithm: ALG,
    notBefore: new Date(t0 - 86_400_000),
    notAfter: far,
    extensions: [new x509.BasicConstraintsExtension(true, 0, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true)],
  });
  const other = await gen();
  const signer: TestSigner = {
    down: false,
    wrongKey: false,
    calls: [],
    rootPem: root.toString('pem') + '\n',
    request: async (csrPem: string, id: WorkloadIdentity) => {
      signer.calls.push(now());
      if (signer.down) throw Object.assign(new Error('connect ECONNREFUSED operator:8443'), { code: 'ECONNREFUSED' });
      const csr = new x509.Pkcs10CertificateRequest(csrPem);
      if (!(await csr.verify())) throw new Error('bad CSR signature');
      const t = now();
      const leaf = await x509.X509CertificateGenerator.create({
        subject: '',
        issuer: inter.subjectName,
        publicKey: signer.wrongKey ? other.publicKey : csr.publicKey,
        signingKey: interKeys.privateKey,
        signingAlgorithm: ALG,
        notBefore: new Date(t - 60_000),
        notAfter: new Date(t + ttlMs),
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
          new x509.SubjectAlternativeNameExtension([{ type: 'url', value: `spiffe://${trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}` }], true),
        ],
      });
      return { certChainPem: leaf.toString('pem') + '\n' + inter.toString('pem') + '\n', notAfter: leaf.notAfter };
    },
  };
  return signer;
}
