// kubectl-mesh: the `kubectl mesh` plugin. Not built yet: the observability issue fills it in.
const args = process.argv.slice(2);
if (args[0] === 'version' || args[0] === '--version') {
  console.log('kubectl-mesh 0.1.0 (nodemesh)');
  process.exit(0);
}
console.error(`kubectl mesh ${args.join(' ')}: not built yet. The plugin's subcommands (status, check, routes, explain, stat, connectivity test) arrive with the observability work; see README.md.`);
process.exit(2);
