/**
 * nodemesh/dns: the sandbox's cluster DNS, an authoritative-only server for cluster.local on UDP and
 * TCP port 53, fed by Service and EndpointSlice watches. It answers A records for
 * `<svc>.<ns>.svc.cluster.local` (the ClusterIP; a headless service's ready endpoints),
 * `<hostname>.<svc>.<ns>.svc.cluster.local` (headless endpoints with a hostname) and
 * `<a-b-c-d>.<ns>.pod.cluster.local`; NXDOMAIN for other names in the zone; REFUSED for every name
 * outside it, never forwarding: nothing may leave the sandbox. Search paths are the client's
 * resolv.conf business. It runs as the pod kube-dns behind Service kube-dns (10.96.0.10).
 *
 *   node dns.ts [--port 53] [--health-port 8181]      serve (in the kube-dns pod)
 *   node dns.ts query NAME [--server 10.96.0.10] [--type A|AAAA|SOA] [--tcp]     one query, JSON answer
 */
import { type V1Deployment, type V1EndpointSlice, type V1Service, AppsV1Api, CoreV1Api, DiscoveryV1Api, type KubeConfig } from '@kubernetes/client-node';
import { createSocket, type RemoteInfo, type Socket as UdpSocket } from 'node:dgram';
import { createServer as createHttpServer } from 'node:http';
import { connect, createServer as createTcpServer, isIPv4, type Server, type Socket } from 'node:net';
import { parseArgs } from 'node:util';
import type { SandboxConfig } from '../config.ts';
import { sandboxPaths } from '../config.ts';
import { httpStatusOf, loadKubeConfig, startInformer } from '../kube.ts';
import { createStreamLogger, type Logger } from '../logger.ts';
import { startForwarder } from '../net/forwarder.ts';

/** The zone served. */
export const CLUSTER_ZONE = 'cluster.local';
/** ClusterIP of Service kube-dns (what every pod's resolv.conf names). */
export const CLUSTER_DNS_SERVICE_IP = '10.96.0.10';
/** TTL of every answer, seconds: short, because the sandbox changes fast. */
export const DNS_TTL = 5;

/** DNS record types the server knows. */
export const RR = { A: 1, NS: 2, CNAME: 5, SOA: 6, PTR: 12, TXT: 16, AAAA: 28, SRV: 33, OPT: 41, ANY: 255 } as const;
/** Response codes. */
export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;

/** One question of a query. */
export interface DnsQuestion {
  name: string;
  type: number;
  class: number;
}

/** A parsed query. */
export interface DnsQuery {
  id: number;
  flags: number;
  question: DnsQuestion | undefined;
  /** Why the message could not be read (answered with FORMERR). */
  error?: string;
}

/** One answer record (only the types this server produces). */
export type DnsRecord = { name: string; type: 'A'; ttl: number; address: string } | { name: string; type: 'SOA'; ttl: number };

/** What the server decided for a question. */
export interface DnsAnswer {
  rcode: number;
  authoritative: boolean;
  answers: DnsRecord[];
  /** Add the zone SOA in the authority section (negative answers, for caching). */
  soa: boolean;
}

/** What the server knows: services and the ready addresses of headless ones. */
export interface DnsState {
  /** `<svc>.<ns>` → ClusterIP ('None' for headless). */
  services: Map<string, string>;
  /** `<svc>.<ns>` → ready endpoint addresses (headless services). */
  endpoints: Map<string, string[]>;
  /** `<hostname>.<svc>.<ns>` → address (headless endpoints with a hostname). */
  hostnames: Map<string, string>;
}

/** Builds the DNS state from watched objects (pure). */
export function computeDnsState(services: readonly V1Service[], slices: readonly V1EndpointSlice[]): DnsState {
  const state: DnsState = { services: new Map(), endpoints: new Map(), hostnames: new Map() };
  for (const s of services) {
    const ip = s.spec?.clusterIP;
    if (!ip || s.spec?.type === 'ExternalName') continue;
    state.services.set(`${s.metadata?.name}.${s.metadata?.namespace ?? 'default'}`.toLowerCase(), ip);
  }
  for (const sl of slices) {
    const svc = sl.metadata?.labels?.['kubernetes.io/service-name'];
    if (!svc || sl.addressType !== 'IPv4') continue;
    const key = `${svc}.${sl.metadata?.namespace ?? 'default'}`.toLowerCase();
    if (state.services.get(key) !== 'None') continue;
    const list = state.endpoints.get(key) ?? [];
    for (const e of sl.endpoints ?? []) {
      const addr = e.addresses?.[0];
      if (!addr || e.conditions?.ready === false) continue;
      if (!list.includes(addr)) list.push(addr);
      if (e.hostname) state.hostnames.set(`${e.hostname}.${key}`.toLowerCase(), addr);
    }
    state.endpoints.set(key, list.sort());
  }
  return state;
}

