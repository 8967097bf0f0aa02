/**
 * Readiness and liveness probes, run inside the pod's network namespace: the kubelet lives in the machine's own
 * namespace, which has (by design) no route into the sandbox. httpGet uses curl, tcpSocket bash's /dev/tcp,
 * exec the command itself in the pod's cgroup.
 */
import type { V1ContainerPort, V1Probe } from '@kubernetes/client-node';
import { spawn } from 'node:child_process';
import { podWrapperArgv } from './pod-exec.ts';

/** Where and how a probe runs. */
export type ProbeTarget = { netns: string; cgroupPath: string; podIp: string; ports: V1ContainerPort[]; env: Record<string, string> };

/** A port given by number or by the name of one of the container's ports. */
export function resolveProbePort(port: number | string | undefined, ports: V1ContainerPort[]): number | undefined {
  if (typeof port === 'number') return port;
  if (port === undefined) return undefined;
  if (/^\d+$/.test(port)) return Number(port);
  return ports.find((p) => p.name === port)?.containerPort;
}

/** The argv a probe runs (before the pod wrapper), or undefined when the probe names no action the sandbox knows. */
export function planProbeCommand(probe: V1Probe, t: ProbeTarget): string[] | undefined {
  const timeout = String(probe.timeoutSeconds ?? 1);
  if (probe.httpGet) {
    const port = resolveProbePort(probe.httpGet.port, t.ports);
    if (port === undefined) return undefined;
    const scheme = (probe.httpGet.scheme ?? 'HTTP').toLowerCase();
    const host = probe.httpGet.host || t.podIp;
    const path = probe.httpGet.path ?? '/';
    const args = ['curl', '-s', '-o', '/dev/null', '-k', '--max-time', timeout, '-w', '%{http_code}', '-H', 'User-Agent: kube-probe/1.32'];
    for (const h of probe.httpGet.httpHeaders ?? []) args.push('-H', `${h.name}: ${h.value}`);
    args.push(`${scheme}://${host}:${port}${path.startsWith('/') ? path : '/' + path}`);
    return args;
  }
  if (probe.tcpSocket) {
    const port = resolveProbePort(probe.tcpSocket.port, t.ports);
    if (port === undefined) return undefined;
    return ['timeout', timeout, 'bash', '-c', `exec 3<>/dev/tcp/${probe.tcpSocket.host || t.podIp}/${port}`];
  }
  if (probe.exec?.command?.length) return ['timeout', timeout, ...probe.exec.command];
  return undefined;
}

/** Runs a probe once: true on success (HTTP 200-399, a TCP connect, exit 0). */
export function runProbe(probe: V1Probe, t: ProbeTarget): Promise<boolean> {
  const cmd = planProbeCommand(probe, t);
  if (!cmd) return Promise.resolve(false);
  const argv = probe.exec ? podWrapperArgv(t.cgroupPath, t.netns, cmd) : ['ip', 'netns', 'exec', t.netns, ...cmd];
  return new Promise((resolve) => {
    const child = spawn(argv[0] as string, argv.slice(1), { stdio: ['ignore', 'pipe', 'ignore'], env: t.env, timeout: ((probe.timeoutSeconds ?? 1) + 2) * 1000 });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
    child.on('error', () => resolve(false));
    child.on('close', (code) => {
      if (probe.httpGet) {
        const status = Number(out.trim());
        resolve(code === 0 && status >= 200 && status < 400);
      } else resolve(code === 0);
    });
  });
}
