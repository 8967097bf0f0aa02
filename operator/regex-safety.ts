/**
 * Refuses regular expressions a backtracking engine could take super-linear time on. The proxy itself matches
 * with its own linear-time engine (l7proxy/regex.ts), and validate.ts also compiles every pattern with it; this
 * stricter check stays so a policy accepted today also works with any backtracking engine (e.g. a gateway or a
 * tool that evaluates the same HTTPRoute with RegExp), not only ours. Accepted: an RE2-like subset - literals, escapes, classes, ".", anchors, groups,
 * alternation, quantifiers. Refused: backreferences, lookaround, inline flags, nested variable quantifiers
 * ((a+)+, (ab?)*), repeated groups whose alternatives can start alike or match empty ((a|a)*, (a|ab)+, (a?)*),
 * and three or more unbounded loops that can all eat the same character (worst case O(n^3) and up).
 * What remains has a worst case of O(n^2) for one full match (patterns are anchored at both ends), linear in
 * the common case. The check itself is linear in the pattern length (loops are capped at 16, so the triple
 * check is constant work).
 */

/** Character set as sorted, disjoint, inclusive code point ranges. */
type CharSet = Array<[number, number]>;

type Node =
  | { t: 'chars'; set: CharSet }
  | { t: 'anchor' }
  | { t: 'group'; alts: Node[][] }
  | { t: 'repeat'; node: Node; min: number; max: number; text: string };

const MAX_CODE = 0x10ffff;
const MAX_LOOPS = 16;
const MAX_BOUND = 1000;
const ANY: CharSet = [[0, MAX_CODE]];
const DIGIT: CharSet = [[0x30, 0x39]];
const WORD: CharSet = [[0x30, 0x39], [0x41, 0x5a], [0x5f, 0x5f], [0x61, 0x7a]];
const SPACE: CharSet = [[0x09, 0x0d], [0x20, 0x20], [0xa0, 0xa0], [0x1680, 0x1680], [0x2000, 0x200a], [0x2028, 0x2029], [0x202f, 0x202f], [0x205f, 0x205f], [0x3000, 0x3000], [0xfeff, 0xfeff]];

function normalize(set: CharSet): CharSet {
  const s = [...set].sort((a, b) => a[0] - b[0]);
  const out: CharSet = [];
  for (const r of s) {
    const last = out[out.length - 1];
    if (last && r[0] <= last[1] + 1) last[1] = Math.max(last[1], r[1]);
    else out.push([r[0], r[1]]);
  }
  return out;
}

function complement(set: CharSet): CharSet {
  const out: CharSet = [];
  let next = 0;
  for (const [lo, hi] of normalize(set)) {
    if (lo > next) out.push([next, lo - 1]);
    next = hi + 1;
  }
  if (next <= MAX_CODE) out.push([next, MAX_CODE]);
  return out;
}

function overlaps(a: CharSet, b: CharSet): boolean {
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    const [alo, ahi] = a[i]!;
    const [blo, bhi] = b[j]!;
    if (ahi < blo) i++;
    else if (bhi < alo) j++;
    else return true;
  }
  return false;
}

/** Thrown inside the parser; turned into the returned message. */
class Refusal extends Error {}

/** Recursive-descent parser for the accepted subset. */
class Parser {
  private pos = 0;
  private readonly src: string;

  constructor(src: string) {
    this.src = src;
  }

  parse(): Node {
    const node = this.alternation();
    if (this.pos < this.src.length) throw new Refusal(`unbalanced ")" at offset ${this.pos}`);
    return node;
  }

  private alternation(): Node {
    const alts: Node[][] = [this.sequence()];
    while (this.src[this.pos] === '|') {
      this.pos++;
      alts.push(this.sequence());
    }
    return { t: 'group', alts };
  }

  private sequence(): Node[] {
    const items: Node[] = [];
    while (this.pos < this.src.length && this.src[this.pos] !== '|' && this.src[this.pos] !== ')') {
      const start = this.pos;
      const atom = this.atom();
      items.push(this.quantified(atom, start));
    }
    return items;
  }

