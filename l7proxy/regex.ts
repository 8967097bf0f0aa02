/** A linear-time regular expression matcher (Thompson NFA, full match) for route and header patterns from config. */
// Why not RegExp: V8's engine backtracks, so a tenant's `(a+)+$` in an HTTPRoute could pin a core per request
// (Envoy's threat model counts config content as untrusted). This engine runs in O(input × program) and refuses
// what cannot be done in linear time (backreferences, lookaround). The syntax is the RE2 subset people write in
// routes: literals, `.`, classes `[a-z]`/`[^/]`, `\d \w \s` and their negations, groups `(...)`/`(?:...)`,
// alternation, `* + ?` and `{n}`, `{n,}`, `{n,m}`. Patterns always match the whole input (as Envoy's safe_regex);
// a leading `^` and trailing `$` are accepted and mean nothing more.
import { ProxyError } from './errors.ts';

/** Largest compiled program; bounds the per-character cost of a match. */
const MAX_PROGRAM = 4000;
/** Largest bound accepted in `{n,m}`. */
const MAX_REPEAT = 1000;
/** Longest pattern accepted. */
const MAX_PATTERN = 1024;

type Node =
  | { t: 'set'; ranges: number[]; neg: boolean }
  | { t: 'cat'; items: Node[] }
  | { t: 'alt'; items: Node[] }
  | { t: 'rep'; node: Node; min: number; max: number }
  | { t: 'empty' };

type Inst =
  | { op: 'set'; ranges: number[]; neg: boolean; next: number }
  | { op: 'split'; x: number; y: number }
  | { op: 'match' };

/** A compiled pattern; `test` is a full match in time linear in the input. */
export type LinearRegex = { readonly source: string; test(input: string): boolean };

const DIGIT = [0x30, 0x39];
const WORD = [0x30, 0x39, 0x41, 0x5a, 0x5f, 0x5f, 0x61, 0x7a];
const SPACE = [0x09, 0x0d, 0x20, 0x20];

/** Compile `source`, or throw NM_ERR_PROXY_REGEX_UNSUPPORTED saying which construct at which offset. */
export function compileLinearRegex(source: string): LinearRegex {
  if (source.length > MAX_PATTERN) fail(source, 0, `pattern longer than ${MAX_PATTERN} characters`);
  let body = source;
  if (body.startsWith('^')) body = body.slice(1);
  if (body.endsWith('$') && !body.endsWith('\\$')) body = body.slice(0, -1);
  const parser = { src: body, pos: 0, full: source };
  const ast = parseAlt(parser);
  if (parser.pos < body.length) fail(source, parser.pos, `unexpected '${body[parser.pos]}'`);
  const prog: Inst[] = [{ op: 'match' }];
  const start = emit(ast, 0, prog, source);
  return { source, test: (input: string) => run(prog, start, input) };
}

type Parser = { src: string; pos: number; full: string };

function fail(source: string, pos: number, why: string): never {
  throw new ProxyError('NM_ERR_PROXY_REGEX_UNSUPPORTED', `regular expression ${JSON.stringify(source)}: ${why} at offset ${pos} (only linear-time RE2-style syntax is accepted)`);
}

function parseAlt(p: Parser): Node {
  const items: Node[] = [parseCat(p)];
  while (p.src[p.pos] === '|') {
    p.pos++;
    items.push(parseCat(p));
  }
  return items.length === 1 ? items[0]! : { t: 'alt', items };
}