/** Reads a (possibly compressed) name at `off`; returns it and the offset after it in the message. */
function readName(buf: Buffer, off: number): { name: string; next: number } {
  const labels: string[] = [];
  let next = -1;
  let hops = 0;
  for (;;) {
    if (off >= buf.length) throw new Error('name runs past the end of the message');
    const len = buf[off] as number;
    if (len === 0) {
      if (next < 0) next = off + 1;
      break;
    }
    if ((len & 0xc0) === 0xc0) {
      if (off + 1 >= buf.length) throw new Error('truncated compression pointer');
      if (next < 0) next = off + 2;
      off = ((len & 0x3f) << 8) | (buf[off + 1] as number);
      if (++hops > 16) throw new Error('compression loop');
      continue;
    }
    if (len > 63) throw new Error(`label length ${len} over 63`);
    if (off + 1 + len > buf.length) throw new Error('label runs past the end of the message');
    labels.push(buf.toString('latin1', off + 1, off + 1 + len));
    off += 1 + len;
  }
  return { name: labels.join('.'), next };
}

/** Parses a query message (pure). */
export function parseDnsQuery(buf: Buffer): DnsQuery {
  if (buf.length < 12) return { id: buf.length >= 2 ? buf.readUInt16BE(0) : 0, flags: 0, question: undefined, error: 'message shorter than a DNS header' };
  const id = buf.readUInt16BE(0);
  const flags = buf.readUInt16BE(2);
  const qd = buf.readUInt16BE(4);
  if (qd !== 1) return { id, flags, question: undefined, error: `QDCOUNT ${qd}, want 1` };
  try {
    const { name, next } = readName(buf, 12);
    if (next + 4 > buf.length) throw new Error('question type/class missing');
    return { id, flags, question: { name, type: buf.readUInt16BE(next), class: buf.readUInt16BE(next + 2) } };
  } catch (err) {
    return { id, flags, question: undefined, error: (err as Error).message };
  }
}

function encodeName(name: string): Buffer {
  const parts: Buffer[] = [];
  for (const l of name.split('.').filter(Boolean)) {
    const b = Buffer.from(l, 'latin1');
    parts.push(Buffer.from([b.length]), b);
  }
  parts.push(Buffer.from([0]));
  return Buffer.concat(parts);
}

function soaRdata(): Buffer {
  const nums = Buffer.alloc(20);
  // serial, refresh, retry, expire, minimum (the negative-caching TTL)
  [1, 7200, 1800, 86400, DNS_TTL].forEach((n, i) => nums.writeUInt32BE(n, i * 4));
  return Buffer.concat([encodeName(`ns.dns.${CLUSTER_ZONE}`), encodeName(`hostmaster.${CLUSTER_ZONE}`), nums]);
}

function encodeRecord(name: string, type: number, ttl: number, rdata: Buffer): Buffer {
  const head = Buffer.alloc(10);
  head.writeUInt16BE(type, 0);
  head.writeUInt16BE(1, 2);
  head.writeUInt32BE(ttl, 4);
  head.writeUInt16BE(rdata.length, 8);
  return Buffer.concat([encodeName(name), head, rdata]);
}

/**
 * Encodes the response to `q`. Over UDP (maxBytes 512 unless the client said more), answers that do
 * not fit are dropped and TC set, so the client retries over TCP.
 */
