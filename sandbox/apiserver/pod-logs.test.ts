import assert from 'node:assert/strict';
import { appendFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CriStreamSplitter } from '../kubelet/cri-log.ts';
import { parseAccept } from './negotiation.ts';
import { parseLogLines, parsePodLogRequest, renderLogLines } from './pod-logs.ts';
import type { TestServer } from './testing.ts';
import { startTestServer } from './testing.ts';

const POD = { metadata: { name: 'web' }, spec: { containers: [{ name: 'app' }, { name: 'side' }], initContainers: [{ name: 'init' }] } };

let clockNs = 1_700_000_000_000_000_000n;
const clock = (): bigint => (clockNs += 1_000_000_000n);

describe('pods/log request and rendering', () => {
  it('refuses a missing or unknown container with the real server wording', () => {
    assert.throws(() => parsePodLogRequest(POD, new URLSearchParams(), 0), /a container name must be specified for pod web, choose one of: \[app side\] or one of the init containers: \[init\]/);
    assert.throws(() => parsePodLogRequest(POD, new URLSearchParams('container=nope'), 0), /container nope is not valid for pod web/);
    assert.throws(() => parsePodLogRequest(POD, new URLSearchParams('container=app&tailLines=-1'), 0), /tailLines: Invalid value/);
    assert.throws(() => parsePodLogRequest(POD, new URLSearchParams('container=app&sinceSeconds=5&sinceTime=2020-01-01T00:00:00Z'), 0), /at most one of/);
    const r = parsePodLogRequest({ ...POD, spec: { containers: [{ name: 'only' }] } }, new URLSearchParams('follow=true&sinceSeconds=10&limitBytes=5'), 100_000);
    assert.deepEqual(r, { container: 'only', follow: true, previous: false, timestamps: false, sinceMs: 90_000, limitBytes: 5 });
  });

  it('splits output into CRI records (long lines as partial records) and joins them back', () => {
    const s = new CriStreamSplitter('stdout', clock);
    const long = 'x'.repeat(20_000);
    const text = s.push('one\ntw') + s.push(`o\n${long}\n`) + s.push('tail without newline') + s.flush();
    const records = text.trimEnd().split('\n');
    assert.equal(records.length, 5, 'one, two, two pieces of the long line, the tail');
    assert.match(records[0]!, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z stdout F one$/);
    assert.match(records[2]!, / stdout P x+$/);
    const parsed = parseLogLines(text);
    assert.deepEqual(parsed.lines.map((l) => l.text), ['one', 'two', long]);
    assert.equal(parsed.pendingPartial?.text, 'tail without newline');
    assert.equal(parsed.rest, '');
  });

  it('renders tail, timestamps and since', () => {
    const lines = [
      { time: '2026-01-01T00:00:01.000000001Z', text: 'a' },
      { time: '2026-01-01T00:00:02.000000002Z', text: 'b' },
      { time: '2026-01-01T00:00:03.000000003Z', text: 'c' },
    ];
    assert.equal(renderLogLines(lines, { timestamps: false, tailLines: 2 }), 'b\nc\n');
    assert.equal(renderLogLines(lines, { timestamps: true, tailLines: 1 }), '2026-01-01T00:00:03.000000003Z c\n');
    assert.equal(renderLogLines(lines, { timestamps: false, tailLines: 0 }), '');
    assert.equal(renderLogLines(lines, { timestamps: false, sinceMs: Date.parse('2026-01-01T00:00:02Z') }), 'b\nc\n');
  });

  it('orders Accept media ranges by q-value, then by the client order', () => {
    assert.deepEqual(
      parseAccept('application/vnd.kubernetes.protobuf;q=0.5, application/yaml, application/json;as=Table;v=v1;g=meta.k8s.io;q=0').map((r) => r.type),
      ['application/yaml', 'application/vnd.kubernetes.protobuf'],
    );
  });
});

