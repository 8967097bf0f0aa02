/** `nodemesh sandbox exec POD -- CMD`: runs a command in a pod's network namespace and cgroup, with its hosts files. */
import type { V1Pod } from '@kubernetes/client-node';
import { spawn } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { locateCgroupRoot } from './cgroup.ts';
import { sandboxPaths, type SandboxConfig } from './config.ts';
import { SandboxError } from './errors.ts';
import { getJson } from './kube-lite.ts';
import { podWrapperArgv } from './kubelet/pod-exec.ts';
import { computePodNetNames } from './net/topology.ts';

/** Where a pod lives on this machine. */
export type PodLocation = { netns: string; cgroup: string; node: string; ip?: string; logDir: string };

/** Finds a pod's namespace and cgroup through the API server. */
export async function locatePod(cfg: SandboxConfig, name: string, namespace: string): Promise<PodLocation> {
  const paths = sandboxPaths(cfg);
  if (!existsSync(paths.hostKubeconfig)) throw new SandboxError('NM_ERR_SANDBOX_NOT_UP', `no sandbox (instance ${cfg.instance}) is up: ${paths.hostKubeconfig} is missing`);
  const r = await getJson(paths.hostKubeconfig, `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(name)}`);
  if (r.status === 404) throw new SandboxError('NM_ERR_SANDBOX_POD_NOT_FOUND', `pod ${namespace}/${name} not found; list them with \`kubectl --kubeconfig ${paths.hostKubeconfig} get pods -A\` (use -n for another namespace)`);
  if (r.status !== 200) throw new SandboxError('NM_ERR_SANDBOX_COMMAND_FAILED', `reading pod ${namespace}/${name} from the API server failed with HTTP ${r.status}: ${JSON.stringify(r.body).slice(0, 300)}`);
  const pod = r.body as V1Pod;
  const node = pod.spec?.nodeName;
  if (!node) throw new SandboxError('NM_ERR_SANDBOX_POD_NOT_FOUND', `pod ${namespace}/${name} is not scheduled to a node yet (spec.nodeName is empty)`);
  const names = computePodNetNames(cfg, pod.metadata?.uid ?? '');
  const netns = pod.spec?.hostNetwork ? `${cfg.prefix}${node}` : names.netns;
  const cgRoot = await locateCgroupRoot(cfg);
  const cgroup = join(cgRoot ?? '', node, `pod-${names.hash}`);
  if (!existsSync(`/run/netns/${netns}`) || !existsSync(cgroup)) {
    throw new SandboxError('NM_ERR_SANDBOX_POD_NOT_FOUND', `pod ${namespace}/${name} has no running sandbox yet (phase ${pod.status?.phase ?? 'Pending'}); wait for it to be Running`);
  }
  return { netns, cgroup, node, ip: pod.status?.podIP, logDir: join(paths.podLogs, `${namespace}_${name}_${names.hash}`) };
}

/** Runs a command in a pod with the terminal passed through; resolves to its exit code. */
export async function execInPod(cfg: SandboxConfig, name: string, namespace: string, command: string[]): Promise<number> {
  if (command.length === 0) throw new SandboxError('NM_ERR_SANDBOX_BAD_ARGUMENT', 'nothing to run: give the command after `--`, e.g. `nodemesh sandbox exec POD -- curl -s http://10.244.2.2:8080/`');
  const loc = await locatePod(cfg, name, namespace);
  const argv = podWrapperArgv(loc.cgroup, loc.netns, command);
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0] as string, argv.slice(1), {
      stdio: 'inherit',
      env: { ...process.env, POD_NAME: name, POD_NAMESPACE: namespace, NODE_NAME: loc.node, POD_IP: loc.ip ?? '' },
    });
    child.on('error', reject);
    child.on('exit', (code, signal) => resolve(code ?? 128 + (signal ? osConstants.signals[signal] : 0)));
  });
}

/** The path of a container's output file, all runs as written (`kubectl logs` reads the per-run CRI files beside it). */
export async function podLogPath(cfg: SandboxConfig, name: string, namespace: string, container?: string): Promise<string> {
  const loc = await locatePod(cfg, name, namespace);
  let files: string[] = [];
  try {
    files = (await readdir(loc.logDir)).filter((f) => f.endsWith('.log'));
  } catch {
    // No output yet.
  }
  const pick = container ? `${container}.log` : files.length === 1 ? files[0] : undefined;
  if (!pick || !files.includes(pick)) {
    throw new SandboxError('NM_ERR_SANDBOX_BAD_ARGUMENT', `pod ${namespace}/${name} has containers ${files.map((f) => f.replace(/\.log$/, '')).join(', ') || '(no output yet)'}; pick one with -c`);
  }
  return join(loc.logDir, pick);
}