export function buildDnsResponse(q: DnsQuery, a: DnsAnswer, maxBytes = 65535): Buffer {
  const header = Buffer.alloc(12);
  header.writeUInt16BE(q.id, 0);
  const rd = q.flags & 0x0100;
  const opcode = q.flags & 0x7800;
  let flags = 0x8000 | opcode | rd | (a.authoritative ? 0x0400 : 0) | (a.rcode & 0xf);
  const question = q.question ? Buffer.concat([encodeName(q.question.name), Buffer.from([q.question.type >> 8, q.question.type & 255, q.question.class >> 8, q.question.class & 255])]) : Buffer.alloc(0);
  const answers: Buffer[] = [];
  for (const r of a.answers) {
    if (r.type === 'A') answers.push(encodeRecord(r.name, RR.A, r.ttl, Buffer.from(r.address.split('.').map(Number))));
    else answers.push(encodeRecord(r.name, RR.SOA, r.ttl, soaRdata()));
  }
  const authority = a.soa ? [encodeRecord(CLUSTER_ZONE, RR.SOA, DNS_TTL, soaRdata())] : [];
  let size = 12 + question.length + authority.reduce((n, b) => n + b.length, 0);
  const fitted: Buffer[] = [];
  for (const b of answers) {
    if (size + b.length > maxBytes) {
      flags |= 0x0200;
      break;
    }
    fitted.push(b);
    size += b.length;
  }
  header.writeUInt16BE(flags, 2);
  header.writeUInt16BE(q.question ? 1 : 0, 4);
  header.writeUInt16BE(fitted.length, 6);
  header.writeUInt16BE(authority.length, 8);
  header.writeUInt16BE(0, 10);
  return Buffer.concat([header, question, ...fitted, ...authority]);
}

/** `10-244-1-5` → `10.244.1.5`, or undefined when the label is not a dashed IPv4 address. */
export function undashIp(label: string): string | undefined {
  const ip = label.replace(/-/g, '.');
  return /^\d+-\d+-\d+-\d+$/.test(label) && isIPv4(ip) ? ip : undefined;
}

/**
 * Decides the answer to one question (pure): the Kubernetes DNS schema for cluster.local, REFUSED
 * outside it. A name that exists but has no record of the asked type gets NOERROR with no answer.
 */
export function answerQuestion(q: DnsQuery, state: DnsState): DnsAnswer {
  const refuse = (rcode: number): DnsAnswer => ({ rcode, authoritative: false, answers: [], soa: false });
  if (!q.question || q.error) return refuse(RCODE.FORMERR);
  if ((q.flags & 0x8000) !== 0) return refuse(RCODE.FORMERR);
  if (((q.flags >> 11) & 0xf) !== 0) return refuse(RCODE.NOTIMP);
  if (q.question.class !== 1 && q.question.class !== 255) return refuse(RCODE.REFUSED);
  const name = q.question.name.toLowerCase().replace(/\.$/, '');
  if (name !== CLUSTER_ZONE && !name.endsWith(`.${CLUSTER_ZONE}`)) return refuse(RCODE.REFUSED);
  const type = q.question.type;
  const rel = name === CLUSTER_ZONE ? [] : name.slice(0, -(CLUSTER_ZONE.length + 1)).split('.');
  const found = (addresses: string[]): DnsAnswer => {
    const wantA = type === RR.A || type === RR.ANY;
    const answers: DnsRecord[] = wantA ? addresses.map((address) => ({ name: q.question?.name ?? name, type: 'A' as const, ttl: DNS_TTL, address })) : [];
    return { rcode: RCODE.NOERROR, authoritative: true, answers, soa: answers.length === 0 };
  };
  const nx: DnsAnswer = { rcode: RCODE.NXDOMAIN, authoritative: true, answers: [], soa: true };
  if (rel.length === 0) {
    if (type === RR.SOA) return { rcode: RCODE.NOERROR, authoritative: true, answers: [{ name: CLUSTER_ZONE, type: 'SOA', ttl: DNS_TTL }], soa: false };
    return found([]);
  }
  const kind = rel[rel.length - 1];
  if (kind === 'svc') {
    if (rel.length === 1) return found([]);
    const ns = rel[rel.length - 2] as string;
    if (rel.length === 2) return [...state.services.keys()].some((k) => k.endsWith(`.${ns}`)) ? found([]) : nx;
    const key = `${rel[rel.length - 3]}.${ns}`;
    const ip = state.services.get(key);
    if (ip === undefined) return nx;
    if (rel.length === 3) return found(ip === 'None' ? (state.endpoints.get(key) ?? []) : isIPv4(ip) ? [ip] : []);
    if (rel.length === 4) {
      const addr = state.hostnames.get(`${rel[0]}.${key}`);
      return addr ? found([addr]) : nx;
    }
    return nx;
  }
  if (kind === 'pod') {
    if (rel.length === 1 || rel.length === 2) return found([]);
    if (rel.length !== 3) return nx;
    const ip = undashIp(rel[0] as string);
    return ip ? found([ip]) : nx;
  }
  return nx;
}

