import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FakeRuntimeClock } from './clock.ts';
import { LeaderElector, type LeaseApi, type LeaseRecord } from './leader-election.ts';

/** One Lease in memory with resourceVersion checks, shared by every replica's client. */
class FakeLeaseStore {
  record: LeaseRecord | undefined;
  rv = 0;
  writes = 0;
}

/** A replica's view of the store, which can be cut off (errors) or hang (no answer). */
function client(store: FakeLeaseStore): LeaseApi & { down: boolean; hang: boolean } {
  const c = {
    description: 'Lease test/lease',
    down: false,
    hang: false,
    async get() {
      await c.gate();
      return store.record ? { record: { ...store.record }, resourceVersion: String(store.rv) } : undefined;
    },
    async create(r: LeaseRecord) {
      await c.gate();
      if (store.record) throw Object.assign(new Error('AlreadyExists'), { code: 409 });
      store.record = { ...r };
      store.rv++;
      store.writes++;
    },
    async update(r: LeaseRecord, rv: string) {
      await c.gate();
      if (rv !== String(store.rv)) throw Object.assign(new Error('Conflict'), { code: 409 });
      store.record = { ...r };
      store.rv++;
      store.writes++;
    },
    async gate() {
      if (c.hang) await new Promise(() => {});
      if (c.down) throw new Error('connect ECONNREFUSED');
    },
  };
  return c;
}

function elector(name: string, api: LeaseApi, clock: FakeRuntimeClock, events: string[]): LeaderElector {
  return new LeaderElector({
    identity: name,
    api,
    clock,
    random: () => 0.5,
    onStartedLeading: () => events.push(`${clock.now()} ${name} start`),
    onStoppedLeading: () => events.push(`${clock.now()} ${name} stop`),
  });
}

/** Advances time in small steps, failing if two replicas ever both pass the write fence. */
async function run(clock: FakeRuntimeClock, ms: number, electors: LeaderElector[]): Promise<void> {
  for (let t = 0; t < ms; t += 100) {
    await clock.advance(100);
    const leaders = electors.filter((e) => e.isLeader()).map((e) => e.identity);
    assert.ok(leaders.length <= 1, `at ${clock.now()} both lead: ${leaders.join(', ')}`);
  }
}

test('a lone candidate creates the lease, leads, and renews every retry period', async () => {
  const clock = new FakeRuntimeClock();
  const store = new FakeLeaseStore();
  const events: string[] = [];
  const a = elector('a', client(store), clock, events);
  a.start();
  await run(clock, 100, [a]);
  assert.equal(a.isLeader(), true);
  assert.equal(store.record?.holderIdentity, 'a');
  assert.equal(store.record?.leaseDurationSeconds, 15);
  const before = store.writes;
  await run(clock, 10_000, [a]);
  assert.equal(store.writes - before, 5, 'one renewal per 2 s');
  assert.equal(a.status().holder, 'a');
  await a.stop();
  assert.equal(store.record?.holderIdentity, '', 'released on stop');
  assert.equal(a.isLeader(), false);
});

test('a second candidate never leads while the first renews, and takes over at once after a release', async () => {
  const clock = new FakeRuntimeClock();
  const store = new FakeLeaseStore();
  const events: string[] = [];
  const a = elector('a', client(store), clock, events);
  const b = elector('b', client(store), clock, events);
  a.start();
  await run(clock, 100, [a, b]);
  b.start();
  await run(clock, 60_000, [a, b]);
  assert.equal(a.isLeader(), true);
  assert.equal(b.isLeader(), false);
  assert.equal(b.holder(), 'a', 'the follower knows who leads');
  const stopAt = clock.now();
  await a.stop();
  await run(clock, 5_000, [a, b]);
  assert.equal(b.isLeader(), true);
  const started = Number(events.find((e) => e.endsWith('b start'))!.split(' ')[0]);
  assert.ok(started - stopAt <= 2_000 * 2.2 + 100, `b took over ${started - stopAt} ms after the release`);
  assert.equal(store.record?.leaseTransitions, 1);
  await b.stop();
});

