import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isOurProcessAlive, parseProcStat, readProcStat } from './process.ts';

test('parseProcStat copes with spaces and parentheses in the command name', () => {
  const line = '4242 (node (x) y) S 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 11 0 987654 100 50';
  assert.deepEqual(parseProcStat(line), { pid: 4242, state: 'S', ppid: 1, pgid: 4242, startTime: '987654' });
  assert.equal(parseProcStat('garbage'), undefined);
});

test('our own process is alive only with its own start time', async () => {
  const st = await readProcStat(process.pid);
  assert.ok(st);
  assert.equal(await isOurProcessAlive(process.pid, st.startTime), true);
  assert.equal(await isOurProcessAlive(process.pid, '1'), false);
});