/** A running DNS server. */
export interface DnsServer {
  port: number;
  close(): Promise<void>;
}

/** The UDP payload size a query allows (EDNS0 OPT in the additional section), else 512. */
export function udpLimitOf(buf: Buffer): number {
  try {
    const an = buf.readUInt16BE(6);
    const ns = buf.readUInt16BE(8);
    const ar = buf.readUInt16BE(10);
    if (an !== 0 || ns !== 0 || ar === 0) return 512;
    let off = readName(buf, 12).next + 4;
    for (let i = 0; i < ar; i++) {
      const r = readName(buf, off);
      const type = buf.readUInt16BE(r.next);
      const cls = buf.readUInt16BE(r.next + 2);
      if (type === RR.OPT) return Math.max(512, Math.min(cls, 4096));
      off = r.next + 10 + buf.readUInt16BE(r.next + 8);
    }
  } catch {
    // A malformed additional section: keep the classic limit.
  }
  return 512;
}

/** Serves DNS on UDP and TCP `port` (0 = any) from `getState`. */
export async function startDnsServer(opts: { host: string; port: number; getState: () => DnsState; log: Logger }): Promise<DnsServer> {
  const handle = (msg: Buffer, maxBytes: number): Buffer | undefined => {
    const q = parseDnsQuery(msg);
    if (q.flags & 0x8000) return undefined; // a response: never answer those (no loops)
    const a = answerQuestion(q, opts.getState());
    opts.log.debug('query', { name: q.question?.name, type: q.question?.type, rcode: a.rcode, answers: a.answers.length });
    return buildDnsResponse(q, a, maxBytes);
  };
  const udp: UdpSocket = createSocket('udp4');
  udp.on('message', (msg: Buffer, rinfo: RemoteInfo) => {
    const out = handle(msg, udpLimitOf(msg));
    if (out) udp.send(out, rinfo.port, rinfo.address);
  });
  udp.on('error', (err) => opts.log.warn('udp error', { error: err.message }));
  await new Promise<void>((resolve, reject) => {
    udp.once('error', reject);
    udp.bind(opts.port, opts.host, () => resolve());
  });
  const port = udp.address().port;
  const tcp: Server = createTcpServer((sock: Socket) => {
    let buf = Buffer.alloc(0);
    sock.setTimeout(10_000, () => sock.destroy());
    sock.on('error', () => sock.destroy());
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const len = buf.readUInt16BE(0);
        const out = handle(buf.subarray(2, 2 + len), 65535);
        buf = buf.subarray(2 + len);
        if (out) sock.write(Buffer.concat([Buffer.from([out.length >> 8, out.length & 255]), out]));
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    tcp.once('error', reject);
    tcp.listen(port, opts.host, () => resolve());
  });
  return {
    port,
    close: () =>
      new Promise((resolve) => {
        udp.close();
        tcp.close(() => resolve());
      }),
  };
}

