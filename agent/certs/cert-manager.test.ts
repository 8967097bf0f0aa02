// The certificate manager on a fake clock: half-life renewal with jitter, CA outages, removal, disk persistence.
import { describe, it, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CertManager, type CertManagerOptions, type WorkloadCertificate } from './cert-manager.ts';
import { FakeClock } from './testing/fake-clock.ts';
import { makeTestSigner, type TestSigner } from './testing/test-signer.ts';
import { parseTrustBundle } from '../../l7proxy/identity/trust-bundle.ts';
import { verifyPeerChain } from '../../l7proxy/identity/verify-peer-chain.ts';
import * as x509 from './x509.ts';

const TD = 'td.test';
const WEB = { namespace: 'shop', serviceAccount: 'web' };
const MIN = 60_000;
const TTL = 10 * MIN;

/** Deterministic [0,1) sequence (LCG), so jitter is exercised but runs are reproducible. */
function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

interface Harness {
  clock: FakeClock;
  signer: TestSigner;
  mgr: CertManager;
  rotations: Array<{ at: number; cert: WorkloadCertificate }>;
  expiries: number[];
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

async function harness(extra: Partial<CertManagerOptions> = {}, signerIn?: TestSigner, clockIn?: FakeClock): Promise<Harness> {
  const clock = clockIn ?? new FakeClock(Date.now());
  const signer = signerIn ?? (await makeTestSigner(TD, () => clock.now(), TTL));
  const mgr = new CertManager({ trustDomain: TD, requestCertificate: signer.request, clock, random: seeded(42), ...extra });
  clock.settle = () => mgr.idle();
  const h: Harness = { clock, signer, mgr, rotations: [], expiries: [] };
  mgr.onRotate((cert) => h.rotations.push({ at: clock.now(), cert }));
  mgr.onExpire(() => h.expiries.push(clock.now()));
  cleanups.push(() => mgr.stop());
  return h;
}

describe('CertManager', () => {
  it('issues at once and renews at ~50 % of the lifetime with jitter, across many rotations', async () => {
    const h = await harness();
    h.mgr.setIdentities([WEB]);
    await h.mgr.idle();
    assert.equal(h.rotations.length, 1);
    const first = h.mgr.current(WEB);
    assert.ok(first);
    assert.equal(first.spiffeId, `spiffe://${TD}/ns/shop/sa/web`);
    await h.clock.advance(60 * MIN);
    assert.ok(h.rotations.length >= 6, `expected ≥ 6 certificates in an hour of 10-minute certs, got ${h.rotations.length}`);
    const gaps = h.rotations.slice(1).map((r, i) => (r.at - h.rotations[i]!.at) / TTL);
    for (const g of gaps) assert.ok(g >= 0.45 && g <= 0.55, `renewal at ${g.toFixed(3)} of the lifetime`);
    assert.ok(new Set(gaps.map((g) => g.toFixed(4))).size > 1, 'jitter: renewal points differ');
    // Every rotation carried a new key, and the current one is the last.
    assert.equal(new Set(h.rotations.map((r) => r.cert.keyPem)).size, h.rotations.length);
    assert.equal(h.mgr.current(WEB)?.certChainPem, h.rotations.at(-1)!.cert.certChainPem);
  });

  it('issued chains pass the proxy verifier', async () => {
    const h = await harness();
    h.mgr.setIdentities([WEB]);
    await h.mgr.idle();
    const cert = h.mgr.current(WEB)!;
    const chain = x509.PemConverter.decode(cert.certChainPem).map((d) => new Uint8Array(d));
    const r = verifyPeerChain(chain, parseTrustBundle(h.signer.rootPem), { trustDomain: TD, now: h.clock.now() });
    assert.equal(r.ok ? r.spiffeId : r.reason, `spiffe://${TD}/ns/shop/sa/web`);
  });

  it('keeps the certificate through a CA outage until expiry, retrying with backoff, and recovers', async () => {
    const h = await harness();
    h.mgr.setIdentities([WEB]);
    await h.mgr.idle();
    const held = h.mgr.current(WEB)!;
    const notAfter = held.notAfter.getTime();
    h.signer.down = true;
    const callsBefore = h.signer.calls.length;
    // Just before expiry: still the same certificate, never dropped (istio/istio#56452).
    await h.clock.advance(notAfter - h.clock.now() - 1000);
    assert.equal(h.mgr.current(WEB)?.certChainPem, held.certChainPem);
    const attempts = h.signer.calls.slice(callsBefore);
    assert.ok(attempts.length >= 5, `expected several retries, got ${attempts.length}`);
    const gaps = attempts.slice(1).map((t, i) => t - attempts[i]!);
    // Backoff: the early gaps grow (1 s, 2 s, 4 s … with ±10 %), and every attempt happens before expiry.
    assert.ok(gaps[1]! > gaps[0]! && gaps[2]! > gaps[1]!, `gaps grow: ${gaps.slice(0, 4).join(', ')}`);
    assert.ok(attempts.every((t) => t < notAfter));
    const st = h.mgr.status()[0]!;
    assert.equal(st.state, 'valid');
    assert.ok(st.failures >= 5 && st.lastError?.includes('ECONNREFUSED'));
    assert.ok(st.nextAttemptAt! < notAfter);
    // Past expiry: no certificate is offered any more, and the proxy is told.
    await h.clock.advance(2000);
    assert.equal(h.mgr.current(WEB), undefined);
    assert.equal(h.expiries.length, 1);
    assert.equal(h.mgr.status()[0]!.state, 'expired');
    // CA back: a new certificate within one maximum backoff.
    h.signer.down = false;
    await h.clock.advance(22_000);
    assert.ok(h.mgr.current(WEB), 'recovered without a manual step');
    assert.equal(h.mgr.status()[0]!.failures, 0);
  });

  it('F9: CA unreachable for 1.5× the TTL from the first renewal on: the same certificate is served until its notAfter, never earlier dropped; back within 30 s', async () => {
    const h = await harness();
    h.mgr.setIdentities([WEB]);
    await h.mgr.idle();
    const held = h.mgr.current(WEB)!;
    const st0 = h.mgr.status()[0]!;
    assert.ok(st0.serialNumber && st0.issuer, 'status names the serial and issuer');
    const rotationsBefore = h.rotations.length;
    // The CA goes away just before the first renewal is due.
    await h.clock.advance(st0.nextAttemptAt! - h.clock.now() - 1);
    h.signer.down = true;
    const outageEnd = h.clock.now() + 1.5 * TTL;
    let servedUntil = 0;
    while (h.clock.now() < outageEnd) {
      await h.clock.advance(1000);
      const c = h.mgr.current(WEB);
      if (h.clock.now() < held.notAfter.getTime()) {
        assert.equal(c?.serialNumber, held.serialNumber, `certificate not served at ${new Date(h.clock.now()).toISOString()}, before its notAfter`);
        servedUntil = h.clock.now();
      } else {
        assert.equal(c, undefined, 'an expired certificate must not be offered');
      }
    }
    assert.ok(held.notAfter.getTime() - servedUntil <= 1000, 'served up to its last second');
    assert.equal(h.rotations.length, rotationsBefore, 'no rotation event while the CA was away');
    assert.equal(h.expiries.length, 1, 'one expiry event, at notAfter');
    assert.ok(Math.abs(h.expiries[0]! - held.notAfter.getTime()) <= 1000);
    h.signer.down = false;
    const back = h.clock.now();
    while (!h.mgr.current(WEB) && h.clock.now() - back < 30_000) await h.clock.advance(500);
    assert.ok(h.mgr.current(WEB), 'not recovered within 30 s of the CA coming back');
    assert.notEqual(h.mgr.current(WEB)!.serialNumber, held.serialNumber);
    assert.equal(h.mgr.status()[0]!.installed, 2);
  });

  it('retries when the first request fails, and refuses a chain for another key', async () => {
    const h = await harness();
    h.signer.wrongKey = true;
    h.mgr.setIdentities([WEB]);
    await h.mgr.idle();
    assert.equal(h.mgr.current(WEB), undefined);
    assert.match(h.mgr.status()[0]!.lastError ?? '', /another key/);
    h.signer.wrongKey = false;
    await h.clock.advance(1500);
    assert.ok(h.mgr.current(WEB));
  });

  it('drops identities no longer needed and ignores answers that arrive after', async () => {
    const h = await harness();
    const db = { namespace: 'shop', serviceAccount: 'db' };
    h.mgr.setIdentities([WEB, db]);
    await h.mgr.idle();
    assert.ok(h.mgr.current(db));
    h.mgr.setIdentities([WEB]);
    assert.equal(h.mgr.current(db), undefined);
    const calls = h.signer.calls.length;
    await h.clock.advance(3 * TTL);
    assert.equal(h.mgr.current(db), undefined);
    assert.deepEqual(h.mgr.status().map((s) => s.spiffeId), [`spiffe://${TD}/ns/shop/sa/web`]);
    assert.ok(h.signer.calls.length > calls, 'web kept renewing');
    // Removal while a request is in flight: the late answer is discarded.
    h.mgr.setIdentities([WEB, db]);
    h.mgr.setIdentities([WEB]);
    await h.mgr.idle();
    assert.equal(h.mgr.current(db), undefined);
  });

  it('refuses invalid identity names without changing anything', async () => {
    const h = await harness();
    assert.throws(() => h.mgr.setIdentities([WEB, { namespace: 'shop', serviceAccount: '../etc' }]), /DNS-1123/);
    assert.deepEqual(h.mgr.status(), []);
  });

  it('persists atomically (0600) and a restarted manager serves the stored certificate without asking the CA', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'nm-certs-test-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const h = await harness({ storeDir: dir });
    h.mgr.setIdentities([WEB]);
    await h.mgr.idle();
    const files = await readdir(dir);
    assert.deepEqual(files, ['shop_web.pem']);
    assert.equal((await stat(join(dir, 'shop_web.pem'))).mode & 0o777, 0o600);
    const stored = h.mgr.current(WEB)!;
    await h.mgr.stop();

    h.signer.down = true;
    const again = await harness({ storeDir: dir }, h.signer, h.clock);
    const calls = h.signer.calls.length;
    again.mgr.setIdentities([WEB]);
    await again.mgr.idle();
    assert.equal(again.mgr.current(WEB)?.certChainPem, stored.certChainPem);
    assert.equal(h.signer.calls.length, calls, 'no CA call while the stored certificate is fresh');
    again.mgr.setIdentities([]);
    await again.mgr.idle();
    assert.deepEqual(await readdir(dir), [], 'dropped identity removed from disk');
  });
});
