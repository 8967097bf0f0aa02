/** A BPF object file opened and loaded through libbpf, with its maps pinned (and adopted) by name. */
import { existsSync, mkdirSync, unlinkSync } from 'node:fs';
import { basename, join } from 'node:path';
import { BpfError, BpfLoadError } from './errors.ts';
import { type MapPtr, type ObjectPtr, type ProgramPtr, closeFd, ffi, lastErrno, setLibbpfPrint } from './libbpf.ts';
import { type BpfLogger, silentLogger } from './logger.ts';
import { type BpfMap, getMapInfo, wrapMap } from './map.ts';
import type { MapSpec } from './map-spec.ts';

/** How to open an object. */
export interface OpenObjectOptions {
  /**
   * Pin every map of the object as <mapPinDir>/<map name>. A map already pinned there is reused,
   * entries included (that is how a restarted agent adopts the datapath and how objects share maps).
   */
  mapPinDir?: string;
  /**
   * A pinned map whose type, sizes, limits or flags differ from the object's: fail (default) or
   * unpin and recreate it empty; a function decides per map (e.g. replace only maps of counters).
   */
  onIncompatibleMap?: IncompatibleMapPolicy;
  logger?: BpfLogger;
}

/** What to do with a pinned map of another layout, for every map or per map name. */
export type IncompatibleMapPolicy = 'fail' | 'replace' | ((map: string) => 'fail' | 'replace');

/** A program of a loaded object. */
export interface BpfProgram {
  readonly name: string;
  /** Owned by the object: valid until the object is closed. */
  readonly fd: number;
  /** enum bpf_attach_type libbpf derived from the SEC() name. */
  readonly attachType: number;
  readonly sectionName: string;
}

const LOG_TAIL_LINES = 80;

/** A loaded object. Close it when done; pinned maps and links outlive it. */
export class BpfObject {
  readonly name: string;
  readonly path: string;
  #ptr: ObjectPtr | null;
  readonly #programs = new Map<string, BpfProgram>();
  readonly #maps = new Map<string, { ptr: MapPtr; fd: number }>();

  private constructor(path: string, ptr: ObjectPtr) {
    this.path = path;
    this.name = basename(path).replace(/\.bpf\.o$/, '');
    this.#ptr = ptr;
  }