/** Sends one query and returns the parsed answer: for tests, the e2e suite and `dns.ts query`. */
export async function queryDns(opts: { server: string; port?: number; name: string; type?: number; tcp?: boolean; timeoutMs?: number }): Promise<{ rcode: number; aa: boolean; tc: boolean; addresses: string[]; from: string }> {
  const id = Math.floor(Math.random() * 65536);
  const q = Buffer.concat([Buffer.from([id >> 8, id & 255, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]), encodeName(opts.name), Buffer.from([0, opts.type ?? RR.A, 0, 1])]);
  const port = opts.port ?? 53;
  const timeoutMs = opts.timeoutMs ?? 2000;
  const raw = await new Promise<{ msg: Buffer; from: string }>((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`no DNS answer from ${opts.server}:${port} within ${timeoutMs} ms`));
    }, timeoutMs);
    let cleanup = (): void => clearTimeout(timer);
    if (opts.tcp) {
      const s = connect({ host: opts.server, port }, () => s.write(Buffer.concat([Buffer.from([q.length >> 8, q.length & 255]), q])));
      let buf = Buffer.alloc(0);
      cleanup = () => {
        clearTimeout(timer);
        s.destroy();
      };
      s.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
          const from = `${s.remoteAddress}:${s.remotePort}`;
          cleanup();
          resolve({ msg: buf.subarray(2, 2 + buf.readUInt16BE(0)), from });
        }
      });
      s.on('error', (e) => {
        cleanup();
        reject(e);
      });
    } else {
      const s = createSocket('udp4');
      cleanup = () => {
        clearTimeout(timer);
        s.close();
      };
      s.on('message', (msg, rinfo) => {
        cleanup();
        resolve({ msg, from: `${rinfo.address}:${rinfo.port}` });
      });
      s.on('error', (e) => {
        cleanup();
        reject(e);
      });
      s.send(q, port, opts.server);
    }
  });
  const { msg } = raw;
  const flags = msg.readUInt16BE(2);
  if (msg.readUInt16BE(0) !== id) throw new Error('DNS answer with a different id');
  const an = msg.readUInt16BE(6);
  let off = readName(msg, 12).next + 4;
  const addresses: string[] = [];
  for (let i = 0; i < an; i++) {
    const r = readName(msg, off);
    const type = msg.readUInt16BE(r.next);
    const len = msg.readUInt16BE(r.next + 8);
    const rdata = r.next + 10;
    if (type === RR.A && len === 4) addresses.push([...msg.subarray(rdata, rdata + 4)].join('.'));
    off = rdata + len;
  }
  return { rcode: flags & 0xf, aa: (flags & 0x0400) !== 0, tc: (flags & 0x0200) !== 0, addresses, from: raw.from };
}

/** The Service and Deployment of the cluster DNS for a sandbox instance (the pod reaches the API server through the instance's unix socket). */
export function computeClusterDnsObjects(cfg: SandboxConfig): { service: V1Service; deployment: V1Deployment } {
  const paths = sandboxPaths(cfg);
  const labels = { 'k8s-app': 'kube-dns' };
  return {
    service: {
      apiVersion: 'v1', kind: 'Service',
      metadata: { name: 'kube-dns', namespace: 'kube-system', labels: { ...labels, 'kubernetes.io/name': 'CoreDNS' } },
      spec: {
        selector: labels, clusterIP: CLUSTER_DNS_SERVICE_IP, clusterIPs: [CLUSTER_DNS_SERVICE_IP],
        ports: [{ name: 'dns', port: 53, targetPort: 53, protocol: 'UDP' }, { name: 'dns-tcp', port: 53, targetPort: 53, protocol: 'TCP' }],
      },
    },
    deployment: {
      apiVersion: 'apps/v1', kind: 'Deployment',
      metadata: { name: 'kube-dns', namespace: 'kube-system', labels },
      spec: {
        replicas: 2,
        selector: { matchLabels: labels },
        template: {
          metadata: { labels },
          spec: {
            containers: [{
              name: 'dns', image: 'nodemesh/dns',
              env: [{ name: 'NODEMESH_API_SOCKET', value: paths.apiSocket }, { name: 'KUBECONFIG', value: paths.nodeKubeconfig }],
              ports: [{ name: 'dns', containerPort: 53, protocol: 'UDP' }, { name: 'dns-tcp', containerPort: 53, protocol: 'TCP' }, { name: 'health', containerPort: 8181 }],
              readinessProbe: { httpGet: { path: '/ready', port: 'health' }, periodSeconds: 2 },
            }],
            terminationGracePeriodSeconds: 2,
          },
        },
      },
    },
  };
}

/** Creates (or updates) Service and Deployment kube-dns; idempotent. */
export async function ensureClusterDns(kc: KubeConfig, cfg: SandboxConfig): Promise<void> {
  const { service, deployment } = computeClusterDnsObjects(cfg);
  const core = kc.makeApiClient(CoreV1Api);
  const apps = kc.makeApiClient(AppsV1Api);
  try {
    await core.createNamespacedService({ namespace: 'kube-system', body: service });
  } catch (err) {
    if (httpStatusOf(err) !== 409) throw err;
  }
  try {
    await apps.createNamespacedDeployment({ namespace: 'kube-system', body: deployment });
  } catch (err) {
    if (httpStatusOf(err) !== 409) throw err;
    const cur = await apps.readNamespacedDeployment({ name: 'kube-dns', namespace: 'kube-system' });
    await apps.replaceNamespacedDeployment({ name: 'kube-dns', namespace: 'kube-system', body: { ...deployment, metadata: { ...deployment.metadata, resourceVersion: cur.metadata?.resourceVersion } } });
  }
}

