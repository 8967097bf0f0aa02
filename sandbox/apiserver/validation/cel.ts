/**
 * A small CEL evaluator for the subset CRD `x-kubernetes-validations` rules commonly use: field access,
 * has(), size(), comparisons and arithmetic, && || ! and ?:, `in`, string functions (matches, startsWith,
 * endsWith, contains, ...), list macros (all, exists, exists_one, map, filter), int()/string()/double(),
 * duration() and timestamp(). `compileCel` rejects anything outside the subset at CRD registration, so an
 * unsupported rule is reported and skipped instead of failing at request time.
 */

import { deepEqual, isObject } from '../json.ts';

/** A CEL duration, kept in nanoseconds as a number (exact to ~104 days, plenty for timeouts). */
export class CelDuration {
  readonly nanos: number;
  constructor(nanos: number) {
    this.nanos = nanos;
  }
}

/** A CEL timestamp (milliseconds since the epoch). */
export class CelTimestamp {
  readonly millis: number;
  constructor(millis: number) {
    this.millis = millis;
  }
}

/** A CEL runtime value; JSON values plus durations and timestamps. */
export type CelValue = null | boolean | number | string | CelValue[] | { [k: string]: CelValue } | CelDuration | CelTimestamp;

/** A parse or compile failure: the rule is outside the supported subset or malformed. */
export class CelCompileError extends Error {}
/** A failure while evaluating a rule against a value (no such key, wrong type). */
export class CelEvalError extends Error {}

type Node =
  | { k: 'lit'; v: CelValue }
  | { k: 'ident'; name: string }
  | { k: 'select'; target: Node; field: string }
  | { k: 'has'; target: Node; field: string }
  | { k: 'index'; target: Node; index: Node }
  | { k: 'call'; fn: string; target: Node | undefined; args: Node[] }
  | { k: 'list'; items: Node[] }
  | { k: 'map'; entries: [Node, Node][] }
  | { k: 'unary'; op: '!' | '-'; arg: Node }
  | { k: 'binary'; op: string; left: Node; right: Node }
  | { k: 'cond'; c: Node; t: Node; f: Node }
  | { k: 'macro'; name: string; target: Node; v: string; pred: Node; transform: Node | undefined };

// ---------------------------------------------------------------- lexer

type Tok = { t: 'num'; v: number; dbl: boolean } | { t: 'str'; v: string } | { t: 'id'; v: string } | { t: 'op'; v: string } | { t: 'eof' };

const OPS = ['&&', '||', '==', '!=', '<=', '>=', '<', '>', '!', '?', ':', '+', '-', '*', '/', '%', '(', ')', '[', ']', '{', '}', '.', ','];