describe('pods/log over HTTP', () => {
  let t: TestServer;
  let dir: string;
  const podPath = '/api/v1/namespaces/default/pods';
  const logDir = (): string => join(dir, 'default_web');
  const writeRun = async (container: string, run: number, lines: string[]): Promise<void> => {
    const s = new CriStreamSplitter('stdout', clock);
    await mkdir(join(logDir(), container), { recursive: true });
    await writeFile(join(logDir(), container, `${run}.log`), s.push(lines.map((l) => `${l}\n`).join('')));
  };
  const setRunning = async (running: boolean): Promise<void> => {
    const state = running ? { running: { startedAt: '2026-01-01T00:00:00Z' } } : { terminated: { exitCode: 0, reason: 'Completed' } };
    const r = await t.request('PATCH', `${podPath}/web/status`, { status: { phase: 'Running', containerStatuses: [{ name: 'app', ready: running, restartCount: 1, image: 'i', imageID: '', state }] } }, { 'content-type': 'application/merge-patch+json' });
    assert.equal(r.status, 200, JSON.stringify(r.body));
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'nm-podlogs-'));
    t = await startTestServer({ podLogDirectory: (ns, name) => join(dir, `${ns}_${name}`) });
    const created = await t.request('POST', podPath, { metadata: { name: 'web' }, spec: { containers: [{ name: 'app', image: 'i' }, { name: 'side', image: 'i' }] } });
    assert.equal(created.status, 201);
  });
  after(async () => {
    await t.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('answers a waiting container, the current and previous runs, tail and timestamps', async () => {
    const waiting = await t.request('GET', `${podPath}/web/log?container=app`);
    assert.equal(waiting.status, 400);
    assert.equal(waiting.body.message, 'container "app" in pod "web" is waiting to start: ContainerCreating');
    await writeRun('app', 0, ['first run']);
    const noPrevious = await t.request('GET', `${podPath}/web/log?container=app&previous=true`);
    assert.equal(noPrevious.body.message, 'previous terminated container "app" in pod "web" not found');
    await writeRun('app', 1, ['l1', 'l2', 'l3']);
    const cur = await t.request('GET', `${podPath}/web/log?container=app`);
    assert.equal(cur.status, 200);
    assert.equal(cur.headers.get('content-type'), 'text/plain');
    assert.equal(cur.body, 'l1\nl2\nl3\n');
    assert.equal((await t.request('GET', `${podPath}/web/log?container=app&previous=true`)).body, 'first run\n');
    assert.equal((await t.request('GET', `${podPath}/web/log?container=app&tailLines=1`)).body, 'l3\n');
    assert.match((await t.request('GET', `${podPath}/web/log?container=app&tailLines=1&timestamps=true`)).body as string, /^\d{4}-\d\d-\d\dT[\d:]+\.\d{9}Z l3\n$/);
    assert.equal((await t.request('GET', `${podPath}/web/log?container=app&limitBytes=4`)).body, 'l1\nl');
    assert.equal((await t.request('GET', `${podPath}/web/log`)).status, 400, 'two containers: one must be named');
  });

  it('follows new output until the container stops', async () => {
    await setRunning(true);
    const res = await fetch(`${t.server.url}${podPath}/web/log?container=app&follow=true&tailLines=1`, { headers: { authorization: `Bearer ${t.server.token}` } });
    assert.equal(res.status, 200);
    const reader = res.body!.getReader();
    const dec = new TextDecoder();
    let got = '';
    const readUntil = async (re: RegExp): Promise<void> => {
      while (!re.test(got)) {
        const { value, done } = await reader.read();
        if (done) break;
        got += dec.decode(value, { stream: true });
      }
    };
    await readUntil(/l3\n/);
    const s = new CriStreamSplitter('stdout', clock);
    await appendFile(join(logDir(), 'app', '1.log'), s.push('l4\nhalf'));
    await readUntil(/l4\n/);
    await appendFile(join(logDir(), 'app', '1.log'), s.push(' and the rest\n'));
    await readUntil(/rest\n/);
    await setRunning(false);
    const started = Date.now();
    await readUntil(/$^/); // to the end of the stream
    assert.equal(got, 'l3\nl4\nhalf and the rest\n');
    assert.ok(Date.now() - started < 3000, 'the stream ends soon after the container stops');
  });
});
