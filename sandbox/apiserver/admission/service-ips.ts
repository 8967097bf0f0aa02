/** Allocators for Service ClusterIPs (from the service CIDR) and NodePorts (from the node-port range). */

/** Why an allocation was refused; the caller wraps it into a 422 field error. */
export class AllocationError extends Error {}

/** Parses dotted IPv4 into an unsigned 32-bit number, or undefined. */
export function parseIPv4(ip: string): number | undefined {
  const m = ip.match(/^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/);
  if (!m) return undefined;
  const parts = m.slice(1).map(Number);
  if (parts.some((p) => p > 255)) return undefined;
  return ((parts[0]! << 24) >>> 0) + (parts[1]! << 16) + (parts[2]! << 8) + parts[3]!;
}

/** Formats an unsigned 32-bit number as dotted IPv4. */
export function formatIPv4(n: number): string {
  return [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** Parses `a.b.c.d/n` into its network address and prefix length; throws on malformed input. */
export function parseCIDR(cidr: string): { network: number; prefix: number; size: number } {
  const [ip, len] = cidr.split('/');
  const base = ip === undefined ? undefined : parseIPv4(ip);
  const prefix = Number(len);
  if (base === undefined || !Number.isInteger(prefix) || prefix < 8 || prefix > 30) {
    throw new AllocationError(`invalid service CIDR "${cidr}": want an IPv4 CIDR with a prefix between /8 and /30`);
  }
  const size = 2 ** (32 - prefix);
  const network = Math.floor(base / size) * size;
  return { network, prefix, size };
}

/** Hands out ClusterIPs; the first usable address is reserved for the `kubernetes` Service. */
export class ClusterIpAllocator {
  readonly cidr: string;
  private readonly network: number;
  private readonly size: number;
  private readonly used = new Set<number>();
  private cursor = 2; // offset of the next dynamic candidate; 1 is the kubernetes Service

  constructor(cidr: string) {
    const p = parseCIDR(cidr);
    this.cidr = cidr;
    this.network = p.network;
    this.size = p.size;
  }

  /** The address reserved for the `kubernetes` Service (network + 1). */
  get firstAddress(): string {
    return formatIPv4(this.network + 1);
  }

  /** True when ip lies in the usable part of the range. */
  contains(ip: string): boolean {
    const n = parseIPv4(ip);
    return n !== undefined && n > this.network && n < this.network + this.size - 1;
  }

  /** Allocates the requested address, or the next free one when none is requested. */
  allocate(requested?: string): string {
    if (requested) {
      const n = parseIPv4(requested);
      if (n === undefined) throw new AllocationError(`failed to allocate IP ${requested}: not a valid IPv4 address`);
      if (!this.contains(requested)) {
        throw new AllocationError(`failed to allocate IP ${requested}: the provided IP (${requested}) is not in the valid range. The range of valid IPs is ${this.cidr}`);
      }
      if (this.used.has(n)) throw new AllocationError(`failed to allocate IP ${requested}: provided IP is already allocated`);
      this.used.add(n);
      return requested;
    }
    const usable = this.size - 2;
    for (let i = 0; i < usable; i++) {
      const off = ((this.cursor - 1 + i) % usable) + 1;
      const n = this.network + off;
      if (off === 1) continue; // dynamic allocation never takes the kubernetes Service's address
      if (!this.used.has(n)) {
        this.used.add(n);
        this.cursor = off + 1;
        return formatIPv4(n);
      }
    }
    throw new AllocationError(`failed to allocate a serviceIP: range is full (${this.cidr})`);
  }

  /** Returns an address to the pool. */
  release(ip: string): void {
    const n = parseIPv4(ip);
    if (n !== undefined) this.used.delete(n);
  }

  /** Marks an address used without checks (rebuilding state from stored Services). */
  mark(ip: string): void {
    const n = parseIPv4(ip);
    if (n !== undefined) this.used.add(n);
  }
}

/** Hands out NodePorts from an inclusive range. */
export class NodePortAllocator {
  readonly min: number;
  readonly max: number;
  private readonly used = new Set<number>();
  private cursor: number;

  constructor(range: [number, number]) {
    [this.min, this.max] = range;
    if (!(this.min > 0 && this.max <= 65535 && this.min <= this.max)) throw new AllocationError(`invalid node port range ${range.join('-')}`);
    this.cursor = this.min;
  }

  /** Allocates the requested port, or the next free one when `requested` is 0/undefined. */
  allocate(requested?: number): number {
    if (requested) {
      if (requested < this.min || requested > this.max) {
        throw new AllocationError(`provided port is not in the valid range. The range of valid ports is ${this.min}-${this.max}`);
      }
      if (this.used.has(requested)) throw new AllocationError('provided port is already allocated');
      this.used.add(requested);
      return requested;
    }
    const n = this.max - this.min + 1;
    for (let i = 0; i < n; i++) {
      const p = this.min + ((this.cursor - this.min + i) % n);
      if (!this.used.has(p)) {
        this.used.add(p);
        this.cursor = p + 1 > this.max ? this.min : p + 1;
        return p;
      }
    }
    throw new AllocationError(`range is full (${this.min}-${this.max})`);
  }

  /** Returns a port to the pool. */
  release(port: number): void {
    this.used.delete(port);
  }

  /** Marks a port used without checks (rebuilding state from stored Services). */
  mark(port: number): void {
    this.used.add(port);
  }

  /** True when the port is taken. */
  has(port: number): boolean {
    return this.used.has(port);
  }
}
