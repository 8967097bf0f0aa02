/**
 * A stand-in for the node proxy in the BPF datapath e2e test: registers its listener in nm_pxy_sock
 * (so mesh flows are allowed), and answers each accepted connection with the original destination
 * the kernel recorded for it. Runs with nsenter --net (not ip netns exec) to keep /sys/fs/bpf.
 */
import { createServer } from 'node:net';
import { PinnedMaps } from '../../../bpf/datapath.ts';
import { lookupOriginalDst, registerProxyListener } from '../../../bpf/lb-tables.ts';

const [pinDir = '', addr = '', port = '15001'] = process.argv.slice(2);
const maps = new PinnedMaps(pinDir, ['nm_pxy_sock', 'nm_pxy4_odst']);
const server = createServer((sock) => {
  sock.on('error', () => {});
  const odst = lookupOriginalDst(maps, { addr: sock.remoteAddress ?? '', port: sock.remotePort ?? 0 }, true);
  sock.end(`${odst ? `${odst.addr}:${odst.port} svc=${odst.svc_id}` : 'unknown'}\n`);
});
server.listen(Number(port), addr, () => {
  // The listening socket's fd: the kernel removes it from the sockmap when it closes (fail closed).
  const fd = (server as unknown as { _handle: { fd: number } })._handle.fd;
  registerProxyListener(maps, 4, fd);
  process.stdout.write('READY\n');
});
