/**
 * tc check for the BPF datapath e2e test: attach, replace, query and detach a sched_cls program on
 * an interface of the netns this helper runs in (tc netlink acts in the caller's netns).
 */
import { readFileSync } from 'node:fs';
import { attachTc, detachTc, queryTc } from '../../../bpf/link.ts';
import { BpfObject } from '../../../bpf/object.ts';

const [objectPath = '', dev = ''] = process.argv.slice(2);
const obj = BpfObject.load(objectPath);
try {
  const prog = obj.program('nm_tc_pass');
  const ifindex = Number(readFileSync(`/sys/class/net/${dev}/ifindex`, 'utf8'));
  const first = attachTc(prog, ifindex, 'ingress');
  const again = attachTc(prog, ifindex, 'ingress'); // same handle/priority: replaced in place
  const queried = queryTc(first);
  const detached = detachTc(first);
  const after = queryTc(first);
  process.stdout.write(`${JSON.stringify({ progId: first.progId, againProgId: again.progId, queried, detached, after: after ?? null })}\n`);
} finally {
  obj.close();
}
