/** Echo server for the sockmap check: runs in the test cgroup, so its accepted sockets enter the sockhash. */
import { createServer } from 'node:net';

const [addr = '', port = '9000'] = process.argv.slice(2);
createServer((sock) => {
  sock.on('error', () => {});
  sock.pipe(sock);
}).listen(Number(port), addr, () => process.stdout.write('READY\n'));
