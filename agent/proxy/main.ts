/**
 * The node proxy process, started and fed by the agent (proxy-supervisor.ts). Modules, in order:
 *   1. flags          node, address, ports, workers, bpffs directory
 *   2. first config   waits for the agent's first `apply`: the listener opens with policy in place, never before
 *   3. worker pool    l7proxy/workers.ts: N workers on one shared listening socket, each with the mesh plugin
 *                     (worker-plugin.ts: HBONE both ways, inbound policy, listener registered in nm_pxy_sock)
 *   4. IPC            later `apply`s become pool.applyConfig; `status` answers with the pool's state
 * Fail closed: killing this process makes its workers exit (their IPC channel closes), the listening socket
 * closes, the kernel drops it from nm_pxy_sock and connect4 refuses mesh flows until a new proxy registers.
 * Graceful restart: this process opens its listening sockets itself with SO_REUSEPORT (l7proxy/listen-socket.ts),
 * so the agent can start a new proxy on the same ports while this one still serves; the new one registers its
 * outbound socket in nm_pxy_sock (replacing this one's) before it reports ready, and only then does the agent send
 * SIGTERM here: the sockets close (with net.ipv4.tcp_migrate_req on, connections still queued on them move to the
 * new proxy's sockets instead of being reset) and what is open drains until --drain-timeout-ms (l7proxy/drain.ts).
 * It outlives its agent on purpose (mesh flows keep being served and policed while the agent restarts); the
 * next agent replaces it (pid file).
 */
import cluster from 'node:cluster';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { ProxyConfig } from '../../l7proxy/config.ts';
import { DEFAULT_DRAIN_TIMEOUT_MS, computeDrainSettings } from '../../l7proxy/drain.ts';
import { enableListenerMigration } from '../../l7proxy/listen-socket.ts';
import { PLAINTEXT_INBOUND_PORT } from '../../l7proxy/inbound-plaintext.ts';
import { ProxyWorkerPool, type IdentityTable, type OriginalDstSource } from '../../l7proxy/workers.ts';
import { createLogger } from '../logger.ts';
import { isTelemetryBatch, type TelemetryBatch } from './telemetry-relay.ts';
import type { MeshPluginData, MeshPluginInit } from './worker-plugin.ts';

/** Agent → proxy messages. */
export type ToProxy =
  | { t: 'apply'; seq: number; config: ProxyConfig; identities: IdentityTable; pluginData: MeshPluginData }
  | { t: 'status'; seq: number };

/** Proxy → agent messages. */
export type FromProxy =
  | { t: 'ready'; pid: number; outboundPort: number; workers: (number | undefined)[] }
  | { t: 'applied'; seq: number; generation: number }
  | { t: 'apply-failed'; seq: number; error: string }
  | { t: 'status'; seq: number; workers: { slot: number; pid: number | undefined; state: string; restarts: number; generation: number; silentMs?: number }[] }
  | { t: 'fatal'; error: string }
  /** A worker's telemetry records, passed through as the worker sent them. */
  | TelemetryBatch;

const PLUGIN_PATH = fileURLToPath(new URL('./worker-plugin.ts', import.meta.url));

