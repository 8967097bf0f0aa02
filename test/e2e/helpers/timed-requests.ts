/**
 * Timed HTTP requests for the fault tests, run inside a pod (`nodemesh sandbox exec <pod> -- node timed-requests.ts`):
 * `--count` requests to `--url` (`{id}` replaced by a unique id per request: the backend's raw log counts the attempts
 * of each), `--concurrency` at a time, each on a new connection, each bounded by `--timeout-ms` on the client side (a
 * request the proxies never answer shows as `hung`). Prints one JSON line: per request its id, status (0 = no answer)
 * and milliseconds from sending to the end of the response.
 */
import http from 'node:http';
import { parseArgs } from 'node:util';

/** One request's outcome. */
export type TimedResult = { id: string; status: number; ms: number; error?: string };

function once(url: string, timeoutMs: number): Promise<Omit<TimedResult, 'id'>> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false, headers: { connection: 'close' } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, ms: Math.round(performance.now() - t0) }));
      res.on('error', (e) => resolve({ status: res.statusCode ?? 0, ms: Math.round(performance.now() - t0), error: `body ${e.message}` }));
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error('hung')));
    req.on('error', (e: NodeJS.ErrnoException) => resolve({ status: 0, ms: Math.round(performance.now() - t0), error: e.code ?? e.message }));
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { url: { type: 'string' }, count: { type: 'string', default: '10' }, concurrency: { type: 'string', default: '1' }, 'timeout-ms': { type: 'string', default: '15000' }, prefix: { type: 'string', default: 'r' } } });
  if (!values.url) throw new Error('--url is required');
  const count = Number(values.count);
  const results: TimedResult[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      const id = `${values.prefix}${next++}`;
      results.push({ id, ...(await once(values.url!.replace('{id}', id), Number(values['timeout-ms']))) });
    }
  };
  await Promise.all(Array.from({ length: Number(values.concurrency) }, worker));
  process.stdout.write(JSON.stringify(results) + '\n');
}

await main();
