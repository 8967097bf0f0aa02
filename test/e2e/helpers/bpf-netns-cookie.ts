/** Prints the netns cookie of the namespace this helper runs in (for the hostNetnsOnly check). */
import { getNetnsCookie } from '../../../bpf/libbpf.ts';

process.stdout.write(`${JSON.stringify({ cookie: getNetnsCookie().toString() })}\n`);