test('a partitioned leader stops writing before anyone else can start', async () => {
  const clock = new FakeRuntimeClock();
  const store = new FakeLeaseStore();
  const events: string[] = [];
  const ca = client(store);
  const a = elector('a', ca, clock, events);
  const b = elector('b', client(store), clock, events);
  a.start();
  await run(clock, 100, [a, b]);
  b.start();
  await run(clock, 5_000, [a, b]);
  const cut = clock.now();
  ca.down = true;
  await run(clock, 30_000, [a, b]);
  assert.equal(b.isLeader(), true);
  const aStop = Number(events.find((e) => e.endsWith('a stop'))!.split(' ')[0]);
  const bStart = Number(events.find((e) => e.endsWith('b start'))!.split(' ')[0]);
  assert.ok(aStop - cut <= 10_000 + 2_100, `a stepped down ${aStop - cut} ms after the cut (renew deadline 10 s)`);
  assert.ok(bStart - cut >= 15_000 - 2_000, `b waited for the lease to expire (${bStart - cut} ms)`);
  assert.ok(aStop < bStart);
  // a comes back: it must not lead again while b renews.
  ca.down = false;
  await run(clock, 20_000, [a, b]);
  assert.equal(a.isLeader(), false);
  assert.equal(b.isLeader(), true);
  await a.stop();
  await b.stop();
});

test('a leader whose lease requests hang steps down by the renew deadline', async () => {
  const clock = new FakeRuntimeClock();
  const store = new FakeLeaseStore();
  const ca = client(store);
  const a = elector('a', ca, clock, []);
  a.start();
  await run(clock, 2_500, [a]);
  assert.equal(a.isLeader(), true);
  const hungAt = clock.now();
  ca.hang = true;
  let fencedAt: number | undefined;
  for (let t = 0; t < 15_000 && fencedAt === undefined; t += 100) {
    await clock.advance(100);
    if (!a.isLeader()) fencedAt = clock.now();
  }
  assert.ok(fencedAt !== undefined && fencedAt - hungAt <= 10_000, `write fence closed ${fencedAt! - hungAt} ms after the API hung`);
  await a.stop({ release: false });
});

test('two candidates racing for a missing lease: exactly one wins', async () => {
  const clock = new FakeRuntimeClock();
  const store = new FakeLeaseStore();
  const a = elector('a', client(store), clock, []);
  const b = elector('b', client(store), clock, []);
  a.start();
  b.start();
  await run(clock, 10_000, [a, b]);
  assert.equal([a, b].filter((e) => e.isLeader()).length, 1);
  await a.stop();
  await b.stop();
});

test('a restarted replica with the same identity takes its lease back at once', async () => {
  const clock = new FakeRuntimeClock();
  const store = new FakeLeaseStore();
  const a1 = elector('a', client(store), clock, []);
  a1.start();
  await run(clock, 3_000, [a1]);
  await a1.stop({ release: false }); // killed: no release
  const a2 = elector('a', client(store), clock, []);
  a2.start();
  await run(clock, 200, [a2]);
  assert.equal(a2.isLeader(), true);
  assert.equal(store.record?.leaseTransitions, 0, 'same holder: no transition');
  await a2.stop();
});

test('settings that would let two leaders overlap are refused', () => {
  assert.throws(() => new LeaderElector({ identity: 'a', api: client(new FakeLeaseStore()), leaseDurationMs: 10_000, renewDeadlineMs: 10_000 }), /leaseDuration .* > renewDeadline/);
});

test('release survives a renewal landing first (409 → re-read → release)', async () => {
  const clock = new FakeRuntimeClock();
  const store = new FakeLeaseStore();
  const c = client(store);
  const a = elector('a', c, clock, []);
  a.start();
  await run(clock, 3_000, [a]);
  const update = c.update.bind(c);
  let bumped = false;
  c.update = async (r, rv) => {
    if (!bumped) {
      bumped = true;
      store.rv++; // the in-flight renewal was stored meanwhile
    }
    return update(r, rv);
  };
  await a.stop();
  assert.equal(store.record?.holderIdentity, '');
});