  /** Opens, pins/adopts maps, and loads (verifies) every program of the object at `path`. */
  static load(path: string, opts: OpenObjectOptions = {}): BpfObject {
    const logger = opts.logger ?? silentLogger;
    const log: string[] = [];
    setLibbpfPrint((level, line) => {
      log.push(line);
      if (log.length > 4 * LOG_TAIL_LINES) log.splice(0, log.length - LOG_TAIL_LINES);
      logger.debug(`libbpf: ${line}`, { level, object: path });
    });
    const objectName = basename(path);
    try {
      const ptr = ffi.bpf_object__open_file(path, null) as ObjectPtr | null;
      if (!ptr) {
        const errno = lastErrno();
        throw new BpfError('NM_ERR_BPF_OPEN', `cannot open BPF object ${path}: ${existsSync(path) ? 'not a valid BPF ELF object' : 'file missing, run make -C bpf'}`, { errno, object: objectName });
      }
      const obj = new BpfObject(path, ptr);
      try {
        obj.#preparePins(opts, logger);
        const rc = ffi.bpf_object__load(ptr) as number;
        if (rc < 0) {
          throw new BpfLoadError(`cannot load BPF object ${objectName} (verifier rejected a program, or a pinned map differs)`, {
            errno: -rc,
            object: objectName,
            log: log.slice(-LOG_TAIL_LINES).join('\n'),
          });
        }
        obj.#index();
        logger.debug('bpf object loaded', { object: objectName, programs: [...obj.#programs.keys()], maps: [...obj.#maps.keys()] });
        return obj;
      } catch (err) {
        obj.close();
        throw err;
      }
    } finally {
      setLibbpfPrint(undefined);
    }
  }

  #preparePins(opts: OpenObjectOptions, logger: BpfLogger): void {
    if (!opts.mapPinDir) return;
    mkdirSync(opts.mapPinDir, { recursive: true, mode: 0o700 });
    for (let m = ffi.bpf_object__next_map(this.#ptr, null) as MapPtr | null; m; m = ffi.bpf_object__next_map(this.#ptr, m) as MapPtr | null) {
      const name = ffi.bpf_map__name(m) as string;
      const pin = join(opts.mapPinDir, name);
      if (existsSync(pin)) this.#checkPinned(m, name, pin, policyFor(opts.onIncompatibleMap, name), logger);
      const rc = ffi.bpf_map__set_pin_path(m, pin) as number;
      if (rc < 0) throw new BpfError('NM_ERR_BPF_PIN', `map ${name}: cannot set pin path ${pin}`, { errno: -rc, object: name });
    }
  }

  // libbpf would refuse an incompatible pin with a bare EINVAL; say which map and what differs.
  #checkPinned(m: MapPtr, name: string, pin: string, policy: 'fail' | 'replace', logger: BpfLogger): void {
    const fd = ffi.bpf_obj_get(pin) as number;
    if (fd < 0) throw new BpfError('NM_ERR_BPF_PIN', `map ${name}: ${pin} exists but cannot be opened`, { errno: -fd, object: name });
    try {
      const info = getMapInfo(fd, name);
      const want = {
        type: ffi.bpf_map__type(m) as number,
        keySize: ffi.bpf_map__key_size(m) as number,
        valueSize: ffi.bpf_map__value_size(m) as number,
        maxEntries: ffi.bpf_map__max_entries(m) as number,
        flags: ffi.bpf_map__map_flags(m) as number,
      };
      const diffs = (Object.keys(want) as Array<keyof typeof want>).filter((k) => info[k] !== want[k]).map((k) => `${k} pinned ${info[k]} vs object ${want[k]}`);
      if (diffs.length === 0) return;
      if (policy === 'replace') {
        logger.warn('pinned map has another layout: unpinning it, the new map starts empty', { map: name, pin, diffs });
        unlinkSync(pin);
        return;
      }
      throw new BpfError('NM_ERR_BPF_MAP_INCOMPATIBLE', `map ${name} pinned at ${pin} differs from ${this.name}.bpf.o (${diffs.join(', ')}): a layout change needs a migration, or onIncompatibleMap: 'replace'`, { object: name });
    } finally {
      closeFd(fd);
    }
  }

  #index(): void {
    for (let p = ffi.bpf_object__next_program(this.#ptr, null) as ProgramPtr | null; p; p = ffi.bpf_object__next_program(this.#ptr, p) as ProgramPtr | null) {
      const name = ffi.bpf_program__name(p) as string;
      this.#programs.set(name, {
        name,
        fd: ffi.bpf_program__fd(p) as number,
        attachType: ffi.bpf_program__expected_attach_type(p) as number,
        sectionName: ffi.bpf_program__section_name(p) as string,
      });
    }
    for (let m = ffi.bpf_object__next_map(this.#ptr, null) as MapPtr | null; m; m = ffi.bpf_object__next_map(this.#ptr, m) as MapPtr | null) {
      this.#maps.set(ffi.bpf_map__name(m) as string, { ptr: m, fd: ffi.bpf_map__fd(m) as number });
    }
  }

  #alive(): void {
    if (!this.#ptr) throw new BpfError('NM_ERR_BPF_CLOSED', `BPF object ${this.name} is closed`, { object: this.name });
  }

  /** Programs of the object, by name. */
  programs(): BpfProgram[] {
    this.#alive();
    return [...this.#programs.values()];
  }

  /** One program by its C function name. */
  program(name: string): BpfProgram {
    this.#alive();
    const p = this.#programs.get(name);
    if (!p) throw new BpfError('NM_ERR_BPF_NOT_FOUND', `program ${name} not found in ${this.name}.bpf.o (has: ${[...this.#programs.keys()].join(', ')})`, { object: this.name });
    return p;
  }

  /** Names of the object's maps. */
  mapNames(): string[] {
    return [...this.#maps.keys()];
  }

  /** fd of a map of the object (owned by the object). */
  mapFd(name: string): number {
    this.#alive();
    const m = this.#maps.get(name);
    if (!m) throw new BpfError('NM_ERR_BPF_NOT_FOUND', `map ${name} not found in ${this.name}.bpf.o`, { object: this.name });
    return m.fd;
  }

  /** Typed view of one of the object's maps; valid until the object is closed. */
  map<K, V>(spec: MapSpec<K, V>): BpfMap<K, V> | BpfMap<K, V[]> {
    return wrapMap(this.mapFd(spec.name), spec, false);
  }

  /** Frees the object, its program and map fds. Pinned maps and links stay in the kernel. */
  close(): void {
    if (this.#ptr) ffi.bpf_object__close(this.#ptr);
    this.#ptr = null;
  }
}

function policyFor(p: IncompatibleMapPolicy | undefined, map: string): 'fail' | 'replace' {
  return typeof p === 'function' ? p(map) : (p ?? 'fail');
}
