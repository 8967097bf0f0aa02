/**
 * A node's datapath: loads the objects, pins every map under <pinDir>/maps, attaches every program
 * through a link pinned under <pinDir>/links, and adopts what an earlier run pinned (same maps with
 * their entries, same links with the new programs swapped in). What stays open afterwards is one
 * owned fd per map and per link; the objects are closed.
 */
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type MapName, mapSpecs } from './codecs.generated.ts';
import { BpfAttachError, BpfError } from './errors.ts';
import { type AttachAction, type PinnedLink, attachCgroupPinned, attachSockmapLegacy, attachSockmapPinned, closeLink, detachPinned, getObjectId, unpin } from './link.ts';
import { type BpfLogger, silentLogger } from './logger.ts';
import { type BpfMap, openPinnedMap } from './map.ts';
import type { MapKey, MapLike, MapSet, MapValue } from './map-like.ts';
import type { MapSpec } from './map-spec.ts';
import { BpfObject, type IncompatibleMapPolicy } from './object.ts';

/** Root of the per-node pin directories: /sys/fs/bpf/nodemesh/<node>/{maps,links}. */
export const DEFAULT_PIN_ROOT = '/sys/fs/bpf/nodemesh';

/** Where `make -C bpf` puts the objects. */
export const DEFAULT_OBJECT_DIR = join(dirname(fileURLToPath(import.meta.url)), 'build');

/** Objects the datapath loads, in order (the first creates and pins the shared maps). */
// pod-ingress and pod-egress are loaded too so their maps are pinned with the others; their tc programs are attached
// by the agent per pod veth.
export const DATAPATH_OBJECTS = ['sock-lb', 'sock-ops', 'sk-msg', 'pod-ingress', 'pod-egress'] as const;

/** Cgroup programs: attached to the node's cgroup2 subtree. */
export const CGROUP_PROGRAMS = [
  { object: 'sock-lb', program: 'nm_sk4_connect' },
  { object: 'sock-lb', program: 'nm_sk4_sendmsg' },
  { object: 'sock-lb', program: 'nm_sk4_recvmsg' },
  { object: 'sock-lb', program: 'nm_sk4_getpeer' },
  { object: 'sock-ops', program: 'nm_sock_ops' },
] as const;

/** Sockmap programs: attached to a sockhash. */
export const SOCKMAP_PROGRAMS = [{ object: 'sk-msg', program: 'nm_sk_msg', map: 'nm_sock4_hash' }] as const;

/** Pin directory of one node. */
export function nodePinDir(node: string, root = DEFAULT_PIN_ROOT): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(node)) {
    throw new BpfError('NM_ERR_BPF_PIN', `node name "${node}" cannot name a bpffs directory (letters, digits, . _ - only)`);
  }
  return join(root, node);
}

/** How to open a node's datapath. */
export interface DatapathOptions {
  /** Per-node pin directory, e.g. nodePinDir('node-a') = /sys/fs/bpf/nodemesh/node-a. */
  pinDir: string;
  /** The node's cgroup2 directory. Never the machine's root cgroup in the sandbox. */
  cgroupPath: string;
  /** Directory holding <object>.bpf.o; default bpf/build. */
  objectDir?: string;
  /** A pinned map whose layout changed: fail (default) or recreate it empty; a function decides per map. */
  onIncompatibleMap?: IncompatibleMapPolicy;
  logger?: BpfLogger;
}

/**
 * Maps that hold nothing but counters: a pinned one of an older layout (e.g. nm_lb_stats, a per-CPU
 * hash before it became a per-CPU array) can be replaced by an empty one without losing state the
 * datapath needs; only the counts restart at zero.
 */
export const COUNTER_MAPS: readonly MapName[] = ['nm_lb_stats', 'nm_dp_count', 'nm_pod_count', 'nm_podeg_count'];

/** onIncompatibleMap policy: replace counter maps (COUNTER_MAPS), fail on any other. */
export const replaceCounterMaps: IncompatibleMapPolicy = (map) => ((COUNTER_MAPS as readonly string[]).includes(map) ? 'replace' : 'fail');

/** One attachment and what opening did to it. */
export interface AttachmentReport {
  program: string;
  target: string;
  pinPath: string;
  action: AttachAction | 'legacy-attached';
}

type AnyMap = BpfMap<unknown, unknown>;

/** Maps of a node opened from their pins (owned fds), by name. */
/** The maps the datapath's objects declare (what Datapath.open pins). */
export function datapathMapNames(): MapName[] {
  const loaded = new Set<string>(DATAPATH_OBJECTS);
  return (Object.keys(mapSpecs) as MapName[]).filter((name) => (mapSpecs[name] as MapSpec<unknown, unknown>).objects.some((o) => loaded.has(o)));
}

export class PinnedMaps implements MapSet {
  readonly pinDir: string;
  readonly #maps = new Map<string, AnyMap>();

  /**
   * Opens the maps of the datapath's objects (DATAPATH_OBJECTS) pinned under <pinDir>/maps; throws when one is
   * missing or differs. A map only some other object declares (one built but not loaded by the agent) is not
   * expected among the pins: requiring it would keep every agent from starting.
   */
  constructor(pinDir: string, names: readonly MapName[] = datapathMapNames()) {
    this.pinDir = pinDir;
    try {
      for (const name of names) {
        const spec = mapSpecs[name] as MapSpec<unknown, unknown>;
        this.#maps.set(name, openPinnedMap(join(pinDir, 'maps', name), spec) as AnyMap);
      }
    } catch (err) {
      this.close();
      throw err;
    }
  }

