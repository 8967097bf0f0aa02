/**
 * Raw FFI over the system's libbpf.so.1 (Debian libbpf1) and a few libc calls, through koffi.
 * Thin on purpose: each function mirrors its C signature; typed wrappers live in object.ts,
 * map.ts and link.ts. libbpf 1.x returns -errno from fd-level calls and NULL + errno from
 * pointer-returning ones; `lastErrno()` reads the latter.
 */
import koffi, { type LibraryHandle } from 'koffi';
import { arch } from 'node:os';
import { BpfError } from './errors.ts';

/** Opaque libbpf handles (struct bpf_object *, bpf_program *, bpf_map *). */
export type ObjectPtr = unknown;
export type ProgramPtr = unknown;
export type MapPtr = unknown;

function loadLibrary(name: string): LibraryHandle {
  try {
    return koffi.load(name);
  } catch (err) {
    throw new BpfError('NM_ERR_BPF_LIBBPF', `cannot load ${name}: install the Debian package libbpf1 (scripts/setup.sh does)`, { cause: err });
  }
}

const lib = loadLibrary('libbpf.so.1');
const libc = loadLibrary('libc.so.6');

koffi.opaque('bpf_object');
koffi.opaque('bpf_program');
koffi.opaque('bpf_map');

const LibbpfPrintFn = koffi.proto('int nm_libbpf_print_fn(int level, const char *fmt, void *args)');

/** Every binding; the names are libbpf's. */
export const ffi = {
  // Objects.
  bpf_object__open_file: lib.func('bpf_object *bpf_object__open_file(const char *path, void *opts)'),
  bpf_object__load: lib.func('int bpf_object__load(bpf_object *obj)'),
  bpf_object__close: lib.func('void bpf_object__close(bpf_object *obj)'),
  bpf_object__next_program: lib.func('bpf_program *bpf_object__next_program(bpf_object *obj, bpf_program *prev)'),
  bpf_object__next_map: lib.func('bpf_map *bpf_object__next_map(bpf_object *obj, bpf_map *prev)'),
  // Programs.
  bpf_program__name: lib.func('const char *bpf_program__name(bpf_program *prog)'),
  bpf_program__fd: lib.func('int bpf_program__fd(bpf_program *prog)'),
  bpf_program__type: lib.func('int bpf_program__type(bpf_program *prog)'),
  bpf_program__expected_attach_type: lib.func('int bpf_program__expected_attach_type(bpf_program *prog)'),
  bpf_program__section_name: lib.func('const char *bpf_program__section_name(bpf_program *prog)'),
  // Maps within an object.
  bpf_map__name: lib.func('const char *bpf_map__name(bpf_map *map)'),
  bpf_map__fd: lib.func('int bpf_map__fd(bpf_map *map)'),
  bpf_map__type: lib.func('int bpf_map__type(bpf_map *map)'),
  bpf_map__key_size: lib.func('uint32_t bpf_map__key_size(bpf_map *map)'),
  bpf_map__value_size: lib.func('uint32_t bpf_map__value_size(bpf_map *map)'),
  bpf_map__max_entries: lib.func('uint32_t bpf_map__max_entries(bpf_map *map)'),
  bpf_map__map_flags: lib.func('uint32_t bpf_map__map_flags(bpf_map *map)'),
  bpf_map__set_pin_path: lib.func('int bpf_map__set_pin_path(bpf_map *map, const char *path)'),
  bpf_map__is_pinned: lib.func('bool bpf_map__is_pinned(bpf_map *map)'),
  // fd-level calls (return -errno).
  bpf_map_update_elem: lib.func('int bpf_map_update_elem(int fd, void *key, void *value, uint64_t flags)'),
  bpf_map_lookup_elem: lib.func('int bpf_map_lookup_elem(int fd, void *key, void *value)'),
  bpf_map_delete_elem: lib.func('int bpf_map_delete_elem(int fd, void *key)'),
  bpf_map_get_next_key: lib.func('int bpf_map_get_next_key(int fd, void *key, void *next_key)'),
  bpf_map_update_batch: lib.func('int bpf_map_update_batch(int fd, void *keys, void *values, uint32_t *count, void *opts)'),
  bpf_map_lookup_batch: lib.func('int bpf_map_lookup_batch(int fd, void *in_batch, void *out_batch, void *keys, void *values, uint32_t *count, void *opts)'),
  bpf_map_delete_batch: lib.func('int bpf_map_delete_batch(int fd, void *keys, uint32_t *count, void *opts)'),
  bpf_obj_pin: lib.func('int bpf_obj_pin(int fd, const char *path)'),
  bpf_obj_get: lib.func('int bpf_obj_get(const char *path)'),
  bpf_obj_get_info_by_fd: lib.func('int bpf_obj_get_info_by_fd(int fd, void *info, uint32_t *info_len)'),
  bpf_prog_attach: lib.func('int bpf_prog_attach(int prog_fd, int target_fd, int type, unsigned int flags)'),
  bpf_prog_detach2: lib.func('int bpf_prog_detach2(int prog_fd, int target_fd, int type)'),
  bpf_prog_query: lib.func('int bpf_prog_query(int target_fd, int type, uint32_t query_flags, uint32_t *attach_flags, uint32_t *prog_ids, uint32_t *prog_cnt)'),
  bpf_prog_get_fd_by_id: lib.func('int bpf_prog_get_fd_by_id(uint32_t id)'),
  bpf_link_create: lib.func('int bpf_link_create(int prog_fd, int target_fd, int type, void *opts)'),
  bpf_link_update: lib.func('int bpf_link_update(int link_fd, int new_prog_fd, void *opts)'),
  bpf_link_detach: lib.func('int bpf_link_detach(int link_fd)'),
  // tc (netlink in the calling thread's network namespace).
  bpf_tc_hook_create: lib.func('int bpf_tc_hook_create(void *hook)'),
  bpf_tc_hook_destroy: lib.func('int bpf_tc_hook_destroy(void *hook)'),
  bpf_tc_attach: lib.func('int bpf_tc_attach(void *hook, void *opts)'),
  bpf_tc_detach: lib.func('int bpf_tc_detach(void *hook, void *opts)'),
  bpf_tc_query: lib.func('int bpf_tc_query(void *hook, void *opts)'),
  libbpf_set_print: lib.func('void *libbpf_set_print(nm_libbpf_print_fn *fn)'),
  // libc.
  close: libc.func('int close(int fd)'),
  open: libc.func('int open(const char *path, int flags)'),
  strerror: libc.func('const char *strerror(int errnum)'),
  socket: libc.func('int socket(int domain, int type, int protocol)'),
  getsockopt: libc.func('int getsockopt(int fd, int level, int name, void *value, uint32_t *len)'),
  vsnprintf: libc.func('int vsnprintf(char *buf, size_t size, const char *fmt, void *args)'),
};