  private quantified(atom: Node, start: number): Node {
    const c = this.src[this.pos];
    let min: number;
    let max: number;
    if (c === '*') { min = 0; max = Infinity; this.pos++; }
    else if (c === '+') { min = 1; max = Infinity; this.pos++; }
    else if (c === '?') { min = 0; max = 1; this.pos++; }
    else if (c === '{') {
      const m = /^\{(\d+)(,(\d*))?\}/.exec(this.src.slice(this.pos));
      if (!m) return atom; // a literal "{", as JavaScript reads it
      min = Number(m[1]);
      max = m[2] === undefined ? min : m[3] === '' ? Infinity : Number(m[3]);
      if (min > MAX_BOUND || (max !== Infinity && max > MAX_BOUND)) throw new Refusal(`repetition count above ${MAX_BOUND} in ${m[0]}`);
      if (max < min) throw new Refusal(`repetition ${m[0]} has its maximum below its minimum`);
      this.pos += m[0].length;
    } else return atom;
    if (atom.t === 'anchor') throw new Refusal(`a quantifier after an anchor at offset ${start}`);
    if (this.src[this.pos] === '?') this.pos++; // lazy: same cost as greedy
    if ('*+?{'.includes(this.src[this.pos] ?? '') && this.src[this.pos] !== undefined) {
      if (this.src[this.pos] !== '{' || /^\{\d+(,\d*)?\}/.test(this.src.slice(this.pos))) {
        throw new Refusal(`a quantifier directly after a quantifier at offset ${this.pos}`);
      }
    }
    return { t: 'repeat', node: atom, min, max, text: this.src.slice(start, this.pos) };
  }

  private atom(): Node {
    const c = this.src[this.pos]!;
    switch (c) {
      case '(': return this.group();
      case '[': return { t: 'chars', set: this.charClass() };
      case '.': this.pos++; return { t: 'chars', set: ANY };
      case '^': case '$': this.pos++; return { t: 'anchor' };
      case '\\': return this.escape(false) as Node;
      case '*': case '+': case '?':
        throw new Refusal(`nothing to repeat before "${c}" at offset ${this.pos}`);
      default: {
        const cp = this.src.codePointAt(this.pos)!;
        this.pos += cp > 0xffff ? 2 : 1;
        return { t: 'chars', set: [[cp, cp]] };
      }
    }
  }

  private group(): Node {
    this.pos++; // (
    if (this.src[this.pos] === '?') {
      const rest = this.src.slice(this.pos, this.pos + 3);
      if (rest.startsWith('?:')) this.pos += 2;
      else if (rest.startsWith('?=') || rest.startsWith('?!')) throw new Refusal('lookahead (?= or (?! is not supported (no linear-time engine can run it)');
      else if (rest === '?<=' || rest === '?<!') throw new Refusal('lookbehind (?<= or (?<! is not supported (no linear-time engine can run it)');
      else if (rest.startsWith('?<')) {
        const m = /^\?<([A-Za-z_][A-Za-z0-9_]*)>/.exec(this.src.slice(this.pos));
        if (!m) throw new Refusal(`malformed named group at offset ${this.pos - 1}`);
        this.pos += m[0].length;
      } else throw new Refusal(`group syntax "(${rest}" is not supported (inline flags and other extensions are refused)`);
    }
    const inner = this.alternation();
    if (this.src[this.pos] !== ')') throw new Refusal(`missing ")" for the group opened before offset ${this.pos}`);
    this.pos++;
    return inner;
  }

