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
import { request as httpRequest } from 'node:http';
import { request as httpsRequest, type RequestOptions } from 'node:https';
import { Readable } from 'node:stream';
import type { AgentFetch } from './agent-status.ts';
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
  /** Pods of a namespace matching a label selector (the agent DaemonSet's); optional for fakes. Errors keep the API error as `cause`. */
  listPods?(namespace: string, labelSelector: string): Promise<V1Pod[]>;
  /** fetch for URLs on the API server, with the kubeconfig's credentials and TLS (the pods proxy to the agents); optional for fakes. */
  proxyFetch?: AgentFetch;
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
    listPods: async (namespace, labelSelector) => (await core.listNamespacedPod({ namespace, labelSelector }).catch(wrap(`listing pods ${labelSelector} in ${namespace}`, server))).items,
    proxyFetch: makeApiServerFetch(kc),
    getPod: (namespace, name) => core.readNamespacedPod({ namespace, name }).then((x) => x, notFoundAs(undefined)).catch(wrap(`reading Pod ${namespace}/${name}`, server)),
    listServices: async (namespace) => (await (namespace === undefined ? core.listServiceForAllNamespaces() : core.listNamespacedService({ namespace })).catch(wrap('listing Services', server))).items,
  };
}

/** Statuses whose answers have no body (fetch's Response refuses one for them). */
const NULL_BODY_STATUS = new Set([101, 103, 204, 205, 304]);

/**
 * A fetch for the API server's own URLs (the pods proxy), authenticated and verified as client-node does it
 * (token, client certificate, exec plugin, CA, proxy-url: KubeConfig.applyToHTTPSOptions), answering a standard
 * Response with the body streamed. The options are worked out once per plugin run.
 */
export function makeApiServerFetch(kc: KubeConfig): AgentFetch {
  let prepared: Promise<RequestOptions> | undefined;
  return async (url, init) => {
    prepared ??= (async () => {
      const o: RequestOptions = {};
      await kc.applyToHTTPSOptions(o);
      return o;
    })();
    const base = await prepared;
    const u = new URL(url);
    const method = init?.method ?? 'GET';
    const headers = { ...(base.headers ?? {}), ...(init?.headers ?? {}) };
    const send = u.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise<Response>((resolve, reject) => {
      const req = send(u, { ...base, method, headers, ...(init?.signal ? { signal: init.signal } : {}) }, (res) => {
        const h = new Headers();
        for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) h.append(res.rawHeaders[i]!, res.rawHeaders[i + 1]!);
        const status = res.statusCode ?? 502;
        const empty = NULL_BODY_STATUS.has(status) || method === 'HEAD';
        if (empty) res.resume();
        resolve(new Response(empty ? null : (Readable.toWeb(res) as ReadableStream<Uint8Array>), { status, statusText: res.statusMessage ?? '', headers: h }));
      });
      // An aborted request (AbortSignal.timeout) fails with the signal's reason, as fetch does: callers tell timeouts apart.
      req.on('error', (err) => reject(init?.signal?.aborted ? (init.signal.reason as Error) : err));
      req.end();
    });
  };
}
