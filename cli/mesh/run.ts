/**
 * The plugin's command line: flags as kubectl passes them (after `mesh`: kubectl refuses flags before a
 * plugin name), dispatch to a subcommand, and the text plus exit status to print. No process access here
 * beyond the environment passed in, so tests can run it in-process.
 */
import { parseArgs } from 'node:util';
import { parseAgentEndpoints } from './agent-status.ts';
import { runCheck } from './check.ts';
import { runConnectivityTest } from './connectivity.ts';
import { CliError } from './errors.ts';
import { explainRequest, formatRequestExplanation } from './explain-request.ts';
import { runExplain } from './explain.ts';
import { contextNamespace, createClusterReader, loadKubeConfig, type ClusterReader } from './kube.ts';
import type { OutputFormat } from './output.ts';
import { runRoutes } from './routes.ts';
import { runStat } from './stat.ts';
import { runStatus } from './status.ts';

/** The plugin's version (printed by `kubectl mesh version`). */
export const PLUGIN_VERSION = '0.1.0';

export const USAGE = `kubectl mesh: inspect and check the nodemesh service mesh.

Usage:
  kubectl mesh status                    operator and per-node state (NodeState sets, agents)
  kubectl mesh check                     graded checks: API server, CRDs, operator Lease, NodeStates, CA validity,
                                         agents (kernel, BPF, cgroup v2, bpffs), clock skew, version skew
  kubectl mesh routes [SERVICE]          HTTPRoutes (parents, matches, weighted backends, conditions);
                                         with SERVICE: also its policies and what each node programmed
  kubectl mesh explain KIND/NAME         conditions with reasons and where the object is programmed
                                         (KIND: httproute, trafficpolicy, authorizationpolicy, meshtlspolicy, svc, nodestate)
  kubectl mesh explain FROM-POD URL      why a request would be routed or denied: matched route, weighted backends and
      [-X M] [-H 'name: value']...       endpoints, TrafficPolicy, AuthorizationPolicy verdict (policy, rule), identities;
                                         asked of the source pod's agent and each destination endpoint's agent
  kubectl mesh stat [SERVICE]            golden metrics per service and route from the agents: requests, success
                                         rate, requests/s (over --window), p50/p95/p99 (all namespaces unless -n)
  kubectl mesh connectivity test         deploys test pods in namespace nodemesh-connectivity-test, checks pod→pod
                                         (same node, across nodes), pod→Service, DNS, mTLS, STRICT, a denied path;
                                         prints a line per check and "N/N tests passed", then cleans up
  kubectl mesh version

Flags (after the subcommand or before it, never before "mesh"):
  -n, --namespace NS        namespace (default: the context's, else "default")
  -A, --all-namespaces      list across namespaces (routes)
  -o, --output json|table   output format (default table)
      --kubeconfig PATH     kubeconfig (default $KUBECONFIG, else ~/.kube/config)
      --context NAME        kubeconfig context
      --agent-endpoints L   node=url,... where agents serve /statusz (default $NODEMESH_AGENT_ENDPOINTS,
                            else the Node annotation nodemesh.io/agent-status-url, else the agent DaemonSet's
                            pod on the node through the API server's pods proxy: needs get on pods/proxy
                            in nodemesh-system); /metrics and /explain beside it
      --operator-status-url URL   check: the operator's /status, for its version (default
                            $NODEMESH_OPERATOR_STATUS_URL, else Deployment nodemesh-system/nodemesh-operator)
      --window DURATION     stat: time between the two scrapes that give requests/s (default 1s; 0 = one scrape)
      --keep                connectivity test: keep the test namespace afterwards
      --image-echo IMG, --image-client IMG   connectivity test images (default nodemesh/echo, nodemesh/client)

kubectl refuses flags before a plugin name: write "kubectl mesh status --kubeconfig FILE", or
"KUBECONFIG=FILE kubectl mesh status" (sandbox: KUBECONFIG=$(bin/nodemesh sandbox kubeconfig)).
`;

/** What running the plugin produced. */
export type RunResult = { stdout: string; stderr: string; code: number };