  /** Parses an escape; inside a class it returns the set only. */
  private escape(inClass: boolean): Node | CharSet {
    this.pos++; // backslash
    const c = this.src[this.pos];
    if (c === undefined) throw new Refusal('the pattern ends with a lone backslash');
    this.pos++;
    const wrap = (set: CharSet): Node | CharSet => (inClass ? set : { t: 'chars', set });
    switch (c) {
      case 'd': return wrap(DIGIT);
      case 'D': return wrap(complement(DIGIT));
      case 'w': return wrap(WORD);
      case 'W': return wrap(complement(WORD));
      case 's': return wrap(SPACE);
      case 'S': return wrap(complement(SPACE));
      case 'b': case 'B':
        if (inClass) return [[8, 8]];
        return { t: 'anchor' };
      case 'k': throw new Refusal('a named backreference (\\k<...>) is not supported');
      case 'n': return wrap([[10, 10]]);
      case 'r': return wrap([[13, 13]]);
      case 't': return wrap([[9, 9]]);
      case 'f': return wrap([[12, 12]]);
      case 'v': return wrap([[11, 11]]);
      case '0': return wrap([[0, 0]]);
      case 'x': {
        const m = /^[0-9a-fA-F]{2}/.exec(this.src.slice(this.pos));
        if (!m) throw new Refusal(`malformed \\x escape at offset ${this.pos - 2}`);
        this.pos += 2;
        const cp = parseInt(m[0], 16);
        return wrap([[cp, cp]]);
      }
      case 'u': {
        const m = /^[0-9a-fA-F]{4}/.exec(this.src.slice(this.pos));
        if (!m) throw new Refusal(`malformed \\u escape at offset ${this.pos - 2}`);
        this.pos += 4;
        const cp = parseInt(m[0], 16);
        return wrap([[cp, cp]]);
      }
      case 'p': case 'P': case 'c':
        throw new Refusal(`escape \\${c} is not supported; spell the characters out`);
      default:
        if (c >= '1' && c <= '9') throw new Refusal(`a backreference (\\${c}) is not supported (no linear-time engine can run it)`);
        if (/[A-Za-z]/.test(c)) throw new Refusal(`unknown escape \\${c}`);
        return wrap([[c.codePointAt(0)!, c.codePointAt(0)!]]);
    }
  }

  private charClass(): CharSet {
    this.pos++; // [
    let negate = false;
    if (this.src[this.pos] === '^') { negate = true; this.pos++; }
    const set: CharSet = [];
    let first = true;
    while (true) {
      const c = this.src[this.pos];
      if (c === undefined) throw new Refusal('a character class "[" is never closed');
      if (c === ']' && !first) { this.pos++; break; }
      if (c === ']' && first) { this.pos++; break; } // "[]" matches nothing in JavaScript
      first = false;
      const lo = this.classAtom();
      if (this.src[this.pos] === '-' && this.src[this.pos + 1] !== ']' && this.src[this.pos + 1] !== undefined) {
        this.pos++;
        const hi = this.classAtom();
        if (lo.length !== 1 || hi.length !== 1 || lo[0]![0] !== lo[0]![1] || hi[0]![0] !== hi[0]![1]) {
          throw new Refusal(`a range in a character class must join two single characters (offset ${this.pos})`);
        }
        if (hi[0]![0] < lo[0]![0]) throw new Refusal(`range out of order in character class (offset ${this.pos})`);
        set.push([lo[0]![0], hi[0]![0]]);
      } else set.push(...lo);
    }
    const norm = normalize(set);
    return negate ? complement(norm) : norm;
  }

  private classAtom(): CharSet {
    if (this.src[this.pos] === '\\') return this.escape(true) as CharSet;
    const cp = this.src.codePointAt(this.pos)!;
    this.pos += cp > 0xffff ? 2 : 1;
    return [[cp, cp]];
  }
}

function nullable(n: Node): boolean {
  switch (n.t) {
    case 'chars': return false;
    case 'anchor': return true;
    case 'group': return n.alts.some((seq) => seq.every(nullable));
    case 'repeat': return n.min === 0 || nullable(n.node);
  }
}

function firstSet(n: Node): CharSet {
  switch (n.t) {
    case 'chars': return n.set;
    case 'anchor': return [];
    case 'group': return normalize(n.alts.flatMap(seqFirst));
    case 'repeat': return firstSet(n.node);
  }
}

function seqFirst(seq: Node[]): CharSet {
  const out: CharSet = [];
  for (const item of seq) {
    out.push(...firstSet(item));
    if (!nullable(item)) break;
  }
  return normalize(out);
}

