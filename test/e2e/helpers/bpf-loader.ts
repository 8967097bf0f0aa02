/**
 * First loader of the BPF datapath e2e test: loads and attaches the datapath for the test node,
 * programs the services the test expects, prints one JSON line, then idles until it is killed
 * (kill -9: the datapath must survive it through its pins).
 */
import { Datapath } from '../../../bpf/datapath.ts';
import { type ServiceSpec, planServiceEntries, writeDatapathConfig, writeServiceEntries } from '../../../bpf/lb-tables.ts';

const [pinDir = '', cgroupPath = '', specsJson = '[]'] = process.argv.slice(2);
const dp = Datapath.open({ pinDir, cgroupPath });
writeDatapathConfig(dp, {});
for (const spec of JSON.parse(specsJson) as ServiceSpec[]) writeServiceEntries(dp, planServiceEntries(spec));
process.stdout.write(`${JSON.stringify({ attachments: dp.attachments })}\n`);
setInterval(() => {}, 1 << 30);
