/**
 * What a container of a Pod runs in the sandbox: its command and args as programs of this machine (images
 * `nodemesh/echo` and `nodemesh/client` stand for the built-in workloads), and its environment.
 */
import type { V1Container, V1EnvVar, V1Pod } from '@kubernetes/client-node';
import { join } from 'node:path';
import { SandboxError } from '../errors.ts';

/** PATH given to every container: the machine's usual one (containers run this machine's programs). */
export const CONTAINER_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** What the plan needs from the node. */
export type ContainerContext = { nodeName: string; podIp: string; hostIp: string; nodeExecPath: string; repoRoot: string };

/** A container ready to spawn. */
export type ContainerPlan = { name: string; argv: string[]; env: Record<string, string>; warnings: string[] };

/** The built-in images and the workload each stands for. */
export const BUILTIN_IMAGES: Record<string, string> = {
  'nodemesh/echo': 'sandbox/workloads/echo.ts',
  'nodemesh/client': 'sandbox/workloads/client.ts',
  'nodemesh/dns': 'sandbox/workloads/dns.ts', // cluster DNS (issue 3, owner: agent/)
};

/** `docker.io/nodemesh/echo:v2` → `nodemesh/echo` when it is a built-in image, else undefined. */
export function builtinImageOf(image: string | undefined): string | undefined {
  if (!image) return undefined;
  let ref = image.replace(/@sha256:[0-9a-f]+$/, '');
  const lastSlash = ref.lastIndexOf('/');
  const colon = ref.lastIndexOf(':');
  if (colon > lastSlash) ref = ref.slice(0, colon);
  ref = ref.replace(/^(docker\.io\/|index\.docker\.io\/)/, '');
  return BUILTIN_IMAGES[ref] ? ref : undefined;
}

/** Expands `$(VAR)` references the way Kubernetes does: unknown ones stay as written, `$$` is a literal `$`. */
export function expandVars(text: string, env: Record<string, string>): string {
  return text.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (m, name: string | undefined) => {
    if (m === '$$') return '$';
    return name !== undefined && env[name] !== undefined ? env[name] : m;
  });
}

/** The value of a `fieldRef` (the downward API), or undefined when the sandbox does not know the field. */
export function resolveFieldRef(fieldPath: string, pod: V1Pod, ctx: ContainerContext): string | undefined {
  const m = /^metadata\.(labels|annotations)\['(.+)'\]$/.exec(fieldPath);
  if (m?.[1] && m[2]) return (m[1] === 'labels' ? pod.metadata?.labels : pod.metadata?.annotations)?.[m[2]] ?? '';
  switch (fieldPath) {
    case 'metadata.name': return pod.metadata?.name ?? '';
    case 'metadata.namespace': return pod.metadata?.namespace ?? 'default';
    case 'metadata.uid': return pod.metadata?.uid ?? '';
    case 'spec.nodeName': return ctx.nodeName;
    case 'spec.serviceAccountName': return pod.spec?.serviceAccountName ?? 'default';
    case 'status.podIP': return ctx.podIp;
    case 'status.hostIP': return ctx.hostIp;
    default: return undefined;
  }
}

/** Plans one container; throws NM_ERR_SANDBOX_IMAGE_UNSUPPORTED when there is nothing to run. */
export function planContainer(pod: V1Pod, c: V1Container, ctx: ContainerContext): ContainerPlan {
  const warnings: string[] = [];
  const name = pod.metadata?.name ?? '';
  const namespace = pod.metadata?.namespace ?? 'default';
  const env: Record<string, string> = {
    PATH: CONTAINER_PATH,
    HOME: '/root',
    HOSTNAME: pod.spec?.hostname ?? name,
    POD_NAME: name,
    POD_NAMESPACE: namespace,
    POD_UID: pod.metadata?.uid ?? '',
    NODE_NAME: ctx.nodeName,
    POD_IP: ctx.podIp,
    HOST_IP: ctx.hostIp,
    POD_SERVICE_ACCOUNT: pod.spec?.serviceAccountName ?? 'default',
    POD_LABELS: JSON.stringify(pod.metadata?.labels ?? {}),
  };
  for (const e of c.env ?? []) {
    const v = resolveEnvVar(e, pod, ctx);
    if (v === undefined) warnings.push(`env ${e.name}: only value and valueFrom.fieldRef are supported in the sandbox; left unset`);
    else env[e.name] = expandVars(v, env);
  }
  const builtin = builtinImageOf(c.image);
  let entrypoint: string[];
  if (c.command?.length) entrypoint = c.command;
  else if (builtin) entrypoint = [ctx.nodeExecPath, join(ctx.repoRoot, BUILTIN_IMAGES[builtin] as string)];
  else {
    throw new SandboxError('NM_ERR_SANDBOX_IMAGE_UNSUPPORTED',
      `pod ${namespace}/${name} container ${c.name}: image "${c.image}" is not a built-in (${Object.keys(BUILTIN_IMAGES).join(', ')}) and spec.containers[].command is empty; the sandbox runs commands of this machine, so give a command`);
  }
  const argv = [...entrypoint, ...(c.args ?? [])].map((a) => expandVars(a, env));
  return { name: c.name, argv, env, warnings };
}

function resolveEnvVar(e: V1EnvVar, pod: V1Pod, ctx: ContainerContext): string | undefined {
  if (e.value !== undefined) return e.value;
  if (e.valueFrom?.fieldRef) return resolveFieldRef(e.valueFrom.fieldRef.fieldPath, pod, ctx);
  if (!e.valueFrom) return '';
  return undefined;
}