/** Every character a node can consume anywhere (for loop overlap). */
function allChars(n: Node): CharSet {
  switch (n.t) {
    case 'chars': return n.set;
    case 'anchor': return [];
    case 'group': return normalize(n.alts.flat().flatMap(allChars));
    case 'repeat': return allChars(n.node);
  }
}

function variableRepeatInside(n: Node): string | undefined {
  switch (n.t) {
    case 'chars': case 'anchor': return undefined;
    case 'group':
      for (const item of n.alts.flat()) {
        const found = variableRepeatInside(item);
        if (found) return found;
      }
      return undefined;
    case 'repeat':
      if (n.min !== n.max) return n.text;
      return variableRepeatInside(n.node);
  }
}

function ambiguousAlternation(n: Node): boolean {
  switch (n.t) {
    case 'chars': case 'anchor': return false;
    case 'repeat': return ambiguousAlternation(n.node);
    case 'group': {
      if (n.alts.length > 1) {
        if (n.alts.some((seq) => seq.every(nullable))) return true;
        const firsts = n.alts.map(seqFirst);
        for (let i = 0; i < firsts.length; i++) {
          for (let j = i + 1; j < firsts.length; j++) if (overlaps(firsts[i]!, firsts[j]!)) return true;
        }
      }
      return n.alts.flat().some(ambiguousAlternation);
    }
  }
}

/**
 * Why a pattern is refused, or undefined when it is safe. `pattern` is the user's text; it is also compiled
 * with RegExp (as the proxy will, anchored: ^(?:pattern)$) so syntax JavaScript rejects is refused too.
 */
export function checkRegexSafety(pattern: string): string | undefined {
  if (pattern.length > 1024) return `the pattern is ${pattern.length} characters; at most 1024 are allowed`;
  let tree: Node;
  try {
    tree = new Parser(pattern).parse();
  } catch (err) {
    if (err instanceof Refusal) return err.message;
    throw err;
  }
  try {
    new RegExp(`^(?:${pattern})$`);
  } catch (err) {
    return `JavaScript cannot compile it: ${(err as Error).message}`;
  }
  const loops: Array<{ text: string; chars: CharSet }> = [];
  let refusal: string | undefined;
  const visit = (n: Node): void => {
    if (refusal) return;
    if (n.t === 'group') { n.alts.flat().forEach(visit); return; }
    if (n.t !== 'repeat') return;
    if (n.max > 1) {
      const inner = variableRepeatInside(n.node);
      if (inner) {
        refusal = `nested quantifier: ${JSON.stringify(inner)} inside ${JSON.stringify(n.text)} can backtrack exponentially; repeat a fixed-length piece or use a negated class such as [^/]+`;
        return;
      }
      if (n.max === Infinity && nullable(n.node)) {
        refusal = `${JSON.stringify(n.text)} repeats something that can match the empty string`;
        return;
      }
      if (ambiguousAlternation(n.node)) {
        refusal = `${JSON.stringify(n.text)} repeats alternatives that can start with the same character (or match empty), which backtracks exponentially; factor the common prefix out, e.g. a(b|c) instead of (ab|ac)`;
        return;
      }
    }
    if (n.max === Infinity) loops.push({ text: n.text, chars: allChars(n.node) });
    visit(n.node);
  };
  visit(tree);
  if (refusal) return refusal;
  if (loops.length > MAX_LOOPS) return `${loops.length} unbounded quantifiers; at most ${MAX_LOOPS} are allowed`;
  for (let i = 0; i < loops.length; i++) {
    for (let j = i + 1; j < loops.length; j++) {
      if (!overlaps(loops[i]!.chars, loops[j]!.chars)) continue;
      for (let k = j + 1; k < loops.length; k++) {
        if (overlaps(loops[i]!.chars, loops[k]!.chars) && overlaps(loops[j]!.chars, loops[k]!.chars)) {
          return `${JSON.stringify(loops[i]!.text)}, ${JSON.stringify(loops[j]!.text)} and ${JSON.stringify(loops[k]!.text)} are unbounded and can all match the same characters (polynomial backtracking); narrow them with negated classes such as [^/]*`;
        }
      }
    }
  }
  return undefined;
}
