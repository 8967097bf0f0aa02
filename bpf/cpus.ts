/** Number of possible CPUs, the length of every per-CPU map value (as libbpf_num_possible_cpus computes it). */
import { readFileSync } from 'node:fs';

/** Counts the CPUs of a kernel cpulist such as "0-3,8-11". */
export function countCpuList(list: string): number {
  let n = 0;
  for (const part of list.trim().split(',')) {
    if (!part) continue;
    const [a, b] = part.split('-').map(Number);
    if (a === undefined || Number.isNaN(a)) continue;
    n += b === undefined || Number.isNaN(b) ? 1 : b - a + 1;
  }
  return n;
}

/** Possible CPUs of this machine (not online ones: per-CPU maps are sized by possible CPUs). */
export const possibleCpus: number = countCpuList(readFileSync('/sys/devices/system/cpu/possible', 'utf8'));