  map<N extends MapName>(name: N): MapLike<MapKey<N>, MapValue<N>> {
    const m = this.#maps.get(name);
    if (!m) throw new BpfError('NM_ERR_BPF_NOT_FOUND', `map ${name} is not open from ${this.pinDir}`, { object: name });
    return m as unknown as MapLike<MapKey<N>, MapValue<N>>;
  }

  /** fd of an open map (for pinning elsewhere or attaching). */
  fd(name: MapName): number {
    return (this.map(name) as unknown as AnyMap).fd;
  }

  /** Closes every map fd; pins stay. */
  close(): void {
    for (const m of this.#maps.values()) m.close();
    this.#maps.clear();
  }
}

/** A node's loaded, attached datapath. */
export class Datapath implements MapSet {
  readonly pinDir: string;
  readonly cgroupPath: string;
  readonly attachments: readonly AttachmentReport[];
  readonly #maps: PinnedMaps;
  readonly #links: PinnedLink[];

  private constructor(pinDir: string, cgroupPath: string, maps: PinnedMaps, links: PinnedLink[], attachments: AttachmentReport[]) {
    this.pinDir = pinDir;
    this.cgroupPath = cgroupPath;
    this.#maps = maps;
    this.#links = links;
    this.attachments = attachments;
  }

  /**
   * Loads, attaches and pins the datapath of one node, adopting whatever an earlier run pinned:
   * maps keep their entries, links keep their place and get the freshly loaded programs. Safe to
   * call again after a crash at any point: every step is idempotent.
   */
  static open(opts: DatapathOptions): Datapath {
    const logger = opts.logger ?? silentLogger;
    const objectDir = opts.objectDir ?? DEFAULT_OBJECT_DIR;
    const mapDir = join(opts.pinDir, 'maps');
    const linkDir = join(opts.pinDir, 'links');
    if (!existsSync(opts.cgroupPath)) {
      throw new BpfAttachError('NM_ERR_BPF_ATTACH', `cgroup ${opts.cgroupPath} does not exist: create the node's cgroup2 directory first`);
    }
    const started = process.hrtime.bigint();
    const objects = new Map<string, BpfObject>();
    const links: PinnedLink[] = [];
    const attachments: AttachmentReport[] = [];
    let maps: PinnedMaps | undefined;
    try {
      for (const name of DATAPATH_OBJECTS) {
        objects.set(name, BpfObject.load(join(objectDir, `${name}.bpf.o`), { mapPinDir: mapDir, logger, ...(opts.onIncompatibleMap ? { onIncompatibleMap: opts.onIncompatibleMap } : {}) }));
      }
      maps = new PinnedMaps(opts.pinDir);
      for (const { object, program } of CGROUP_PROGRAMS) {
        const prog = objects.get(object)?.program(program);
        if (!prog) throw new BpfError('NM_ERR_BPF_NOT_FOUND', `object ${object} not loaded`);
        const link = attachCgroupPinned(prog, opts.cgroupPath, join(linkDir, program));
        links.push(link);
        attachments.push({ program, target: opts.cgroupPath, pinPath: link.pinPath, action: link.action });
      }
      for (const { object, program, map } of SOCKMAP_PROGRAMS) {
        const prog = objects.get(object)?.program(program);
        if (!prog) throw new BpfError('NM_ERR_BPF_NOT_FOUND', `object ${object} not loaded`);
        const mapFd = maps.fd(map);
        const pinPath = join(linkDir, program);
        try {
          const link = attachSockmapPinned(prog, mapFd, getObjectId(mapFd), map, pinPath);
          links.push(link);
          attachments.push({ program, target: map, pinPath, action: link.action });
        } catch (err) {
          // Sockmap links exist from Linux 6.10; before that the pinned map itself holds the program.
          if (!(err instanceof BpfAttachError) || err.errno !== 22) throw err;
          attachSockmapLegacy(prog, mapFd, map);
          attachments.push({ program, target: map, pinPath: join(mapDir, map), action: 'legacy-attached' });
        }
      }
    } catch (err) {
      for (const l of links) closeLink(l);
      maps?.close();
      throw err;
    } finally {
      // Links hold the programs and pins hold the maps: the objects are no longer needed.
      for (const o of objects.values()) o.close();
    }
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    logger.info('datapath open', {
      pinDir: opts.pinDir,
      cgroup: opts.cgroupPath,
      ms: Math.round(ms * 10) / 10,
      attachments: attachments.map((a) => `${a.program}:${a.action}`).join(' '),
    });
    return new Datapath(opts.pinDir, opts.cgroupPath, maps, links, attachments);
  }

  map<N extends MapName>(name: N): MapLike<MapKey<N>, MapValue<N>> {
    return this.#maps.map(name);
  }

  /** Releases our fds. The datapath keeps working: pins hold the links and maps. */
  close(): void {
    for (const l of this.#links) closeLink(l);
    this.#maps.close();
  }

  /**
   * Tears a node's datapath down for good: detaches every pinned link and unpins every map, then
   * removes the pin directory. For node removal and tests; an agent restart must not call it.
   */
  static destroy(pinDir: string): void {
    const linkDir = join(pinDir, 'links');
    if (existsSync(linkDir)) for (const f of readdirSync(linkDir)) detachPinned(join(linkDir, f));
    const mapDir = join(pinDir, 'maps');
    if (existsSync(mapDir)) for (const f of readdirSync(mapDir)) unpin(join(mapDir, f));
    rmSync(pinDir, { recursive: true, force: true });
  }
}
