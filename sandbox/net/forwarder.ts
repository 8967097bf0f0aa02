/**
 * A TCP → unix socket forwarder. Run inside a node namespace it gives components there the API server at
 * https://127.0.0.1:6443 without any route out of the sandbox: the unix socket crosses namespaces through the
 * file system, not the network. TLS passes through untouched (same certificate as on the machine).
 */
import { connect, createServer, type Server, type Socket } from 'node:net';

/** A running forwarder. */
export type Forwarder = { port: number; close(): Promise<void> };

/** Listens on host:port and pipes each connection to the unix socket. */
export async function startForwarder(opts: { host: string; port: number; unixPath: string; onError?: (msg: string) => void }): Promise<Forwarder> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connect(opts.unixPath);
    sockets.add(client);
    sockets.add(upstream);
    const drop = (): void => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', drop);
    upstream.on('error', (err) => {
      opts.onError?.(`upstream ${opts.unixPath}: ${err.message}`);
      drop();
    });
    client.on('close', drop);
    upstream.on('close', drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const addr = server.address();
  return {
    port: typeof addr === 'object' && addr ? addr.port : opts.port,
    close: () => new Promise((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}