/** Runs `kubectl mesh ARGS`; `makeReader` replaces the API client in tests. */
export async function runPlugin(argv: readonly string[], env: Readonly<Record<string, string | undefined>>, makeReader?: (o: { kubeconfig?: string; context?: string }) => { reader: ClusterReader; namespace: string }): Promise<RunResult> {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      strict: true,
      options: {
        namespace: { type: 'string', short: 'n' },
        'all-namespaces': { type: 'boolean', short: 'A', default: false },
        output: { type: 'string', short: 'o', default: 'table' },
        kubeconfig: { type: 'string' },
        context: { type: 'string' },
        'agent-endpoints': { type: 'string' },
        'operator-status-url': { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
        // explain FROM-POD URL: the request's method and headers.
        method: { type: 'string', short: 'X' },
        header: { type: 'string', short: 'H', multiple: true },
        window: { type: 'string' },
        keep: { type: 'boolean', default: false },
        'image-echo': { type: 'string' },
        'image-client': { type: 'string' },
        'check-deadline': { type: 'string' },
      },
    });
  } catch (e) {
    return { stdout: '', stderr: `error: ${(e as Error).message}\n\n${USAGE}`, code: 2 };
  }
  const { values, positionals } = parsed;
  const [cmd, ...rest] = positionals;
  if (values.help || cmd === undefined || cmd === 'help') return { stdout: USAGE, stderr: '', code: cmd === undefined && !values.help ? 2 : 0 };
  if (cmd === 'version') return { stdout: `kubectl-mesh ${PLUGIN_VERSION} (nodemesh)\n`, stderr: '', code: 0 };
  const output = values.output;
  if (output !== 'table' && output !== 'json' && output !== 'wide') return { stdout: '', stderr: `error: -o ${output}: supported formats are json and table\n`, code: 2 };
  const format: OutputFormat = output;
  try {
    const agentEndpoints = parseAgentEndpoints(values['agent-endpoints'] ?? env.NODEMESH_AGENT_ENDPOINTS);
    const open = (): { reader: ClusterReader; namespace: string } => {
      const o = { ...(values.kubeconfig ? { kubeconfig: values.kubeconfig } : {}), ...(values.context ? { context: values.context } : {}) };
      if (makeReader) return makeReader(o);
      const kc = loadKubeConfig(o);
      return { reader: createClusterReader(kc), namespace: contextNamespace(kc) };
    };
    const arity = (max: number, usage: string): void => {
      if (rest.length > max) throw new CliError('NM_ERR_CLI_USAGE', `${cmd}: unexpected argument "${rest[max]}"; usage: kubectl mesh ${usage}`);
    };
    switch (cmd) {
      case 'status': {
        arity(0, 'status');
        const { reader } = open();
        return { stdout: await runStatus(reader, { format, agentEndpoints }), stderr: '', code: 0 };
      }
      case 'check': {
        arity(0, 'check');
        const { reader } = open();
        const operatorStatusUrl = values['operator-status-url'] ?? env.NODEMESH_OPERATOR_STATUS_URL;
        const r = await runCheck(reader, { format, agentEndpoints, cliVersion: PLUGIN_VERSION, ...(operatorStatusUrl ? { operatorStatusUrl } : {}) });
        return { stdout: r.text, stderr: '', code: r.ok ? 0 : 1 };
      }
      case 'routes': {
        arity(1, 'routes [SERVICE] [-n NS | -A]');
        const { reader, namespace } = open();
        if (rest[0] && values['all-namespaces']) throw new CliError('NM_ERR_CLI_USAGE', 'routes SERVICE names one namespace\'s Service: use -n, not -A');
        const ns = values['all-namespaces'] ? undefined : (values.namespace ?? namespace);
        return { stdout: await runRoutes(reader, { namespace: ns, ...(rest[0] ? { service: rest[0] } : {}), format }), stderr: '', code: 0 };
      }
      case 'explain': {
        if (rest.length === 2) {
          const { reader, namespace } = open();
          const v = await explainRequest(reader, {
            pod: rest[0]!, url: rest[1]!, namespace: values.namespace ?? namespace, agentEndpoints,
            ...(values.method ? { method: values.method } : {}), ...(values.header ? { headers: values.header } : {}),
          });
          return { stdout: formatRequestExplanation(v, format), stderr: '', code: 0 };
        }
        if (values.method || values.header) throw new CliError('NM_ERR_CLI_USAGE', 'explain: --method and -H go with explain FROM-POD URL');
        arity(2, 'explain KIND/NAME [-n NS] | explain FROM-POD URL [--method M] [-H \'name: value\']...');
        if (!rest[0]) throw new CliError('NM_ERR_CLI_USAGE', 'explain: which object? usage: kubectl mesh explain KIND/NAME (e.g. httproute/reviews)');
        const { reader, namespace } = open();
        return { stdout: await runExplain(reader, { target: rest[0], namespace: values.namespace ?? namespace, format }), stderr: '', code: 0 };
      }
      case 'stat': {
        arity(1, 'stat [SERVICE] [-n NS]');
        const { reader, namespace } = open();
        const windowMs = values.window === undefined ? 1000 : parseDurationMs(values.window, '--window');
        const ns = values.namespace ?? (rest[0] ? namespace : undefined);
        return { stdout: await runStat(reader, { format, agentEndpoints, windowMs, ...(ns !== undefined ? { namespace: ns } : {}), ...(rest[0] ? { service: rest[0] } : {}) }), stderr: '', code: 0 };
      }
      case 'connectivity': {
        if (rest[0] !== 'test' || rest.length > 1) throw new CliError('NM_ERR_CLI_USAGE', 'usage: kubectl mesh connectivity test [--keep]');
        const o = { ...(values.kubeconfig ? { kubeconfig: values.kubeconfig } : {}), ...(values.context ? { context: values.context } : {}) };
        const kc = loadKubeConfig(o);
        const progress: string[] = [];
        const r = await runConnectivityTest(kc, {
          format, keep: values.keep, progress: (l) => progress.push(`… ${l}\n`),
          images: { ...(values['image-echo'] ? { echo: values['image-echo'] } : {}), ...(values['image-client'] ? { client: values['image-client'] } : {}) },
          ...(values['check-deadline'] ? { checkDeadlineSeconds: parseDurationMs(values['check-deadline'], '--check-deadline') / 1000 } : {}),
        });
        return { stdout: r.text, stderr: progress.join(''), code: r.ok ? 0 : 1 };
      }
      default:
        throw new CliError('NM_ERR_CLI_USAGE', `unknown command "${cmd}"`);
    }
  } catch (e) {
    if (e instanceof CliError) return { stdout: '', stderr: `error: ${e.message}\n${e.code === 'NM_ERR_CLI_USAGE' ? `\n${USAGE}` : ''}`, code: e.exitCode };
    return { stdout: '', stderr: `error: ${(e as Error).message}\n`, code: 1 };
  }
}

/** `500ms`, `2s`, `1m` (or plain milliseconds) → milliseconds; the error names the flag. */
export function parseDurationMs(text: string, flag: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(text.trim());
  if (!m) throw new CliError('NM_ERR_CLI_USAGE', `${flag} ${text}: not a duration (e.g. 500ms, 2s, 1m)`);
  const n = Number(m[1]);
  return Math.round(m[2] === 's' ? n * 1000 : m[2] === 'm' ? n * 60_000 : n);
}