function parseCat(p: Parser): Node {
  const items: Node[] = [];
  while (p.pos < p.src.length && p.src[p.pos] !== '|' && p.src[p.pos] !== ')') {
    let atom = parseAtom(p);
    for (;;) {
      const c = p.src[p.pos];
      let min: number; let max: number;
      if (c === '*') { min = 0; max = Infinity; p.pos++; }
      else if (c === '+') { min = 1; max = Infinity; p.pos++; }
      else if (c === '?') { min = 0; max = 1; p.pos++; }
      else if (c === '{' && /^\{\d+(,\d*)?\}/.test(p.src.slice(p.pos))) {
        const m = /^\{(\d+)(,(\d*))?\}/.exec(p.src.slice(p.pos))!;
        min = Number(m[1]);
        max = m[2] === undefined ? min : m[3] === '' ? Infinity : Number(m[3]);
        if (min > MAX_REPEAT || (max !== Infinity && max > MAX_REPEAT)) fail(p.full, p.pos, `repeat bound above ${MAX_REPEAT}`);
        if (max < min) fail(p.full, p.pos, 'repeat with max below min');
        p.pos += m[0].length;
      } else break;
      if (p.src[p.pos] === '?') p.pos++; // lazy: same language, and we only answer match/no-match
      atom = { t: 'rep', node: atom, min, max };
    }
    items.push(atom);
  }
  if (items.length === 0) return { t: 'empty' };
  return items.length === 1 ? items[0]! : { t: 'cat', items };
}

function parseAtom(p: Parser): Node {
  const c = p.src[p.pos]!;
  if (c === '(') {
    p.pos++;
    if (p.src[p.pos] === '?') {
      if (p.src.startsWith('?:', p.pos)) p.pos += 2;
      else if (/^\?P?<[A-Za-z_][A-Za-z0-9_]*>/.test(p.src.slice(p.pos))) p.pos = p.src.indexOf('>', p.pos) + 1;
      else fail(p.full, p.pos, 'lookaround and inline flags are not supported');
    }
    const inner = parseAlt(p);
    if (p.src[p.pos] !== ')') fail(p.full, p.pos, 'missing )');
    p.pos++;
    return inner;
  }
  if (c === '[') return parseClass(p);
  if (c === '.') { p.pos++; return { t: 'set', ranges: [0x0a, 0x0a], neg: true }; }
  if (c === '\\') return { t: 'set', ...parseEscape(p, false) };
  if (c === '*' || c === '+' || c === '?' || c === '{') fail(p.full, p.pos, `nothing to repeat before '${c}'`);
  if (c === '^' || c === '$') fail(p.full, p.pos, `anchor '${c}' is only accepted at the start or end`);
  p.pos++;
  const code = c.charCodeAt(0);
  return { t: 'set', ranges: [code, code], neg: false };
}

function parseEscape(p: Parser, inClass: boolean): { ranges: number[]; neg: boolean } {
  p.pos++; // the backslash
  const e = p.src[p.pos];
  if (e === undefined) fail(p.full, p.pos, 'trailing backslash');
  p.pos++;
  switch (e) {
    case 'd': return { ranges: DIGIT, neg: false };
    case 'D': if (inClass) fail(p.full, p.pos, '\\D inside a class'); return { ranges: DIGIT, neg: true };
    case 'w': return { ranges: WORD, neg: false };
    case 'W': if (inClass) fail(p.full, p.pos, '\\W inside a class'); return { ranges: WORD, neg: true };
    case 's': return { ranges: SPACE, neg: false };
    case 'S': if (inClass) fail(p.full, p.pos, '\\S inside a class'); return { ranges: SPACE, neg: true };
    case 'n': return { ranges: [0x0a, 0x0a], neg: false };
    case 't': return { ranges: [0x09, 0x09], neg: false };
    case 'r': return { ranges: [0x0d, 0x0d], neg: false };
  }
  if (/[0-9]/.test(e)) fail(p.full, p.pos - 1, 'backreferences are not supported');
  if (/[A-Za-z]/.test(e)) fail(p.full, p.pos - 1, `unknown escape \\${e}`);
  const code = e.charCodeAt(0);
  return { ranges: [code, code], neg: false };
}

