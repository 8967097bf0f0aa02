/**
 * Starting programs inside a pod: a tiny shell wrapper writes its own PID into the pod's cgroup.procs, then
 * execs `ip netns exec <netns> CMD` (which also bind-mounts the pod's /etc/netns files over /etc). The PID
 * spawned is the PID of the program itself, so it is stopped by PID; everything it forks stays in the cgroup.
 */

/** The script: `$1` cgroup dir, `$2` netns, then the command. Exit 126 when the cgroup cannot be joined. */
const WRAPPER = 'cg=$1; ns=$2; shift 2; echo $$ > "$cg/cgroup.procs" || exit 126; exec ip netns exec "$ns" "$@"';

/** argv (program first) that runs `command` inside the pod's network namespace and cgroup. */
export function podWrapperArgv(cgroupPath: string, netns: string, command: readonly string[]): string[] {
  return ['sh', '-c', WRAPPER, 'nodemesh-pod', cgroupPath, netns, ...command];
}
