/** Backend servers for the BPF datapath e2e test: on each address, TCP replies its address, UDP echoes "from <address>". */
import { createSocket } from 'node:dgram';
import { createServer } from 'node:net';

const [addrList = '', tcpPort = '8080', udpPort = '5353'] = process.argv.slice(2);
let pending = 0;
for (const addr of addrList.split(',')) {
  pending += 2;
  const tcp = createServer((sock) => {
    sock.on('error', () => {});
    sock.end(`${addr}\n`);
  });
  tcp.listen(Number(tcpPort), addr, () => ready());
  const udp = createSocket('udp4');
  udp.on('message', (_msg, rinfo) => udp.send(`from ${addr}`, rinfo.port, rinfo.address));
  udp.bind(Number(udpPort), addr, () => ready());
}

function ready(): void {
  if (--pending === 0) process.stdout.write('READY\n');
}