function parseClass(p: Parser): Node {
  p.pos++;
  let neg = false;
  if (p.src[p.pos] === '^') { neg = true; p.pos++; }
  const ranges: number[] = [];
  let first = true;
  while (p.pos < p.src.length && (p.src[p.pos] !== ']' || first)) {
    first = false;
    let lo: number;
    if (p.src[p.pos] === '\\') {
      const esc = parseEscape(p, true);
      if (esc.ranges.length > 2 || esc.ranges[0] !== esc.ranges[1]) { ranges.push(...esc.ranges); continue; }
      lo = esc.ranges[0]!;
    } else if (p.src.startsWith('[:', p.pos)) {
      fail(p.full, p.pos, 'POSIX classes are not supported');
    } else {
      lo = p.src.charCodeAt(p.pos++);
    }
    let hi = lo;
    if (p.src[p.pos] === '-' && p.src[p.pos + 1] !== ']' && p.pos + 1 < p.src.length) {
      p.pos++;
      if (p.src[p.pos] === '\\') {
        const esc = parseEscape(p, true);
        if (esc.ranges.length > 2 || esc.ranges[0] !== esc.ranges[1]) fail(p.full, p.pos, 'class escape as a range end');
        hi = esc.ranges[0]!;
      } else hi = p.src.charCodeAt(p.pos++);
      if (hi < lo) fail(p.full, p.pos, 'range out of order');
    }
    ranges.push(lo, hi);
  }
  if (p.src[p.pos] !== ']') fail(p.full, p.pos, 'missing ]');
  p.pos++;
  return { t: 'set', ranges, neg };
}

/** Emit `node` so that it continues at `next`; returns its entry. Built back to front, so no patching lists. */
function emit(node: Node, next: number, prog: Inst[], source: string): number {
  if (prog.length > MAX_PROGRAM) fail(source, 0, `compiled program larger than ${MAX_PROGRAM} steps (reduce repeat bounds)`);
  switch (node.t) {
    case 'empty': return next;
    case 'set': prog.push({ op: 'set', ranges: node.ranges, neg: node.neg, next }); return prog.length - 1;
    case 'cat': {
      let entry = next;
      for (let i = node.items.length - 1; i >= 0; i--) entry = emit(node.items[i]!, entry, prog, source);
      return entry;
    }
    case 'alt': {
      let entry = emit(node.items[node.items.length - 1]!, next, prog, source);
      for (let i = node.items.length - 2; i >= 0; i--) {
        const x = emit(node.items[i]!, next, prog, source);
        prog.push({ op: 'split', x, y: entry });
        entry = prog.length - 1;
      }
      return entry;
    }
    case 'rep': {
      let entry = next;
      if (node.max === Infinity) {
        prog.push({ op: 'split', x: -1, y: next });
        const loop = prog.length - 1;
        (prog[loop] as { x: number }).x = emit(node.node, loop, prog, source);
        entry = loop;
      } else {
        for (let i = 0; i < node.max - node.min; i++) {
          const body = emit(node.node, entry, prog, source);
          prog.push({ op: 'split', x: body, y: next });
          entry = prog.length - 1;
        }
      }
      for (let i = 0; i < node.min; i++) entry = emit(node.node, entry, prog, source);
      return entry;
    }
  }
}

function inSet(ranges: number[], code: number): boolean {
  for (let i = 0; i < ranges.length; i += 2) if (code >= ranges[i]! && code <= ranges[i + 1]!) return true;
  return false;
}

/** Pike-VM simulation without captures: every live state advances once per input character. */
function run(prog: Inst[], start: number, input: string): boolean {
  const mark = new Int32Array(prog.length).fill(-1);
  let gen = 0;
  let clist: number[] = [];
  const stack: number[] = [];
  const add = (list: number[], pc: number): void => {
    stack.push(pc);
    while (stack.length > 0) {
      const at = stack.pop()!;
      if (mark[at] === gen) continue;
      mark[at] = gen;
      const inst = prog[at]!;
      if (inst.op === 'split') { stack.push(inst.y, inst.x); } else list.push(at);
    }
  };
  add(clist, start);
  for (let i = 0; i < input.length && clist.length > 0; i++) {
    const code = input.charCodeAt(i);
    gen++;
    const nlist: number[] = [];
    for (const pc of clist) {
      const inst = prog[pc]!;
      if (inst.op === 'set' && inSet(inst.ranges, code) !== inst.neg) add(nlist, inst.next);
    }
    clist = nlist;
  }
  return clist.some((pc) => prog[pc]!.op === 'match');
}
