/** Pod address allocation within one node's /24: .1 is the node, .2-.254 go to pods, lowest free first. */
import { SandboxError } from '../errors.ts';

/** Allocates pod addresses of one node's pod CIDR to keys (pod UIDs); pure and in memory. */
export class PodIpAllocator {
  private readonly base: string;
  private readonly byKey = new Map<string, number>();
  private readonly used = new Set<number>();
  private readonly cidr: string;

  /** `podCidr` must be an IPv4 /24 such as 10.244.1.0/24. */
  constructor(podCidr: string) {
    const m = /^(\d+\.\d+\.\d+)\.0\/24$/.exec(podCidr);
    if (!m?.[1]) throw new SandboxError('NM_ERR_SANDBOX_BAD_ARGUMENT', `pod CIDR "${podCidr}" must be an IPv4 /24 ending in .0/24`);
    this.base = m[1];
    this.cidr = podCidr;
  }

  /** The address of a key, allocating the lowest free one on first use. */
  allocate(key: string): string {
    const have = this.byKey.get(key);
    if (have !== undefined) return `${this.base}.${have}`;
    for (let host = 2; host <= 254; host++) {
      if (this.used.has(host)) continue;
      this.used.add(host);
      this.byKey.set(key, host);
      return `${this.base}.${host}`;
    }
    throw new SandboxError('NM_ERR_SANDBOX_IPAM_EXHAUSTED', `pod CIDR ${this.cidr} has no free address for ${key}: 253 pods already hold one; delete pods or add nodes`);
  }

  /** Frees the key's address, if it holds one. */
  release(key: string): void {
    const host = this.byKey.get(key);
    if (host === undefined) return;
    this.byKey.delete(key);
    this.used.delete(host);
  }

  /** The address a key holds, if any. */
  addressOf(key: string): string | undefined {
    const host = this.byKey.get(key);
    return host === undefined ? undefined : `${this.base}.${host}`;
  }

  /** How many addresses are held. */
  get size(): number {
    return this.byKey.size;
  }
}