function lex(src: string): Tok[] {
  const out: Tok[] = [];
  let i = 0;
  while (i < src.length) {
    const c = src[i]!;
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    if (c === '/' && src[i + 1] === '/') {
      while (i < src.length && src[i] !== '\n') i++;
      continue;
    }
    if (/[0-9]/.test(c) || (c === '.' && /[0-9]/.test(src[i + 1] ?? ''))) {
      const m = src.slice(i).match(/^(0x[0-9a-fA-F]+|(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?)[uU]?/)!;
      const text = m[0].replace(/[uU]$/, '');
      const dbl = /[.eE]/.test(text) && !text.startsWith('0x');
      out.push({ t: 'num', v: Number(text), dbl });
      i += m[0].length;
      continue;
    }
    if (/[A-Za-z_]/.test(c)) {
      let j = i + 1;
      while (j < src.length && /[A-Za-z0-9_]/.test(src[j]!)) j++;
      const word = src.slice(i, j);
      // Raw and bytes string prefixes: r'...', b'...'
      if ((word === 'r' || word === 'R' || word === 'b' || word === 'B') && (src[j] === '"' || src[j] === "'")) {
        const [s, end] = readString(src, j, word.toLowerCase() === 'r');
        out.push({ t: 'str', v: s });
        i = end;
        continue;
      }
      out.push({ t: 'id', v: word });
      i = j;
      continue;
    }
    if (c === '"' || c === "'") {
      const [s, end] = readString(src, i, false);
      out.push({ t: 'str', v: s });
      i = end;
      continue;
    }
    const op = OPS.find((o) => src.startsWith(o, i));
    if (!op) throw new CelCompileError(`Syntax error: token recognition error at: '${c}'`);
    out.push({ t: 'op', v: op });
    i += op.length;
  }
  out.push({ t: 'eof' });
  return out;
}

function readString(src: string, start: number, raw: boolean): [string, number] {
  const q = src[start]!;
  const triple = src.startsWith(q.repeat(3), start);
  const close = triple ? q.repeat(3) : q;
  let i = start + close.length;
  let s = '';
  while (i < src.length) {
    if (src.startsWith(close, i)) return [s, i + close.length];
    const c = src[i]!;
    if (c === '\\' && !raw) {
      const n = src[i + 1];
      const map: Record<string, string> = { n: '\n', t: '\t', r: '\r', '\\': '\\', '"': '"', "'": "'", '`': '`', '?': '?', a: '\x07', b: '\b', f: '\f', v: '\v' };
      if (n !== undefined && map[n] !== undefined) {
        s += map[n];
        i += 2;
        continue;
      }
      if (n === 'u') {
        s += String.fromCharCode(parseInt(src.slice(i + 2, i + 6), 16));
        i += 6;
        continue;
      }
      throw new CelCompileError(`Syntax error: invalid escape sequence \\${n ?? ''}`);
    }
    if (!triple && c === '\n') break;
    s += c;
    i++;
  }
  throw new CelCompileError('Syntax error: unterminated string literal');
}

// ---------------------------------------------------------------- parser

const MACROS = new Set(['all', 'exists', 'exists_one', 'map', 'filter']);
const GLOBAL_FUNCS = new Set(['size', 'int', 'uint', 'double', 'string', 'bool', 'duration', 'timestamp', 'dyn', 'matches', 'type']);
const MEMBER_FUNCS = new Set([
  'size',
  'matches',
  'startsWith',
  'endsWith',
  'contains',
  'lowerAscii',
  'upperAscii',
  'trim',
  'split',
  'join',
  'indexOf',
  'lastIndexOf',
  'replace',
  'substring',
  'charAt',
  'isSorted',
  'sum',
  'min',
  'max',
  'getSeconds',
  'getMilliseconds',
  'getMinutes',
  'getHours',
]);

class Parser {
  private pos = 0;
  private readonly toks: Tok[];
  private readonly vars: Set<string>;
  constructor(toks: Tok[], vars: Set<string>) {
    this.toks = toks;
    this.vars = vars;
  }
  private peek(): Tok {
    return this.toks[this.pos]!;
  }
  private isOp(v: string): boolean {
    const t = this.peek();
    return t.t === 'op' && t.v === v;
  }
  private expect(v: string): void {
    if (!this.isOp(v)) throw new CelCompileError(`Syntax error: expected '${v}'`);
    this.pos++;
  }
  parseAll(): Node {
    const n = this.expr();
    if (this.peek().t !== 'eof') throw new CelCompileError('Syntax error: unexpected trailing input');
    return n;
  }
  private expr(): Node {
    const c = this.or();
    if (this.isOp('?')) {
      this.pos++;
      const t = this.or();
      this.expect(':');
      const f = this.expr();
      return { k: 'cond', c, t, f };
    }
    return c;
  }
  private or(): Node {
    let l = this.and();
    while (this.isOp('||')) {
      this.pos++;
      l = { k: 'binary', op: '||', left: l, right: this.and() };
    }
    return l;
  }
  private and(): Node {
    let l = this.rel();
    while (this.isOp('&&')) {
      this.pos++;
      l = { k: 'binary', op: '&&', left: l, right: this.rel() };
    }
    return l;
  }
  private rel(): Node {
    let l = this.add();
    for (;;) {
      const t = this.peek();
      if (t.t === 'op' && ['<', '<=', '>', '>=', '==', '!='].includes(t.v)) {
        this.pos++;
        l = { k: 'binary', op: t.v, left: l, right: this.add() };
      } else if (t.t === 'id' && t.v === 'in') {
        this.pos++;
        l = { k: 'binary', op: 'in', left: l, right: this.add() };
      } else {
        return l;
      }
    }
  }
  private add(): Node {
    let l = this.mul();
    while (this.isOp('+') || this.isOp('-')) {
      const op = (this.toks[this.pos++] as { v: string }).v;
      l = { k: 'binary', op, left: l, right: this.mul() };
    }
    return l;
  }
  private mul(): Node {
    let l = this.unary();
    while (this.isOp('*') || this.isOp('/') || this.isOp('%')) {
      const op = (this.toks[this.pos++] as { v: string }).v;
      l = { k: 'binary', op, left: l, right: this.unary() };
    }
    return l;
  }
  private unary(): Node {
    if (this.isOp('!')) {
      this.pos++;
      return { k: 'unary', op: '!', arg: this.unary() };
    }
    if (this.isOp('-')) {
      this.pos++;
      const t = this.peek();
      if (t.t === 'num') {
        this.pos++;
        return this.member({ k: 'lit', v: -t.v });
      }
      return { k: 'unary', op: '-', arg: this.unary() };
    }
    return this.member(this.primary());
  }
  private args(): Node[] {
    const out: Node[] = [];
    this.expect('(');
    if (!this.isOp(')')) {
      out.push(this.expr());
      while (this.isOp(',')) {
        this.pos++;
        out.push(this.expr());
      }
    }
    this.expect(')');
    return out;
  }
  private member(n: Node): Node {
    for (;;) {
      if (this.isOp('.')) {
        this.pos++;
        const id = this.peek();
        if (id.t !== 'id') throw new CelCompileError('Syntax error: expected field name after "."');
        this.pos++;
        if (this.isOp('(')) {
          if (MACROS.has(id.v)) {
            this.expect('(');
            const v = this.peek();
            if (v.t !== 'id') throw new CelCompileError(`${id.v}() macro needs a variable name`);
            this.pos++;
            this.expect(',');
            this.vars.add(v.v);
            const first = this.expr();
            let second: Node | undefined;
            if (this.isOp(',')) {
              this.pos++;
              second = this.expr();
            }
            this.expect(')');
            if (id.v === 'map') {
              n = second ? { k: 'macro', name: 'map', target: n, v: v.v, pred: first, transform: second } : { k: 'macro', name: 'map', target: n, v: v.v, pred: { k: 'lit', v: true }, transform: first };
            } else {
              if (second) throw new CelCompileError(`${id.v}() takes two arguments`);
              n = { k: 'macro', name: id.v, target: n, v: v.v, pred: first, transform: undefined };
            }
            continue;
          }
          if (!MEMBER_FUNCS.has(id.v)) throw new CelCompileError(`undeclared reference to '${id.v}' (in container '')`);
          n = { k: 'call', fn: id.v, target: n, args: this.args() };
        } else {
          n = { k: 'select', target: n, field: id.v };
        }
      } else if (this.isOp('[')) {
        this.pos++;
        const index = this.expr();
        this.expect(']');
        n = { k: 'index', target: n, index };
      } else {
        return n;
      }
    }
  }
  private primary(): Node {
    const t = this.peek();
    this.pos++;
    if (t.t === 'num') return { k: 'lit', v: t.v };
    if (t.t === 'str') return { k: 'lit', v: t.v };
    if (t.t === 'id') {
      if (t.v === 'true') return { k: 'lit', v: true };
      if (t.v === 'false') return { k: 'lit', v: false };
      if (t.v === 'null') return { k: 'lit', v: null };
      if (this.isOp('(')) {
        if (t.v === 'has') {
          const a = this.args();
          const sel = a[0];
          if (a.length !== 1 || !sel || sel.k !== 'select') throw new CelCompileError('invalid argument to has() macro');
          return { k: 'has', target: sel.target, field: sel.field };
        }
        if (!GLOBAL_FUNCS.has(t.v)) throw new CelCompileError(`undeclared reference to '${t.v}' (in container '')`);
        return { k: 'call', fn: t.v, target: undefined, args: this.args() };
      }
      if (!this.vars.has(t.v)) throw new CelCompileError(`undeclared reference to '${t.v}' (in container '')`);
      return { k: 'ident', name: t.v };
    }
    if (t.t === 'op' && t.v === '(') {
      const e = this.expr();
      this.expect(')');
      return e;
    }
    if (t.t === 'op' && t.v === '[') {
      const items: Node[] = [];
      if (!this.isOp(']')) {
        items.push(this.expr());
        while (this.isOp(',')) {
          this.pos++;
          if (this.isOp(']')) break;
          items.push(this.expr());
        }
      }
      this.expect(']');
      return { k: 'list', items };
    }
    if (t.t === 'op' && t.v === '{') {
      const entries: [Node, Node][] = [];
      if (!this.isOp('}')) {
        for (;;) {
          const key = this.expr();
          this.expect(':');
          entries.push([key, this.expr()]);
          if (!this.isOp(',')) break;
          this.pos++;
          if (this.isOp('}')) break;
        }
      }
      this.expect('}');
      return { k: 'map', entries };
    }
    throw new CelCompileError('Syntax error: mismatched input');
  }
}

/** A compiled rule: evaluate it with variables (`self`, and `oldSelf` for transition rules). */
export interface CelProgram {
  source: string;
  /** True when the rule mentions oldSelf (a transition rule: evaluated on update only). */
  usesOldSelf: boolean;
  evaluate(vars: Record<string, CelValue>): CelValue;
}

/** Parses a rule; throws CelCompileError when it is malformed or uses something outside the subset. */
export function compileCel(source: string): CelProgram {
  const vars = new Set(['self', 'oldSelf']);
  const ast = new Parser(lex(source), vars).parseAll();
  return {
    source,
    usesOldSelf: /\boldSelf\b/.test(source),
    evaluate: (v) => evalNode(ast, v),
  };
}

// ---------------------------------------------------------------- evaluator

const DURATION_UNITS: Record<string, number> = { h: 3600e9, m: 60e9, s: 1e9, ms: 1e6, us: 1e3, µs: 1e3, ns: 1 };

/** Parses a Go/CEL duration string (`1h30m`, `250ms`, `1.5s`). */
export function parseDuration(s: string): CelDuration {
  const m = s.match(/^([+-])?((\d+(\.\d+)?|\.\d+)(h|ms|m|s|us|µs|ns))+$/);
  if (!m) throw new CelEvalError(`invalid duration format: ${JSON.stringify(s)}`);
  let total = 0;
  for (const part of s.replace(/^[+-]/, '').matchAll(/(\d+(?:\.\d+)?|\.\d+)(h|ms|m|s|us|µs|ns)/g)) {
    total += Number(part[1]) * DURATION_UNITS[part[2]!]!;
  }
  return new CelDuration(m[1] === '-' ? -total : total);
}

function typeName(v: CelValue): string {
  if (v === null) return 'null_type';
  if (typeof v === 'boolean') return 'bool';
  if (typeof v === 'number') return Number.isInteger(v) ? 'int' : 'double';
  if (typeof v === 'string') return 'string';
  if (Array.isArray(v)) return 'list';
  if (v instanceof CelDuration) return 'google.protobuf.Duration';
  if (v instanceof CelTimestamp) return 'google.protobuf.Timestamp';
  return 'map';
}

function noOverload(fn: string, ...args: CelValue[]): CelEvalError {
  return new CelEvalError(`no such overload: ${fn}(${args.map(typeName).join(', ')})`);
}

function celEquals(a: CelValue, b: CelValue): boolean {
  if (a instanceof CelDuration && b instanceof CelDuration) return a.nanos === b.nanos;
  if (a instanceof CelTimestamp && b instanceof CelTimestamp) return a.millis === b.millis;
  return deepEqual(a, b);
}

function compare(op: string, a: CelValue, b: CelValue): boolean {
  let x: number | string;
  let y: number | string;
  if (typeof a === 'number' && typeof b === 'number') [x, y] = [a, b];
  else if (typeof a === 'string' && typeof b === 'string') [x, y] = [a, b];
  else if (a instanceof CelDuration && b instanceof CelDuration) [x, y] = [a.nanos, b.nanos];
  else if (a instanceof CelTimestamp && b instanceof CelTimestamp) [x, y] = [a.millis, b.millis];
  else if (typeof a === 'boolean' && typeof b === 'boolean') [x, y] = [Number(a), Number(b)];
  else throw noOverload(op, a, b);
  switch (op) {
    case '<':
      return x < y;
    case '<=':
      return x <= y;
    case '>':
      return x > y;
    default:
      return x >= y;
  }
}

function asBool(v: CelValue, what: string): boolean {
  if (typeof v !== 'boolean') throw new CelEvalError(`no matching overload for '${what}' applied to '(${typeName(v)})'`);
  return v;
}

function isMap(v: CelValue): v is { [k: string]: CelValue } {
  return isObject(v) && !(v instanceof CelDuration) && !(v instanceof CelTimestamp);
}

function str(v: CelValue, fn: string): string {
  if (typeof v !== 'string') throw noOverload(fn, v);
  return v;
}

function callFn(fn: string, target: CelValue | undefined, args: CelValue[]): CelValue {
  const recv = target;
  const a0 = args[0];
  switch (fn) {
    case 'size': {
      const v = recv !== undefined ? recv : a0!;
      if (typeof v === 'string') return [...v].length;
      if (Array.isArray(v)) return v.length;
      if (isMap(v)) return Object.keys(v).length;
      throw noOverload('size', v);
    }
    case 'matches': {
      const s = recv !== undefined ? str(recv, fn) : str(a0!, fn);
      const re = recv !== undefined ? str(a0!, fn) : str(args[1]!, fn);
      try {
        return new RegExp(re, 'u').test(s);
      } catch {
        throw new CelEvalError(`invalid regular expression: ${re}`);
      }
    }
    case 'startsWith':
      return str(recv!, fn).startsWith(str(a0!, fn));
    case 'endsWith':
      return str(recv!, fn).endsWith(str(a0!, fn));
    case 'contains':
      return str(recv!, fn).includes(str(a0!, fn));
    case 'lowerAscii':
      return str(recv!, fn).replace(/[A-Z]/g, (c) => c.toLowerCase());
    case 'upperAscii':
      return str(recv!, fn).replace(/[a-z]/g, (c) => c.toUpperCase());
    case 'trim':
      return str(recv!, fn).trim();
    case 'split':
      return str(recv!, fn).split(str(a0!, fn));
    case 'join': {
      if (!Array.isArray(recv)) throw noOverload(fn, recv ?? null);
      return recv.map((x) => str(x, fn)).join(a0 === undefined ? '' : str(a0, fn));
    }
    case 'indexOf':
    case 'lastIndexOf': {
      if (Array.isArray(recv)) {
        const idx = recv.findIndex((x) => celEquals(x, a0!));
        return fn === 'indexOf' ? idx : recv.length - 1 - [...recv].reverse().findIndex((x) => celEquals(x, a0!));
      }
      return fn === 'indexOf' ? str(recv!, fn).indexOf(str(a0!, fn)) : str(recv!, fn).lastIndexOf(str(a0!, fn));
    }
    case 'replace': {
      const s = str(recv!, fn);
      return s.split(str(a0!, fn)).join(str(args[1]!, fn));
    }
    case 'substring': {
      const s = [...str(recv!, fn)];
      const start = a0 as number;
      const end = args[1] === undefined ? s.length : (args[1] as number);
      if (start < 0 || end > s.length || start > end) throw new CelEvalError('index out of range');
      return s.slice(start, end).join('');
    }
    case 'charAt':
      return [...str(recv!, fn)][a0 as number] ?? '';
    case 'isSorted': {
      if (!Array.isArray(recv)) throw noOverload(fn, recv ?? null);
      for (let i = 1; i < recv.length; i++) if (compare('<', recv[i]!, recv[i - 1]!)) return false;
      return true;
    }
    case 'sum':
    case 'min':
    case 'max': {
      if (!Array.isArray(recv)) throw noOverload(fn, recv ?? null);
      if (fn === 'sum') return recv.reduce<number>((s, x) => s + (x as number), 0);
      if (recv.length === 0) throw new CelEvalError(`${fn} called on empty list`);
      return recv.reduce((m, x) => (compare(fn === 'min' ? '<' : '>', x, m) ? x : m));
    }
    case 'getSeconds':
    case 'getMilliseconds':
    case 'getMinutes':
    case 'getHours': {
      if (!(recv instanceof CelDuration)) throw noOverload(fn, recv ?? null);
      const div = { getSeconds: 1e9, getMilliseconds: 1e6, getMinutes: 60e9, getHours: 3600e9 }[fn];
      return Math.trunc(recv.nanos / div);
    }
    case 'int':
    case 'uint': {
      const v = a0!;
      if (typeof v === 'number') return Math.trunc(v);
      if (typeof v === 'string' && /^[+-]?\d+$/.test(v)) return Number(v);
      if (v instanceof CelTimestamp) return Math.floor(v.millis / 1000);
      if (v instanceof CelDuration) return v.nanos;
      throw noOverload(fn, v);
    }
    case 'double': {
      const v = a0!;
      if (typeof v === 'number') return v;
      if (typeof v === 'string' && v.trim() !== '' && !Number.isNaN(Number(v))) return Number(v);
      throw noOverload(fn, v);
    }
    case 'string': {
      const v = a0!;
      if (typeof v === 'string') return v;
      if (typeof v === 'number' || typeof v === 'boolean') return String(v);
      if (v instanceof CelDuration) return `${v.nanos / 1e9}s`;
      if (v instanceof CelTimestamp) return new Date(v.millis).toISOString();
      throw noOverload(fn, v);
    }
    case 'bool': {
      const v = a0!;
      if (typeof v === 'boolean') return v;
      if (v === 'true') return true;
      if (v === 'false') return false;
      throw noOverload(fn, v);
    }
    case 'duration': {
      if (a0 instanceof CelDuration) return a0;
      return parseDuration(str(a0!, fn));
    }
    case 'timestamp': {
      if (a0 instanceof CelTimestamp) return a0;
      const ms = Date.parse(str(a0!, fn));
      if (Number.isNaN(ms)) throw new CelEvalError(`invalid timestamp ${JSON.stringify(a0)}`);
      return new CelTimestamp(ms);
    }
    case 'dyn':
      return a0!;
    case 'type':
      return typeName(a0!);
  }
  throw new CelEvalError(`unsupported function ${fn}`);
}

function arith(op: string, a: CelValue, b: CelValue): CelValue {
  if (typeof a === 'number' && typeof b === 'number') {
    switch (op) {
      case '+':
        return a + b;
      case '-':
        return a - b;
      case '*':
        return a * b;
      case '/':
        if (b === 0) throw new CelEvalError('division by zero');
        return Number.isInteger(a) && Number.isInteger(b) ? Math.trunc(a / b) : a / b;
      case '%':
        if (b === 0) throw new CelEvalError('modulus by zero');
        return a % b;
    }
  }
  if (op === '+') {
    if (typeof a === 'string' && typeof b === 'string') return a + b;
    if (Array.isArray(a) && Array.isArray(b)) return [...a, ...b];
    if (a instanceof CelDuration && b instanceof CelDuration) return new CelDuration(a.nanos + b.nanos);
    if (a instanceof CelTimestamp && b instanceof CelDuration) return new CelTimestamp(a.millis + b.nanos / 1e6);
  }
  if (op === '-') {
    if (a instanceof CelDuration && b instanceof CelDuration) return new CelDuration(a.nanos - b.nanos);
    if (a instanceof CelTimestamp && b instanceof CelTimestamp) return new CelDuration((a.millis - b.millis) * 1e6);
    if (a instanceof CelTimestamp && b instanceof CelDuration) return new CelTimestamp(a.millis - b.nanos / 1e6);
  }
  throw noOverload(op, a, b);
}

function evalNode(n: Node, vars: Record<string, CelValue>): CelValue {
  switch (n.k) {
    case 'lit':
      return n.v;
    case 'ident': {
      if (!(n.name in vars)) throw new CelEvalError(`undeclared reference to '${n.name}'`);
      return vars[n.name]!;
    }
    case 'select': {
      const t = evalNode(n.target, vars);
      if (!isMap(t)) throw new CelEvalError(`no such key: ${n.field}`);
      if (!Object.prototype.hasOwnProperty.call(t, n.field)) throw new CelEvalError(`no such key: ${n.field}`);
      return t[n.field]!;
    }
    case 'has': {
      const t = evalNode(n.target, vars);
      if (!isMap(t)) throw new CelEvalError(`invalid type for field selection in has()`);
      return Object.prototype.hasOwnProperty.call(t, n.field) && t[n.field] !== null;
    }
    case 'index': {
      const t = evalNode(n.target, vars);
      const i = evalNode(n.index, vars);
      if (Array.isArray(t)) {
        if (typeof i !== 'number' || !Number.isInteger(i) || i < 0 || i >= t.length) throw new CelEvalError(`index out of bounds: ${String(i)}`);
        return t[i]!;
      }
      if (isMap(t)) {
        const key = String(i);
        if (!Object.prototype.hasOwnProperty.call(t, key)) throw new CelEvalError(`no such key: ${key}`);
        return t[key]!;
      }
      throw noOverload('_[_]', t, i);
    }
    case 'call': {
      const target = n.target ? evalNode(n.target, vars) : undefined;
      return callFn(
        n.fn,
        target,
        n.args.map((a) => evalNode(a, vars)),
      );
    }
    case 'list':
      return n.items.map((x) => evalNode(x, vars));
    case 'map': {
      const out: { [k: string]: CelValue } = {};
      for (const [k, v] of n.entries) out[String(evalNode(k, vars))] = evalNode(v, vars);
      return out;
    }
    case 'unary': {
      const v = evalNode(n.arg, vars);
      if (n.op === '!') return !asBool(v, '!_');
      if (typeof v === 'number') return -v;
      if (v instanceof CelDuration) return new CelDuration(-v.nanos);
      throw noOverload('-_', v);
    }
    case 'cond':
      return asBool(evalNode(n.c, vars), '_?_:_') ? evalNode(n.t, vars) : evalNode(n.f, vars);
    case 'binary': {
      if (n.op === '&&' || n.op === '||') {
        // CEL's logical operators are commutative over errors: `false && error` is false either way round.
        const short = n.op === '||';
        let leftErr: unknown;
        try {
          if (asBool(evalNode(n.left, vars), n.op) === short) return short;
        } catch (e) {
          leftErr = e;
        }
        const r = asBool(evalNode(n.right, vars), n.op);
        if (r === short) return short;
        if (leftErr) throw leftErr;
        return !short;
      }
      const a = evalNode(n.left, vars);
      const b = evalNode(n.right, vars);
      switch (n.op) {
        case '==':
          return celEquals(a, b);
        case '!=':
          return !celEquals(a, b);
        case '<':
        case '<=':
        case '>':
        case '>=':
          return compare(n.op, a, b);
        case 'in':
          if (Array.isArray(b)) return b.some((x) => celEquals(x, a));
          if (isMap(b)) return Object.prototype.hasOwnProperty.call(b, String(a));
          throw noOverload('@in', a, b);
        default:
          return arith(n.op, a, b);
      }
    }
    case 'macro': {
      const t = evalNode(n.target, vars);
      const elems: CelValue[] = Array.isArray(t) ? t : isMap(t) ? Object.keys(t) : [];
      if (!Array.isArray(t) && !isMap(t)) throw noOverload(n.name, t);
      const test = (x: CelValue): boolean => asBool(evalNode(n.pred, { ...vars, [n.v]: x }), n.name);
      switch (n.name) {
        case 'all': {
          let err: unknown;
          for (const x of elems) {
            try {
              if (!test(x)) return false;
            } catch (e) {
              err ??= e;
            }
          }
          if (err) throw err;
          return true;
        }
        case 'exists': {
          let err: unknown;
          for (const x of elems) {
            try {
              if (test(x)) return true;
            } catch (e) {
              err ??= e;
            }
          }
          if (err) throw err;
          return false;
        }
        case 'exists_one':
          return elems.filter(test).length === 1;
        case 'filter':
          return elems.filter(test);
        case 'map':
          return elems.filter(test).map((x) => evalNode(n.transform!, { ...vars, [n.v]: x }));
      }
      throw new CelEvalError(`unsupported macro ${n.name}`);
    }
  }
}
