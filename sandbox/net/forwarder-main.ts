/** Entry point of the per-node API server forwarder: `node forwarder-main.ts --listen 127.0.0.1:6443 --unix PATH`. */
import { parseArgs } from 'node:util';
import { startForwarder } from './forwarder.ts';

async function run(): Promise<void> {
  const { values } = parseArgs({ options: { listen: { type: 'string', default: '127.0.0.1:6443' }, unix: { type: 'string' } } });
  const [host, portText] = (values.listen ?? '').split(':');
  if (!values.unix || !host || !portText) throw new Error('usage: forwarder-main.ts --listen HOST:PORT --unix SOCKET');
  const fwd = await startForwarder({ host, port: Number(portText), unixPath: values.unix, onError: (m) => process.stderr.write(`forwarder: ${m}\n`) });
  process.stdout.write(`forwarder ${host}:${fwd.port} -> ${values.unix}\n`);
  const stop = (): void => {
    fwd.close().then(() => { process.exitCode = 0; }, () => { process.exitCode = 1; });
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

run().catch((err: unknown) => {
  process.stderr.write(`forwarder: ${(err as Error).message}\n`);
  process.exitCode = 1;
});
