/** Errors of the BPF binding: one class per failure family, each with a stable NM_ERR_BPF_* code. */
import { constants as osConstants } from 'node:os';

/** Stable codes of the binding's errors. */
export type BpfErrorCode =
  | 'NM_ERR_BPF_LIBBPF'
  | 'NM_ERR_BPF_OPEN'
  | 'NM_ERR_BPF_LOAD'
  | 'NM_ERR_BPF_NOT_FOUND'
  | 'NM_ERR_BPF_ATTACH'
  | 'NM_ERR_BPF_PIN'
  | 'NM_ERR_BPF_ADOPT'
  | 'NM_ERR_BPF_MAP_INCOMPATIBLE'
  | 'NM_ERR_BPF_MAP_OP'
  | 'NM_ERR_BPF_MAP_FULL'
  | 'NM_ERR_BPF_CODEC'
  | 'NM_ERR_BPF_CLOSED'
  | 'NM_ERR_BPF_PERM'
  | 'NM_ERR_BPF_TC';

const errnoNames = new Map<number, string>(
  Object.entries(osConstants.errno).map(([name, value]) => [value, name]),
);
// Kernel-internal codes that leak through bpf(2) and have no libc name.
errnoNames.set(524, 'ENOTSUPP');

/** Symbolic name of an errno value ("ENOENT"), or "errno N" when unknown. */
export function describeErrno(errno: number): string {
  return errnoNames.get(Math.abs(errno)) ?? `errno ${Math.abs(errno)}`;
}

/** Base class: carries the code, the errno (positive) when the kernel reported one, and the object named. */
export class BpfError extends Error {
  readonly code: BpfErrorCode;
  readonly errno: number | undefined;
  readonly object: string | undefined;

  constructor(code: BpfErrorCode, message: string, opts: { errno?: number; object?: string; cause?: unknown } = {}) {
    const suffix = opts.errno !== undefined ? ` (${describeErrno(opts.errno)}${hintFor(opts.errno)})` : '';
    super(`${message}${suffix}`, opts.cause !== undefined ? { cause: opts.cause } : undefined);
    this.name = new.target.name;
    this.code = code;
    this.errno = opts.errno !== undefined ? Math.abs(opts.errno) : undefined;
    this.object = opts.object;
  }
}

/** Loading an object failed; `log` holds libbpf's and the verifier's last lines. */
export class BpfLoadError extends BpfError {
  readonly log: string;

  constructor(message: string, opts: { errno?: number; object?: string; log: string }) {
    super('NM_ERR_BPF_LOAD', opts.log ? `${message}\n${opts.log}` : message, opts);
    this.log = opts.log;
  }
}

/** A map operation failed (lookup, update, delete, batch, iteration). */
export class BpfMapError extends BpfError {
  /** For batch operations: how many elements the kernel processed before the failure. */
  readonly processed: number | undefined;

  constructor(code: BpfErrorCode, message: string, opts: { errno?: number; object?: string; processed?: number } = {}) {
    super(code, message, opts);
    this.processed = opts.processed;
  }
}

/** Attaching, adopting or detaching a program failed. */
export class BpfAttachError extends BpfError {}

/** A value did not fit its C layout (out of range, bad address, wrong per-CPU length). */
export class BpfCodecError extends BpfError {
  constructor(message: string, opts: { object?: string } = {}) {
    super('NM_ERR_BPF_CODEC', message, opts);
  }
}

function hintFor(errno: number): string {
  switch (Math.abs(errno)) {
    case osConstants.errno.EPERM:
      return ': needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)';
    case osConstants.errno.E2BIG:
      return ': map full, raise max_entries in bpf/include or delete stale entries';
    case osConstants.errno.EEXIST:
      return ': entry exists and the update asked for a new one';
    case osConstants.errno.EBADF:
      return ': file descriptor closed, or the object was closed';
    default:
      return '';
  }
}
