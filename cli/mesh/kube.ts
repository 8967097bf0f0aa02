/**
 * The plugin's view of the cluster: a KubeConfig loaded the way kubectl does (--kubeconfig, else $KUBECONFIG,
 * else ~/.kube/config; --context), and a small read-only reader over @kubernetes/client-node.
 */
import {
  ApiextensionsV1Api,
  AppsV1Api,
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  VersionApi,
  type V1CustomResourceDefinition,
  type V1Deployment,
  type V1Lease,
  type V1Node,
  type V1Pod,
  type V1Secret,
  type V1Service,
} from '@kubernetes/client-node';
import { existsSync } from 'node:fs';
import { CliError, describeApiError, httpStatusOf } from './errors.ts';
import type { ClockReading } from './skew.ts';

/** A custom object as read from the API (typed loosely: the plugin tolerates shapes it does not know). */
export type KubeObject = {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string; namespace?: string; generation?: number; creationTimestamp?: string | Date; annotations?: Record<string, string>; labels?: Record<string, string>; uid?: string };
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
};

/** API coordinates of a custom resource. */
export type ResourceRef = { group: string; version: string; plural: string };

/** What the subcommands read; tests may pass a fake. */
export type ClusterReader = {
  /** The API server URL (for messages). */
  server: string;
  serverVersion(): Promise<string>;
  listCrds(): Promise<V1CustomResourceDefinition[]>;
  /** Lists a custom resource (all namespaces when `namespace` is undefined); undefined when the kind is not served. */
  listCustom(res: ResourceRef, namespace?: string): Promise<KubeObject[] | undefined>;
  getCustom(res: ResourceRef, name: string, namespace?: string): Promise<KubeObject | undefined>;
  getLease(namespace: string, name: string): Promise<V1Lease | undefined>;
  getSecret(namespace: string, name: string): Promise<V1Secret | undefined>;
  listNodes(): Promise<V1Node[]>;
  listServices(namespace?: string): Promise<V1Service[]>;
  /** GET /version timed, with the API server's Date header (the clock-skew check's reference); optional for fakes. */
  serverClock?(): Promise<ClockReading>;
  /** One Deployment, or undefined when it does not exist (the operator's, for its version); optional for fakes. */
  getDeployment?(namespace: string, name: string): Promise<V1Deployment | undefined>;
  /** One Pod, or undefined when it does not exist (optional: fakes of subcommands that need no pods omit it). */
  getPod?(namespace: string, name: string): Promise<V1Pod | undefined>;
};

/** Loads the kubeconfig: explicit path, else KUBECONFIG (colon-separated), else the default; then the context. */
export function loadKubeConfig(opts: { kubeconfig?: string; context?: string }): KubeConfig {
  const kc = new KubeConfig();
  try {
    if (opts.kubeconfig) {
      if (!existsSync(opts.kubeconfig)) throw new CliError('NM_ERR_CLI_KUBECONFIG', `--kubeconfig ${opts.kubeconfig}: no such file`);
      kc.loadFromFile(opts.kubeconfig);
    } else {
      kc.loadFromDefault();
    }
  } catch (e) {
    if (e instanceof CliError) throw e;
    throw new CliError('NM_ERR_CLI_KUBECONFIG', `cannot load the kubeconfig (${opts.kubeconfig ?? process.env.KUBECONFIG ?? '~/.kube/config'}): ${(e as Error).message}`, { cause: e });
  }
  if (opts.context) {
    if (!kc.getContextObject(opts.context)) throw new CliError('NM_ERR_CLI_KUBECONFIG', `--context ${opts.context}: no such context in the kubeconfig (have: ${kc.getContexts().map((c) => c.name).join(', ') || 'none'})`);
    kc.setCurrentContext(opts.context);
  }
  if (!kc.getCurrentCluster()) throw new CliError('NM_ERR_CLI_KUBECONFIG', 'the kubeconfig has no current cluster: pass --kubeconfig or set KUBECONFIG (in the sandbox: KUBECONFIG=$(bin/nodemesh sandbox kubeconfig))');
  return kc;
}

