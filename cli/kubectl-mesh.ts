// kubectl-mesh: the `kubectl mesh` plugin (bin/kubectl-mesh on PATH). Subcommands live in cli/mesh/.
import { runPlugin } from './mesh/run.ts';

const r = await runPlugin(process.argv.slice(2), process.env);
if (r.stdout) process.stdout.write(r.stdout);
if (r.stderr) process.stderr.write(r.stderr);
process.exitCode = r.code;
