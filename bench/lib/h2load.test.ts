import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseH2loadOutput } from './h2load.ts';

const OK = `starting benchmark...
spawning thread #0: 32 total client(s). 16000 total requests
Application protocol: h2c
progress: 10% done
finished in 2.15s, 7436.22 req/s, 1.11MB/s
requests: 16000 total, 16000 started, 16000 done, 15990 succeeded, 10 failed, 4 errored, 6 timeout
status codes: 15990 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 2.40MB (2514678) total, 32.55KB (33334) headers (space savings 95.15%), 1.95MB (2048000) data
                     min         max         mean         sd        +/- sd
time for request:      812us       1.90s    323.40ms    389.19ms    88.13%
`;

test('parseH2loadOutput reads counters, status classes, protocol, rate and request times', () => {
  const r = parseH2loadOutput(OK);
  assert.deepEqual([r.total, r.started, r.done, r.succeeded, r.failed, r.errored, r.timeout], [16000, 16000, 16000, 15990, 10, 4, 6]);
  assert.deepEqual(r.status, { '2xx': 15990, '3xx': 0, '4xx': 0, '5xx': 0 });
  assert.equal(r.protocol, 'h2c');
  assert.equal(r.reqPerSec, 7436.22);
  assert.deepEqual(r.requestMs, { min: 0.812, max: 1900, mean: 323.4 });
});

test('parseH2loadOutput: no connection means no protocol; no summary is an error naming what is missing', () => {
  const r = parseH2loadOutput('finished in 328us, 0.00 req/s, 0B/s\nrequests: 10 total, 0 started, 0 done, 0 succeeded, 10 failed, 10 errored, 0 timeout\nstatus codes: 0 2xx, 0 3xx, 0 4xx, 0 5xx\n');
  assert.equal(r.protocol, undefined);
  assert.equal(r.failed, 10);
  assert.throws(() => parseH2loadOutput('connect to 127.0.0.1 failed'), /no summary.*requests:/);
});