/** The namespace of the current context, else `default` (what kubectl does without -n). */
export function contextNamespace(kc: KubeConfig): string {
  return kc.getContextObject(kc.getCurrentContext())?.namespace ?? 'default';
}

function wrap(what: string, server: string) {
  return (e: unknown): never => {
    throw new CliError('NM_ERR_CLI_API', `${what}: ${describeApiError(e)} (API server ${server})`, { cause: e });
  };
}

/** A ClusterReader over the API server of `kc`. */
export function createClusterReader(kc: KubeConfig): ClusterReader {
  const server = kc.getCurrentCluster()?.server ?? '(unknown)';
  const core = kc.makeApiClient(CoreV1Api);
  const custom = kc.makeApiClient(CustomObjectsApi);
  const ext = kc.makeApiClient(ApiextensionsV1Api);
  const coord = kc.makeApiClient(CoordinationV1Api);
  const version = kc.makeApiClient(VersionApi);
  const apps = kc.makeApiClient(AppsV1Api);
  const notFoundAs = <T>(v: T) => (e: unknown): T => {
    if (httpStatusOf(e) === 404) return v;
    throw e;
  };
  return {
    server,
    serverVersion: async () => (await version.getCode().catch(wrap('reading the server version', server))).gitVersion,
    serverClock: async () => {
      const sentMs = Date.now();
      const info = await version.getCodeWithHttpInfo().catch(wrap('reading the server version', server));
      const headers = info.headers as Record<string, string | undefined>;
      return { sentMs, receivedMs: Date.now(), date: headers['date'] ?? headers['Date'] };
    },
    getDeployment: (namespace, name) => apps.readNamespacedDeployment({ namespace, name }).then((x) => x, notFoundAs(undefined)).catch(wrap(`reading Deployment ${namespace}/${name}`, server)),
    listCrds: async () => (await ext.listCustomResourceDefinition().catch(wrap('listing CustomResourceDefinitions', server))).items,
    listCustom: async (res, namespace) => {
      const list = (await (namespace === undefined
        ? custom.listCustomObjectForAllNamespaces({ group: res.group, version: res.version, plural: res.plural })
        : custom.listNamespacedCustomObject({ group: res.group, version: res.version, plural: res.plural, namespace })
      ).then((x: unknown) => x, notFoundAs(undefined)).catch(wrap(`listing ${res.plural}.${res.group}`, server))) as { items?: KubeObject[] } | undefined;
      return list ? (list.items ?? []) : undefined;
    },
    getCustom: async (res, name, namespace) =>
      (await (namespace === undefined
        ? custom.getClusterCustomObject({ group: res.group, version: res.version, plural: res.plural, name })
        : custom.getNamespacedCustomObject({ group: res.group, version: res.version, plural: res.plural, namespace, name })
      ).then((x: unknown) => x, notFoundAs(undefined)).catch(wrap(`reading ${res.plural}.${res.group} ${namespace ? `${namespace}/` : ''}${name}`, server))) as KubeObject | undefined,
    getLease: (namespace, name) => coord.readNamespacedLease({ namespace, name }).then((x) => x, notFoundAs(undefined)).catch(wrap(`reading Lease ${namespace}/${name}`, server)),
    getSecret: (namespace, name) => core.readNamespacedSecret({ namespace, name }).then((x) => x, notFoundAs(undefined)).catch(wrap(`reading Secret ${namespace}/${name}`, server)),
    listNodes: async () => (await core.listNode().catch(wrap('listing Nodes', server))).items,
    getPod: (namespace, name) => core.readNamespacedPod({ namespace, name }).then((x) => x, notFoundAs(undefined)).catch(wrap(`reading Pod ${namespace}/${name}`, server)),
    listServices: async (namespace) => (await (namespace === undefined ? core.listServiceForAllNamespaces() : core.listNamespacedService({ namespace })).catch(wrap('listing Services', server))).items,
  };
}