/** errno left by the last native call (for the NULL-returning libbpf functions). */
export function lastErrno(): number {
  return koffi.errno();
}

/** Receives libbpf's own log lines (object parsing, relocation, verifier output on failure). */
export type LibbpfPrintSink = (level: 'warn' | 'info' | 'debug', line: string) => void;

let printSink: LibbpfPrintSink | undefined;
let printInstalled = false;

// libbpf hands a va_list; on x86_64 it is a pointer that vsnprintf can consume. Elsewhere the
// format string alone is reported rather than risking a bad read.
function onLibbpfPrint(level: number, fmt: string, args: unknown): number {
  const sink = printSink;
  if (!sink) return 0;
  let text = fmt;
  if (arch() === 'x64') {
    const buf = Buffer.alloc(8192);
    const n = ffi.vsnprintf(buf, buf.length, fmt, args) as number;
    text = buf.toString('utf8', 0, Math.max(0, Math.min(n, buf.length - 1)));
  }
  const name = level === 0 ? 'warn' : level === 1 ? 'info' : 'debug';
  for (const line of text.replace(/\n$/, '').split('\n')) sink(name, line);
  return 0;
}

/** Routes libbpf's log to `sink` (process-wide, as libbpf_set_print is); undefined silences it. */
export function setLibbpfPrint(sink: LibbpfPrintSink | undefined): void {
  printSink = sink;
  if (!printInstalled) {
    // Registered once for the process lifetime: libbpf may call it from any later call.
    const cb = koffi.register(onLibbpfPrint, koffi.pointer(LibbpfPrintFn));
    ffi.libbpf_set_print(cb);
    printInstalled = true;
  }
}

/** Text of an errno value, from libc. */
export function strerror(errno: number): string {
  return ffi.strerror(Math.abs(errno)) as string;
}

/** Closes a file descriptor we own; errors are ignored (double close is the only cause). */
export function closeFd(fd: number): void {
  if (fd >= 0) ffi.close(fd);
}

const O_RDONLY = 0;
const O_DIRECTORY = 0o200000;
const O_CLOEXEC = 0o2000000;

/** Opens a directory (a cgroup) read-only; returns the fd or -errno. */
export function openDirectory(path: string): number {
  const fd = ffi.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC) as number;
  return fd < 0 ? -lastErrno() : fd;
}

/** Netns cookie of the calling process's network namespace (SO_NETNS_COOKIE, Linux 5.14+). */
export function getNetnsCookie(): bigint {
  const AF_INET = 2;
  const SOCK_DGRAM = 2;
  const SOCK_CLOEXEC = 0o2000000;
  const SOL_SOCKET = 1;
  const SO_NETNS_COOKIE = 71;
  const fd = ffi.socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0) as number;
  if (fd < 0) throw new BpfError('NM_ERR_BPF_LIBBPF', 'socket() for SO_NETNS_COOKIE failed', { errno: lastErrno() });
  try {
    const value = Buffer.alloc(8);
    const len = new Uint32Array([8]);
    const rc = ffi.getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, value, len) as number;
    if (rc < 0) throw new BpfError('NM_ERR_BPF_LIBBPF', 'getsockopt(SO_NETNS_COOKIE) failed: kernel older than 5.14?', { errno: lastErrno() });
    return value.readBigUInt64LE(0);
  } finally {
    closeFd(fd);
  }
}