async function serve(values: { port?: string; 'health-port'?: string; host?: string }): Promise<void> {
  const log = createStreamLogger(process.stderr, 'dns', { debug: process.env.NODEMESH_DEBUG === '1' });
  // In the sandbox the pod reaches the API server through a forwarder of its own on its loopback
  // (the node kubeconfig names https://127.0.0.1:6443), to the instance's unix socket.
  const socket = process.env.NODEMESH_API_SOCKET;
  if (socket) await startForwarder({ host: '127.0.0.1', port: 6443, unixPath: socket, onError: (m) => log.warn('api forwarder', { error: m }) });
  const kubeconfig = process.env.KUBECONFIG;
  if (!kubeconfig) throw new Error('KUBECONFIG is not set: the DNS server needs the API server to learn services');
  const kc = loadKubeConfig(kubeconfig);
  const core = kc.makeApiClient(CoreV1Api);
  const discovery = kc.makeApiClient(DiscoveryV1Api);
  let state: DnsState = { services: new Map(), endpoints: new Map(), hostnames: new Map() };
  let dirty = true;
  const services = startInformer<V1Service>({ kc, path: '/api/v1/services', list: () => core.listServiceForAllNamespaces(), log, onEvent: () => (dirty = true) });
  const slices = startInformer<V1EndpointSlice>({ kc, path: '/apis/discovery.k8s.io/v1/endpointslices', list: () => discovery.listEndpointSliceForAllNamespaces(), log, onEvent: () => (dirty = true) });
  const getState = (): DnsState => {
    if (dirty) {
      dirty = false;
      state = computeDnsState(services.list(), slices.list());
    }
    return state;
  };
  let ready = false;
  void Promise.all([services.synced, slices.synced]).then(() => {
    ready = true;
    log.info('ready', { services: services.list().length });
  });
  const server = await startDnsServer({ host: values.host ?? '0.0.0.0', port: Number(values.port ?? 53), getState, log });
  const health = createHttpServer((req, res) => {
    const ok = req.url === '/health' || ready;
    res.writeHead(ok ? 200 : 503).end(ok ? 'ok\n' : 'waiting for the first list of services and endpointslices\n');
  });
  health.listen(Number(values['health-port'] ?? 8181), '0.0.0.0');
  log.info('serving', { zone: CLUSTER_ZONE, port: server.port });
  const stop = (): void => {
    health.close();
    void Promise.all([server.close(), services.stop(), slices.stop()]).finally(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

async function main(): Promise<void> {
  const [mode, ...rest] = process.argv.slice(2);
  if (mode === 'query') {
    const { values, positionals } = parseArgs({ args: rest, options: { server: { type: 'string', default: CLUSTER_DNS_SERVICE_IP }, port: { type: 'string', default: '53' }, type: { type: 'string', default: 'A' }, tcp: { type: 'boolean', default: false } }, allowPositionals: true });
    const name = positionals[0];
    if (!name) throw new Error('usage: dns.ts query NAME [--server IP] [--port N] [--type A|AAAA|SOA] [--tcp]');
    const type = RR[(values.type ?? 'A').toUpperCase() as keyof typeof RR];
    if (!type) throw new Error(`--type ${values.type}: use A, AAAA, SOA, ANY`);
    const r = await queryDns({ server: values.server ?? CLUSTER_DNS_SERVICE_IP, port: Number(values.port), name, type, tcp: values.tcp ?? false });
    const rcode = Object.entries(RCODE).find(([, v]) => v === r.rcode)?.[0] ?? String(r.rcode);
    console.log(JSON.stringify({ name, ...r, rcode }));
    process.exit(r.rcode === RCODE.NOERROR ? 0 : 1);
  }
  const args = mode === undefined || mode.startsWith('--') ? process.argv.slice(2) : rest;
  const { values } = parseArgs({ args, options: { port: { type: 'string' }, 'health-port': { type: 'string' }, host: { type: 'string' } } });
  await serve(values);
}

if (import.meta.main) {
  main().catch((err: unknown) => {
    console.error(`dns: ${(err as Error).message}`);
    process.exit(2);
  });
}
