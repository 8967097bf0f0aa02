/**
 * Standalone OTLP/HTTP trace receiver:
 *   node sandbox/otlp-receiver/main.ts [--host H] [--port 4318] --out FILE
 * Appends one JSON line per span to FILE; prints its URL; runs until SIGINT/SIGTERM.
 */
import { parseArgs } from 'node:util';
import { startOtlpReceiver } from './receiver.ts';

const USAGE = 'usage: main.ts --out FILE [--port 4318] [--host 127.0.0.1] [--quiet]';

async function main(): Promise<void> {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        host: { type: 'string', default: '127.0.0.1' },
        port: { type: 'string', default: '4318' },
        out: { type: 'string' },
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
  if (!values.out) {
    console.error(`--out FILE is required\n${USAGE}`);
    process.exit(2);
  }
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`--port ${values.port}: not a port number (0-65535)\n${USAGE}`);
    process.exit(2);
  }
  const receiver = await startOtlpReceiver({ host: values.host, port, outFile: values.out, log: (l) => console.error(l) });
  if (!values.quiet) console.log(`otlp-receiver listening on ${receiver.tracesUrl}, writing spans to ${values.out}`);
  const stop = (): void => {
    receiver.close().then(() => process.exit(0), (e: unknown) => {
      console.error(`otlp-receiver: close failed: ${(e as Error).message}`);
      process.exit(1);
    });
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

main().catch((e: unknown) => {
  console.error(`otlp-receiver: ${(e as Error).message}`);
  process.exit(1);
});