/** The plaintext listener's port from the flag: explicit, else the default on a node with a datapath. */
function plaintextPortOf(flag: string | undefined, onNode: boolean): { plaintextPort?: number } {
  if (flag === 'none' || (flag === undefined && !onNode)) return {};
  const port = flag === undefined ? PLAINTEXT_INBOUND_PORT : Number(flag);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--plaintext-port ${flag}: give a TCP port or 'none'`);
  return { plaintextPort: port };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      node: { type: 'string' },
      host: { type: 'string' },
      'outbound-port': { type: 'string', default: '15001' },
      'inbound-port': { type: 'string', default: '15008' },
      // Plaintext steered from pod ports (agent/proxy/pod-ingress.ts PlaintextSteering). Default: 15006 on a node
      // (--pin-dir given), none in datapath-less tests (--fixed-dst); 'none' turns it off.
      'plaintext-port': { type: 'string' },
      workers: { type: 'string', default: '2' },
      // How long SIGTERM lets open requests, streams and tunnels finish before the rest is cut.
      'drain-timeout-ms': { type: 'string', default: String(DEFAULT_DRAIN_TIMEOUT_MS) },
      'pin-dir': { type: 'string' },
      'trust-domain': { type: 'string', default: 'cluster.local' },
      'proxy-spiffe-id': { type: 'string' },
      mark: { type: 'string' },
      'fixed-dst': { type: 'string' },
      debug: { type: 'boolean', default: false },
    },
  });
  const log = createLogger(process.stderr, `proxy/${values.node ?? '?'}`, { debug: values.debug === true });
  const send = (m: FromProxy): void => { if (process.connected) process.send?.(m); };
  if (!values.node || !values.host) {
    send({ t: 'fatal', error: 'usage: proxy --node NAME --host ADDR [--outbound-port 15001] [--inbound-port 15008] [--workers N] [--pin-dir DIR]' });
    process.exit(2);
  }
  let originalDst: OriginalDstSource;
  if (values['pin-dir']) originalDst = { kind: 'pinned-map', pinDir: values['pin-dir'] };
  else if (values['fixed-dst']) {
    const [ip, port] = values['fixed-dst'].split(':');
    originalDst = { kind: 'fixed', ip: ip!, port: Number(port) };
  } else {
    send({ t: 'fatal', error: 'give --pin-dir (the node datapath) or --fixed-dst IP:PORT (tests)' });
    process.exit(2);
  }
  const init: MeshPluginInit = {
    nodeName: values.node,
    host: values.host,
    inboundPort: Number(values['inbound-port']),
    trustDomain: values['trust-domain']!,
    ...(values['proxy-spiffe-id'] ? { proxySpiffeId: values['proxy-spiffe-id'] } : {}),
    ...(values['pin-dir'] ? { pinDir: values['pin-dir'] } : {}),
    ...(values.mark ? { mark: Number(values.mark) } : {}),
    ...plaintextPortOf(values['plaintext-port'], values['pin-dir'] !== undefined),
  };
  const workers = Number(values.workers);
  let drainTimeoutMs: number;
  try {
    drainTimeoutMs = computeDrainSettings(Number(values['drain-timeout-ms'])).timeoutMs;
  } catch (err) {
    send({ t: 'fatal', error: `--drain-timeout-ms ${values['drain-timeout-ms']}: ${(err as Error).message}` });
    process.exit(2);
  }
  if (values['pin-dir']) log.info('listener migration (net.ipv4.tcp_migrate_req)', { result: await enableListenerMigration() });
  let active: ProxyWorkerPool | undefined;
  let started: Promise<void> | undefined;
  let queue: Promise<void> = Promise.resolve();
  const apply = async (m: Extract<ToProxy, { t: 'apply' }>): Promise<void> => {
    if (!active) {
      // The listener opens with the first config already in force: nothing is accepted without policy.
      const pool = new ProxyWorkerPool({
        workers, originalDst, plugin: { path: PLUGIN_PATH, init }, logger: log.child('pool'),
        // Every worker holds the shared listening socket, so any of them can register it in nm_pxy_sock, and it
        // closes (fail closed) only when this process and all its workers are gone. (round-robin would keep it in
        // this process only, out of the workers' reach.)
        scheduling: 'kernel',
        // Sockets with SO_REUSEPORT, opened here: the next proxy binds next to this one during a graceful restart.
        listenSockets: 'reuseport',
        pluginListeners: [{ host: values.host!, port: init.inboundPort }, ...(init.plaintextPort !== undefined ? [{ host: values.host!, port: init.plaintextPort }] : [])],
        heartbeatTimeoutMs: 5000, restartMinMs: 100, restartMaxMs: 2000,
        config: m.config, identities: m.identities, pluginData: m.pluginData,
      });
      active = pool;
      started = pool.start({ host: values.host!, outboundPort: Number(values['outbound-port']) }).then((ports) => {
        send({ t: 'ready', pid: process.pid, outboundPort: ports.outboundPort, workers: pool.status().map((s) => s.pid) });
        log.info('proxy serving', { outbound: `${values.host}:${ports.outboundPort}`, hbone: `${values.host}:${init.inboundPort}`, workers });
      });
      await started;
      send({ t: 'applied', seq: m.seq, generation: 0 });
      return;
    }
    await started;
    const r = await active.applyConfig(m.config, m.identities, m.pluginData);
    send({ t: 'applied', seq: m.seq, generation: r.generation });
  };
  process.on('message', (m: ToProxy) => {
    if (m.t === 'apply') {
      queue = queue.then(() => apply(m)).catch((err: unknown) => {
        const error = err instanceof Error ? err.message : String(err);
        log.error('config not applied', { error });
        send({ t: 'apply-failed', seq: m.seq, error });
        if ((err as { code?: string }).code === 'NM_ERR_PROXY_WORKERS_START_FAILED') {
          // A proxy that cannot listen is no proxy: let the agent restart it.
          process.exit(1);
        }
      });
    } else if (m.t === 'status') {
      send({ t: 'status', seq: m.seq, workers: active?.status() ?? [] });
    }
  });
  // Workers' telemetry batches go to the agent as they are (the pool ignores messages it does not know).
  cluster.on('message', (_worker, m: unknown) => { if (isTelemetryBatch(m)) send(m); });
  process.on('disconnect', () => log.warn('agent went away; serving with the last config until the next agent replaces this proxy'));
  const stop = (): void => {
    log.info('stopping: draining', { timeoutMs: drainTimeoutMs });
    const t0 = Date.now();
    void (active ? active.stop({ drain: true, timeoutMs: drainTimeoutMs }) : Promise.resolve())
      .finally(() => { log.info('drained; exiting', { ms: Date.now() - t0 }); process.exit(0); });
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

main().catch((err: unknown) => {
  process.stderr.write(`${new Date().toISOString()} ERROR proxy start failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
