/**
 * Generates bpf/codecs.generated.ts from the BTF of the compiled objects, so map layouts are
 * written once (in bpf/include/*.h) and the TypeScript side cannot drift from them.
 * Usage: node bpf/gen-codecs.ts [build/x.bpf.o ...]  (default: every object in bpf/build/).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** One BTF type as `bpftool -j btf dump file` prints it. */
interface BtfType {
  id: number;
  kind: string;
  name: string;
  size?: number;
  type_id?: number;
  nr_elems?: number;
  encoding?: string;
  members?: Array<{ name: string; type_id: number; bits_offset: number; bitfield_size?: number }>;
  values?: Array<{ name: string; val: number }>;
  vars?: Array<{ type_id: number }>;
}

/** Where the generated file lives. */
export const GENERATED_PATH = join(dirname(fileURLToPath(import.meta.url)), 'codecs.generated.ts');

/** The default inputs: every object in bpf/build/, sorted. */
export function listBuiltObjects(): string[] {
  const dir = join(dirname(fileURLToPath(import.meta.url)), 'build');
  return readdirSync(dir)
    .filter((f) => f.endsWith('.bpf.o'))
    .sort()
    .map((f) => join(dir, f));
}

/** Reads an object's BTF through bpftool (unprivileged: it only parses the file). */
export function readBtf(objectPath: string): Map<number, BtfType> {
  const res = spawnSync('bpftool', ['-j', 'btf', 'dump', 'file', objectPath], { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (res.error || res.status !== 0) {
    throw new Error(`bpftool btf dump file ${objectPath} failed: ${res.error?.message ?? res.stderr}; is bpftool installed and the object built (make -C bpf)?`);
  }
  const parsed = JSON.parse(res.stdout) as { types: BtfType[] };
  return new Map(parsed.types.map((t) => [t.id, t]));
}

// BPF_MAP_TYPE_* numbers of uapi/linux/bpf.h that nodemesh uses, and their binding names.
const MAP_TYPES: Record<number, string> = {
  1: 'hash',
  2: 'array',
  5: 'percpu_hash',
  6: 'percpu_array',
  9: 'lru_hash',
  10: 'lru_percpu_hash',
  11: 'lpm_trie',
  15: 'sockmap',
  18: 'sockhash',
  27: 'ringbuf',
};

/** A resolved layout: what the generator emits for one C type. */
type Layout =
  | { kind: 'builtin'; codec: string; ts: string; size: number; cname: string }
  | { kind: 'struct'; cname: string; size: number; fields: Array<{ name: string; offset: number; layout: Layout }> }
  | { kind: 'array'; element: Layout; length: number; size: number; cname: string };

// Typedefs and structs whose names carry meaning (see bpf/include/nm_common.h).
const NAMED: Record<string, Layout> = {
  nm_ip4_t: { kind: 'builtin', codec: 'ip4', ts: 'string', size: 4, cname: 'nm_ip4_t' },
  nm_port_t: { kind: 'builtin', codec: 'port', ts: 'number', size: 2, cname: 'nm_port_t' },
  __be16: { kind: 'builtin', codec: 'be16', ts: 'number', size: 2, cname: '__be16' },
  __be32: { kind: 'builtin', codec: 'be32', ts: 'number', size: 4, cname: '__be32' },
  'struct nm_addr': { kind: 'builtin', codec: 'addr', ts: 'string', size: 16, cname: 'struct nm_addr' },
};

const PAD = /^(pad\d*|_pad\d*|__pad\d*)$/;

function resolveLayout(types: Map<number, BtfType>, id: number, where: string): Layout {
  const t = types.get(id);
  if (!t) throw new Error(`${where}: BTF type ${id} missing`);
  switch (t.kind) {
    case 'TYPEDEF': {
      const named = NAMED[t.name];
      if (named) return named;
      const inner = resolveLayout(types, t.type_id ?? 0, where);
      return inner.kind === 'builtin' ? { ...inner, cname: t.name } : inner;
    }
    case 'CONST':
    case 'VOLATILE':
      return resolveLayout(types, t.type_id ?? 0, where);
    case 'INT':
    case 'ENUM': {
      const signed = t.encoding === 'SIGNED';
      const cname = t.kind === 'ENUM' ? `enum ${t.name}` : t.name;
      if (t.size === 1) return { kind: 'builtin', codec: 'u8', ts: 'number', size: 1, cname };
      if (t.size === 2) return { kind: 'builtin', codec: 'u16', ts: 'number', size: 2, cname };
      if (t.size === 4) return { kind: 'builtin', codec: signed ? 's32' : 'u32', ts: 'number', size: 4, cname };
      if (t.size === 8 && !signed) return { kind: 'builtin', codec: 'u64', ts: 'bigint', size: 8, cname };
      throw new Error(`${where}: integer type ${t.name} of size ${t.size} has no codec`);
    }
    case 'ARRAY': {
      const element = resolveLayout(types, t.type_id ?? 0, where);
      const length = t.nr_elems ?? 0;
      return { kind: 'array', element, length, size: element.size * length, cname: `${element.cname}[${length}]` };
    }
    case 'STRUCT': {
      const cname = `struct ${t.name}`;
      const named = NAMED[cname];
      if (named) return named;
      if (t.name === '(anon)') throw new Error(`${where}: anonymous structs cannot be map keys or values; name the struct`);
      const fields = (t.members ?? []).map((m) => {
        if (m.bitfield_size) throw new Error(`${cname}.${m.name}: bitfields are not allowed in map layouts (user space fills them)`);
        if (m.bits_offset % 8) throw new Error(`${cname}.${m.name}: member not byte aligned`);
        return { name: m.name, offset: m.bits_offset / 8, layout: resolveLayout(types, m.type_id, `${cname}.${m.name}`) };
      });
      return { kind: 'struct', cname, size: t.size ?? 0, fields };
    }
    default:
      throw new Error(`${where}: BTF kind ${t.kind} (${t.name}) has no codec`);
  }
}

/** A map as its BTF definition states it. */
interface MapDef {
  name: string;
  type: string;
  key: Layout;
  value: Layout;
  maxEntries: number;
  flags: number;
  objects: string[];
}

function mapDefs(types: Map<number, BtfType>, object: string): MapDef[] {
  const sec = [...types.values()].find((t) => t.kind === 'DATASEC' && t.name === '.maps');
  if (!sec) return [];
  const out: MapDef[] = [];
  for (const v of sec.vars ?? []) {
    const variable = types.get(v.type_id);
    const def = types.get(variable?.type_id ?? -1);
    if (!variable || !def?.members) continue;
    const member = (n: string) => def.members?.find((m) => m.name === n);
    // __uint(name, N) is a pointer to an int array of N elements; __type(name, T) a pointer to T.
    const uintOf = (n: string): number => {
      const m = member(n);
      if (!m) return 0;
      const arr = types.get(types.get(m.type_id)?.type_id ?? -1);
      return arr?.nr_elems ?? 0;
    };
    const typeOf = (n: string): Layout => {
      const m = member(n);
      const ptr = m && types.get(m.type_id);
      if (!ptr?.type_id) throw new Error(`map ${variable.name}: ${n} needs __type() in its definition`);
      return resolveLayout(types, ptr.type_id, `map ${variable.name} ${n}`);
    };
    const typeNum = uintOf('type');
    const type = MAP_TYPES[typeNum];
    if (!type) throw new Error(`map ${variable.name}: BPF map type ${typeNum} is not known to the generator`);
    if (variable.name.length > 15) throw new Error(`map ${variable.name}: the kernel keeps 15 characters of a map name`);
    out.push({ name: variable.name, type, key: typeOf('key'), value: typeOf('value'), maxEntries: uintOf('max_entries'), flags: uintOf('map_flags'), objects: [object] });
  }
  return out;
}

function enumsOf(types: Map<number, BtfType>): Map<string, Array<{ name: string; val: number }>> {
  const out = new Map<string, Array<{ name: string; val: number }>>();
  for (const t of types.values()) {
    if (t.kind === 'ENUM' && t.name.startsWith('nm_')) out.set(t.name, t.values ?? []);
  }
  return out;
}

function pascal(cname: string): string {
  return cname
    .replace(/^struct /, '')
    .split('_')
    .filter(Boolean)
    .map((p) => p[0]?.toUpperCase() + p.slice(1))
    .join('');
}

function camel(cname: string): string {
  const p = pascal(cname);
  return p[0]?.toLowerCase() + p.slice(1);
}

function sameLayout(a: Layout, b: Layout): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** TypeScript source for the given objects; pure apart from reading their BTF. */
export function generateCodecs(objectPaths: string[]): string {
  const maps = new Map<string, MapDef>();
  const enums = new Map<string, Array<{ name: string; val: number }>>();
  for (const path of objectPaths) {
    const types = readBtf(path);
    const object = basename(path).replace(/\.bpf\.o$/, '');
    for (const def of mapDefs(types, object)) {
      const prev = maps.get(def.name);
      if (!prev) {
        maps.set(def.name, def);
        continue;
      }
      const same = prev.type === def.type && prev.maxEntries === def.maxEntries && prev.flags === def.flags && sameLayout(prev.key, def.key) && sameLayout(prev.value, def.value);
      if (!same) throw new Error(`map ${def.name} is defined differently in ${prev.objects.join(', ')} and ${object}: define it once, in one header`);
      prev.objects.push(object);
    }
    for (const [name, values] of enumsOf(types)) enums.set(name, values);
  }

  // Structs in dependency order, so every codec is declared before a struct that embeds it.
  const structs = new Map<string, Extract<Layout, { kind: 'struct' }>>();
  const visit = (l: Layout): void => {
    if (l.kind === 'array') return visit(l.element);
    if (l.kind !== 'struct' || structs.has(l.cname)) return;
    for (const f of l.fields) visit(f.layout);
    const prev = structs.get(l.cname);
    if (prev && !sameLayout(prev, l)) throw new Error(`${l.cname} differs between objects`);
    structs.set(l.cname, l);
  };
  const sortedMaps = [...maps.values()].sort((a, b) => a.name.localeCompare(b.name));
  for (const m of sortedMaps) {
    visit(m.key);
    visit(m.value);
  }

  const imports = new Set<string>(['type Codec', 'structCodec']);
  const tsType = (l: Layout): string => {
    if (l.kind === 'builtin') return l.ts;
    if (l.kind === 'struct') return pascal(l.cname);
    return `${tsType(l.element)}[]`;
  };
  const codecExpr = (l: Layout): string => {
    if (l.kind === 'builtin') {
      imports.add(l.codec);
      return l.codec;
    }
    if (l.kind === 'struct') return `${camel(l.cname)}Codec`;
    imports.add('arrayCodec');
    return `arrayCodec(${codecExpr(l.element)}, ${l.length})`;
  };

  const body: string[] = [];
  for (const s of structs.values()) {
    const visible = s.fields.filter((f) => !PAD.test(f.name));
    body.push(`/** ${s.cname} (${s.size} bytes). */`);
    body.push(`export interface ${pascal(s.cname)} {`);
    for (const f of visible) body.push(`  ${f.name}: ${tsType(f.layout)}; // ${f.layout.cname} at ${f.offset}`);
    body.push('}', '');
    body.push(`/** Codec of ${s.cname}; padding (${s.fields.filter((f) => PAD.test(f.name)).map((f) => f.name).join(', ') || 'none'}) is written as zero. */`);
    body.push(`export const ${camel(s.cname)}Codec: Codec<${pascal(s.cname)}> = structCodec('${s.cname}', ${s.size}, [`);
    for (const f of visible) body.push(`  ['${f.name}', ${f.offset}, ${codecExpr(f.layout)}],`);
    body.push(']);', '');
  }

  body.push('/** Every map, as its BTF definition states it; keyed by the kernel map name. */');
  body.push('export const mapSpecs = {');
  for (const m of sortedMaps) {
    body.push(`  /** ${m.type} ${m.key.cname} -> ${m.value.cname}; in ${m.objects.join(', ')}. */`);
    body.push(`  ${m.name}: {`);
    body.push(`    name: '${m.name}',`);
    body.push(`    type: '${m.type}',`);
    body.push(`    key: ${codecExpr(m.key)},`);
    body.push(`    value: ${codecExpr(m.value)},`);
    body.push(`    maxEntries: ${m.maxEntries},`);
    body.push(`    flags: ${m.flags},`);
    body.push(`    objects: [${m.objects.map((o) => `'${o}'`).join(', ')}],`);
    body.push(`  } as MapSpec<${tsType(m.key)}, ${tsType(m.value)}>,`);
  }
  body.push('} as const;', '');
  body.push('/** Key and value types of every map; perCpu maps hold one value per possible CPU. */');
  body.push('export interface MapTypes {');
  for (const m of sortedMaps) {
    const perCpu = m.type.includes('percpu');
    body.push(`  ${m.name}: { key: ${tsType(m.key)}; value: ${tsType(m.value)}; perCpu: ${perCpu} };`);
  }
  body.push('}', '');
  body.push('/** Kernel map names. */');
  body.push('export type MapName = keyof MapTypes;', '');

  for (const [name, values] of [...enums.entries()].sort(([a], [b]) => a.localeCompare(b))) {
    body.push(`/** enum ${name}. */`);
    body.push(`export const ${camel(name)} = {`);
    for (const v of values) body.push(`  ${v.name}: ${v.val},`);
    body.push('} as const;', '');
  }

  const builtinOrder = ['type Codec', 'addr', 'arrayCodec', 'be16', 'be32', 'ip4', 'port', 's32', 'structCodec', 'u16', 'u32', 'u64', 'u8'];
  const codecImports = builtinOrder.filter((i) => imports.has(i));
  const header = [
    '// GENERATED by bpf/gen-codecs.ts from the BTF of bpf/build/*.bpf.o. Do not edit:',
    '// change bpf/include/*.h, then run `make -C bpf codecs`. bpf/codecs.test.ts fails on drift.',
    `import { ${codecImports.join(', ')} } from './codec.ts';`,
    "import type { MapSpec } from './map-spec.ts';",
    '',
  ];
  return [...header, ...body].join('\n');
}

/** Regenerates the file; returns true when its content changed. */
export function writeCodecs(objectPaths: string[] = listBuiltObjects()): boolean {
  const source = generateCodecs(objectPaths);
  let old = '';
  try {
    old = readFileSync(GENERATED_PATH, 'utf8');
  } catch {
    old = '';
  }
  if (old === source) return false;
  writeFileSync(GENERATED_PATH, source);
  return true;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2).map((p) => resolve(p));
  const changed = writeCodecs(args.length ? args : listBuiltObjects());
  if (changed) process.stdout.write(`wrote ${GENERATED_PATH}\n`);
}
