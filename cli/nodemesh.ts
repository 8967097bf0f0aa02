/**
 * bin/nodemesh: the sandbox cluster on this machine (`sandbox up|down|status|exec|kubeconfig|check-isolation`)
 * and the demo. NODEMESH_SANDBOX_INSTANCE picks another, independent sandbox (tests use their own).
 */
import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { resolveSandboxConfig, sandboxPaths, type SandboxConfig } from '../sandbox/config.ts';
import { SandboxError, describeError } from '../sandbox/errors.ts';
import { requireRoot } from '../sandbox/process.ts';

// Commands load their modules on demand: @kubernetes/client-node takes seconds to load, and `sandbox exec`
// (used in loops by tests and users) does not need it.

const USAGE = `usage: nodemesh <command>

  demo                                  two-node sandbox + echo service + client, traffic shown
  sandbox up [--nodes N] [--pods-per-node M]
                                        build the sandbox (default 2 nodes, 1 echo pod per node)
  sandbox down                          remove every namespace, cgroup, pin, process and file it made
  sandbox status                        API server, supervisor, nodes, pods, daemons
  sandbox exec POD [-n NS] -- CMD...    run CMD in a pod's network namespace and cgroup
  sandbox logs POD [-n NS] [-c C] [-f]  print a container's output
  sandbox kubeconfig                    print the path of the kubeconfig for kubectl
  sandbox check-isolation               follow route lookups to outside addresses from every namespace
  version

environment: NODEMESH_SANDBOX_INSTANCE=<name> runs a separate sandbox (own namespaces, state and port).`;

const say = (l: string): void => console.log(l);

async function sandboxCommand(cfg: SandboxConfig, args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case 'up': {
      const { values } = parseArgs({ args: rest, options: { nodes: { type: 'string', default: '2' }, 'pods-per-node': { type: 'string', default: '1' } } });
      const nodes = Number(values.nodes);
      const podsPerNode = Number(values['pods-per-node']);
      try {
        const { upSandbox } = await import('../sandbox/up.ts');
        const r = await upSandbox(cfg, { nodes, podsPerNode, out: say });
        say(`sandbox up: ${r.topology.nodes.map((n) => `${n.name} ${n.fabricAddr} pods ${n.podCidr}`).join('; ')}`);
        say(`kubectl --kubeconfig ${r.kubeconfig} get nodes,pods -A -o wide`);
        return 0;
      } catch (err) {
        const code = (err as SandboxError).code;
        console.error(`nodemesh sandbox up: ${describeError(err)}`);
        const nothingBuilt = ['NM_ERR_SANDBOX_ALREADY_UP', 'NM_ERR_SANDBOX_STALE_STATE', 'NM_ERR_SANDBOX_NOT_ROOT', 'NM_ERR_SANDBOX_BAD_ARGUMENT', 'NM_ERR_SANDBOX_PORT_IN_USE'];
        if (!nothingBuilt.includes(code)) {
          console.error('the sandbox is half built; `nodemesh sandbox down` removes what was made');
        }
        return 1;
      }
    }
    case 'down': {
      requireRoot('nodemesh sandbox down');
      const { downSandbox } = await import('../sandbox/down.ts');
      const r = await downSandbox(cfg, say);
      for (const p of r.problems) console.error(`  problem: ${p}`);
      if (!r.found) say(`no sandbox (instance ${cfg.instance}) was up; nothing to remove`);
      else say(`sandbox down: removed ${r.removed.length} items${r.problems.length ? `, ${r.problems.length} problem(s) above` : ''}`);
      return r.problems.length ? 1 : 0;
    }
    case 'status': {
      const { statusSandbox } = await import('../sandbox/status.ts');
      const r = await statusSandbox(cfg);
      for (const l of r.lines) say(l);
      return r.up ? 0 : 1;
    }
    case 'kubeconfig': {
      const p = sandboxPaths(cfg).hostKubeconfig;
      if (!existsSync(p)) {
        console.error(`no sandbox (instance ${cfg.instance}) is up: ${p} does not exist; run \`nodemesh sandbox up\``);
        return 1;
      }
      say(p);
      return 0;
    }
    case 'exec': {
      const dash = rest.indexOf('--');
      const before = dash >= 0 ? rest.slice(0, dash) : rest.slice(0, 1);
      const command = dash >= 0 ? rest.slice(dash + 1) : rest.slice(1);
      const { values, positionals } = parseArgs({ args: before, options: { namespace: { type: 'string', short: 'n', default: 'default' } }, allowPositionals: true });
      const pod = positionals[0];
      if (!pod) throw new SandboxError('NM_ERR_SANDBOX_BAD_ARGUMENT', 'usage: nodemesh sandbox exec POD [-n NAMESPACE] -- CMD [ARGS...]');
      requireRoot('nodemesh sandbox exec');
      const { execInPod } = await import('../sandbox/exec-pod.ts');
      return execInPod(cfg, pod, values.namespace ?? 'default', command);
    }
    case 'logs': {
      const { values, positionals } = parseArgs({ args: rest, allowPositionals: true, options: { namespace: { type: 'string', short: 'n', default: 'default' }, container: { type: 'string', short: 'c' }, follow: { type: 'boolean', short: 'f', default: false } } });
      const pod = positionals[0];
      if (!pod) throw new SandboxError('NM_ERR_SANDBOX_BAD_ARGUMENT', 'usage: nodemesh sandbox logs POD [-n NAMESPACE] [-c CONTAINER] [-f]');
      const { podLogPath } = await import('../sandbox/exec-pod.ts');
      const path = await podLogPath(cfg, pod, values.namespace ?? 'default', values.container);
      const { spawn } = await import('node:child_process');
      return new Promise((resolve) => {
        const child = spawn('tail', [values.follow ? '-f' : '-n+1', ...(values.follow ? ['-n+1'] : []), path], { stdio: 'inherit' });
        child.on('exit', (code) => resolve(code ?? 0));
      });
    }
    case 'check-isolation': {
      requireRoot('nodemesh sandbox check-isolation');
      const { checkIsolation, formatWalk } = await import('../sandbox/net/isolation.ts');
      const r = await checkIsolation(cfg);
      const walks = r.walks.filter((w) => !w.ok);
      for (const w of walks) say(formatWalk(w));
      for (const p of r.problems) if (!walks.some((w) => p === formatWalk(w))) say(`FAIL ${p}`);
      say(`${r.ok ? 'isolated' : 'NOT isolated'}: ${r.walks.length} route walks from ${r.namespaces.length} namespaces, ${r.problems.length} problem(s)`);
      return r.ok ? 0 : 1;
    }
    default:
      console.error(USAGE);
      return 2;
  }
}

async function main(argv: string[]): Promise<number> {
  const cfg = resolveSandboxConfig();
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'sandbox': return sandboxCommand(cfg, rest);
    case 'demo':
      requireRoot('nodemesh demo');
      await (await import('../sandbox/demo.ts')).runDemo(cfg, say);
      return 0;
    case 'version':
    case '--version':
      say('nodemesh 0.1.0');
      return 0;
    case 'help':
    case '--help':
    case '-h':
      say(USAGE);
      return 0;
    default:
      console.error(USAGE);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`nodemesh: ${describeError(err)}`);
    process.exit(1);
  },
);
