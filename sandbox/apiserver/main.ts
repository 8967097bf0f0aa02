/**
 * Standalone API server for debugging:
 *   node sandbox/apiserver/main.ts [--port N] [--host H] [--socket PATH] [--state-dir DIR] [--crd-dir DIR]... [--no-tls]
 * Prints the URL and the kubeconfig path (when --state-dir is given) and runs until SIGINT/SIGTERM.
 */

import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startApiServer } from './server.ts';

const USAGE = 'usage: main.ts [--port N] [--host H] [--socket PATH] [--state-dir DIR] [--crd-dir DIR]... [--no-tls] [--history N] [--bookmark-seconds N] [--quiet]';

async function main(): Promise<void> {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        port: { type: 'string', default: '0' },
        host: { type: 'string', default: '127.0.0.1' },
        socket: { type: 'string' },
        'state-dir': { type: 'string' },
        'crd-dir': { type: 'string', multiple: true },
        'no-tls': { type: 'boolean', default: false },
        history: { type: 'string' },
        'bookmark-seconds': { type: 'string' },
        quiet: { type: 'boolean', default: false },
        help: { type: 'boolean', default: false },
      },
    }));
  } catch (e) {
    console.error(`${(e as Error).message}\n${USAGE}`);
    process.exit(2);
  }
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const stateDir = values['state-dir'] ?? (await mkdtemp(join(tmpdir(), 'nodemesh-apiserver-')));
  const server = await startApiServer({
    host: values.host,
    port: Number(values.port),
    ...(values.socket ? { unixSocketPath: values.socket } : {}),
    tls: !values['no-tls'],
    stateDir,
    crdDirs: values['crd-dir'] ?? [],
    ...(values.history ? { watchHistoryWindow: Number(values.history) } : {}),
    ...(values['bookmark-seconds'] ? { bookmarkIntervalSeconds: Number(values['bookmark-seconds']) } : {}),
    logger: values.quiet ? undefined : (line) => console.error(line),
  });
  console.log(`url: ${server.url}`);
  console.log(`kubeconfig: ${join(stateDir, 'kubeconfig')}`);
  console.log(`try: kubectl --kubeconfig ${join(stateDir, 'kubeconfig')} get ns`);
  const stop = (): void => {
    server.close().then(
      () => process.exit(0),
      (e: unknown) => {
        console.error(e);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? `${(e as Error & { code?: string }).code ?? 'error'}: ${e.message}` : String(e));
  process.exit(1);
});
