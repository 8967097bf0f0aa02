/**
 * Finds what a component's code asks of the API server through the operator's own REST client (KubeRest,
 * operator/kube-rest.ts): every call of its request methods, with the HTTP method and the path resolved
 * statically from the TypeScript AST (literals, templates, same-file consts, small helper functions, the CRD
 * resource constants), mapped to the (group, resource[/subresource], verb) an RBAC rule must grant. A call
 * whose path or method cannot be resolved is reported, never guessed: deploy/manifests.test.ts fails on it.
 */
import { relative } from 'node:path';
import ts from 'typescript';

/** One thing a component needs: `verb` on `group/resource[/sub]`, with the object's name when known. */
export interface ApiNeed {
  key: string;
  verb: string;
  /** Object name if the path names one and it resolved to a constant; undefined for collections or unknown names. */
  name?: string;
  /** The path names an object, but which one is decided at run time. */
  dynamicName?: boolean;
  /** The request is inside one namespace (a Role there can grant it); otherwise only a ClusterRole can. */
  namespaced: boolean;
  /** `file:line` of the call. */
  at: string;
}

/** A call the scan could not resolve. `what` is the call's text (shortened). */
export interface UnresolvedCall {
  at: string;
  what: string;
  why: string;
}

/** KubeRest methods that send requests, and the HTTP method each implies (undefined: the first argument says). */
const REST_METHODS: Record<string, { method?: string; pathArg: number }> = {
  json: { pathArg: 1 },
  raw: { pathArg: 1 },
  getOrUndefined: { method: 'GET', pathArg: 0 },
  list: { method: 'GET', pathArg: 0 },
  watch: { method: 'WATCH', pathArg: 0 },
};
/** Classes that list and watch a collection given a KubeRest and a spec `{ path }` (argument 1). */
const INFORMER_CLASSES = new Set(['ResilientInformer']);
/** Paths outside /api and /apis every authenticated user may GET (system:public-info-viewer, system:discovery). */
const OPEN_PATHS = new Set(['/version', '/healthz', '/livez', '/readyz']);
const REST_CLASS = 'KubeRest';
/** Marks a part of a resolved string only known at run time. */
const DYN = '\u0000';

class Branch {
  readonly key: ts.Node;
  readonly n: number;
  constructor(key: ts.Node, n: number) {
    this.key = key;
    this.n = n;
  }
}

type Val = { s: string } | { obj: ts.ObjectLiteralExpression } | { fn: ts.ArrowFunction | ts.FunctionExpression | ts.FunctionDeclaration };
type Scope = Map<ts.Node, Val>;

/** Resolves expressions to strings; a choice (which call site, which table entry) is a Branch the caller enumerates. */
class Resolver {
  readonly #program: ts.Program;
  readonly #checker: ts.TypeChecker;
  readonly #calls = new Map<ts.Symbol, ts.CallExpression[] | undefined>();
  #choices = new Map<ts.Node, number>();
  constructor(program: ts.Program) {
    this.#program = program;
    this.#checker = program.getTypeChecker();
  }

  /** Every value `node` can take (one per combination of choices). */
  all(node: ts.Expression): string[] {
    const out = new Set<string>();
    const pending: Map<ts.Node, number>[] = [new Map()];
    for (let guard = 0; pending.length && guard < 1000; guard++) {
      this.#choices = pending.pop()!;
      try {
        out.add(this.str(this.val(node, new Map(), 0)));
      } catch (e) {
        if (!(e instanceof Branch)) throw e;
        for (let i = 0; i < e.n; i++) pending.push(new Map([...this.#choices, [e.key, i]]));
      }
    }
    if (pending.length) throw new Error(`${node.getSourceFile().fileName}: ${node.getText()}: more than 1000 combinations of values; simplify the path`);
    return [...out];
  }

  #pick(key: ts.Node, n: number): number {
    const i = this.#choices.get(key);
    if (i !== undefined) return i;
    if (n === 1) return 0;
    throw new Branch(key, n);
  }

  str(v: Val): string {
    return 's' in v ? v.s : `${DYN}object${DYN}`;
  }

  val(node: ts.Expression, scope: Scope, depth: number): Val {
    const dyn = (): Val => ({ s: `${DYN}${node.getText()}${DYN}` });
    if (depth > 20) return dyn();
    if (ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node)) return { s: node.text };
    if (ts.isTemplateExpression(node)) {
      let s = node.head.text;
      for (const span of node.templateSpans) s += this.str(this.val(span.expression, scope, depth + 1)) + span.literal.text;
      return { s };
    }
    if (ts.isParenthesizedExpression(node) || ts.isAsExpression(node) || ts.isNonNullExpression(node) || ts.isSatisfiesExpression(node)) return this.val(node.expression, scope, depth + 1);
    if (ts.isBinaryExpression(node) && node.operatorToken.kind === ts.SyntaxKind.PlusToken) {
      return { s: this.str(this.val(node.left, scope, depth + 1)) + this.str(this.val(node.right, scope, depth + 1)) };
    }
    if (ts.isConditionalExpression(node)) return this.val(this.#pick(node, 2) === 0 ? node.whenTrue : node.whenFalse, scope, depth + 1);
    if (ts.isObjectLiteralExpression(node)) return { obj: node };
    if (ts.isArrowFunction(node) || ts.isFunctionExpression(node)) return { fn: node };
    if (ts.isIdentifier(node)) return this.#identifier(node, scope, depth) ?? dyn();
    if (ts.isPropertyAccessExpression(node)) {
      const o = this.val(node.expression, scope, depth + 1);
      return ('obj' in o ? this.#property(o.obj, node.name.text, scope, depth) : undefined) ?? dyn();
    }
    if (ts.isElementAccessExpression(node)) {
      const o = this.val(node.expression, scope, depth + 1);
      if (!('obj' in o)) return dyn();
      const k = this.val(node.argumentExpression, scope, depth + 1);
      if ('s' in k && !k.s.includes(DYN)) return this.#property(o.obj, k.s, scope, depth) ?? dyn();
      // Unknown key: every entry of the table is possible.
      const props = o.obj.properties.filter((p) => ts.isPropertyAssignment(p) || ts.isShorthandPropertyAssignment(p));
      if (!props.length) return dyn();
      const p = props[this.#pick(node, props.length)]!;
      return this.val(ts.isPropertyAssignment(p) ? p.initializer : p.name, scope, depth + 1);
    }
    if (ts.isCallExpression(node)) {
      const callee = node.expression;
      if (ts.isIdentifier(callee) && (callee.text === 'encodeURIComponent' || callee.text === 'String') && node.arguments[0]) {
        return this.val(node.arguments[0], scope, depth + 1);
      }
      const f = this.val(callee, scope, depth + 1);
      if (!('fn' in f)) return dyn();
      const inner: Scope = new Map(scope);
      f.fn.parameters.forEach((p, i) => {
        const a = node.arguments[i];
        if (a) inner.set(p, this.val(a, scope, depth + 1));
        else if (p.initializer) inner.set(p, this.val(p.initializer, scope, depth + 1));
      });
      const body = f.fn.body;
      if (!body) return dyn();
      if (!ts.isBlock(body)) return this.val(body, inner, depth + 1);
      const returns: ts.Expression[] = [];
      const visit = (n: ts.Node): void => {
        if (ts.isReturnStatement(n) && n.expression) returns.push(n.expression);
        else if (!ts.isFunctionLike(n)) n.forEachChild(visit);
      };
      body.forEachChild(visit);
      if (!returns.length) return dyn();
      return this.val(returns[this.#pick(body, returns.length)]!, inner, depth + 1);
    }
    return dyn();
  }

  #property(obj: ts.ObjectLiteralExpression, name: string, scope: Scope, depth: number): Val | undefined {
    for (const p of obj.properties) {
      if (!p.name || (!ts.isIdentifier(p.name) && !ts.isStringLiteral(p.name)) || p.name.text !== name) continue;
      if (ts.isPropertyAssignment(p)) return this.val(p.initializer, scope, depth + 1);
      if (ts.isShorthandPropertyAssignment(p)) return this.val(p.name, scope, depth + 1);
    }
    return undefined;
  }

  #identifier(node: ts.Identifier, scope: Scope, depth: number): Val | undefined {
    let sym = ts.isShorthandPropertyAssignment(node.parent) && node.parent.name === node
      ? this.#checker.getShorthandAssignmentValueSymbol(node.parent)
      : this.#checker.getSymbolAtLocation(node);
    if (sym && sym.flags & ts.SymbolFlags.Alias) sym = this.#checker.getAliasedSymbol(sym);
    const decl = sym?.valueDeclaration ?? sym?.declarations?.[0];
    if (!decl) return undefined;
    const bound = scope.get(decl);
    if (bound) return bound;
    if (ts.isVariableDeclaration(decl) && decl.initializer && ts.getCombinedNodeFlags(decl) & ts.NodeFlags.Const) return this.val(decl.initializer, scope, depth + 1);
    if (ts.isBindingElement(decl) && ts.isObjectBindingPattern(decl.parent) && ts.isVariableDeclaration(decl.parent.parent) && decl.parent.parent.initializer) {
      const o = this.val(decl.parent.parent.initializer, scope, depth + 1);
      const prop = decl.propertyName && ts.isIdentifier(decl.propertyName) ? decl.propertyName.text : decl.name.getText();
      return 'obj' in o ? this.#property(o.obj, prop, scope, depth) : undefined;
    }
    if (ts.isFunctionDeclaration(decl)) return { fn: decl };
    if (ts.isParameter(decl)) return this.#fromCallers(decl, depth);
    return undefined;
  }

  /**
   * A parameter of a helper that is only ever called directly (a const arrow function or a function
   * declaration, callers in any scanned file): one branch per call site. Passed around as a value: unknown.
   */
  #fromCallers(param: ts.ParameterDeclaration, depth: number): Val | undefined {
    const fn = param.parent;
    const name = ts.isFunctionDeclaration(fn) ? fn.name
      : (ts.isArrowFunction(fn) || ts.isFunctionExpression(fn)) && ts.isVariableDeclaration(fn.parent) && ts.isIdentifier(fn.parent.name) ? fn.parent.name
        : undefined;
    const fnSym = name && this.#checker.getSymbolAtLocation(name);
    if (!name || !fnSym) return undefined;
    const calls = this.#callsOf(fnSym, name);
    if (!calls?.length) return undefined;
    const call = calls[this.#pick(param, calls.length)]!;
    const arg = call.arguments[(fn as ts.SignatureDeclarationBase).parameters.indexOf(param)] ?? param.initializer;
    return arg ? this.val(arg, new Map(), depth + 1) : undefined;
  }

  /** Direct calls of a function across the program, or undefined when it is also used as a value. */
  #callsOf(fnSym: ts.Symbol, declName: ts.Identifier): ts.CallExpression[] | undefined {
    if (this.#calls.has(fnSym)) return this.#calls.get(fnSym);
    const calls: ts.CallExpression[] = [];
    let escapes = false;
    // Only identifiers spelled like the function (or a renaming import of it) can be it: a cheap filter first.
    const names = new Set([declName.text]);
    const renames = (n: ts.Node): void => {
      if (ts.isImportSpecifier(n) && n.propertyName?.text === declName.text) names.add(n.name.text);
      n.forEachChild(renames);
    };
    const visit = (n: ts.Node): void => {
      if (ts.isImportDeclaration(n) || ts.isExportDeclaration(n)) return;
      if (ts.isIdentifier(n) && n !== declName && names.has(n.text)) {
        let sym = this.#checker.getSymbolAtLocation(n);
        if (sym && sym.flags & ts.SymbolFlags.Alias) sym = this.#checker.getAliasedSymbol(sym);
        if (sym === fnSym) {
          if (ts.isCallExpression(n.parent) && n.parent.expression === n) calls.push(n.parent);
          else escapes = true;
        }
      }
      n.forEachChild(visit);
    };
    for (const sf of this.#program.getSourceFiles()) renames(sf);
    for (const sf of this.#program.getSourceFiles()) visit(sf);
    const out = escapes ? undefined : calls;
    this.#calls.set(fnSym, out);
    return out;
  }
}

/** `group/resource[/sub]`, verb, name of one request, or why it is not one. */
export function classifyRequest(method: string, path: string): { key: string; verb: string; name?: string; dynamicName: boolean; namespaced: boolean } | { open: true } | { error: string } {
  const [p = '', query = ''] = path.split('?');
  if (OPEN_PATHS.has(p)) return { open: true };
  let segs = p.split('/').slice(1);
  let group: string;
  if (segs[0] === 'api' && segs[1] === 'v1') {
    group = '';
    segs = segs.slice(2);
  } else if (segs[0] === 'apis' && segs.length >= 3) {
    group = segs[1]!;
    segs = segs.slice(3);
  } else return { error: `path ${show(path)} is not under /api/v1 or /apis/<group>/<version>` };
  if (group.includes(DYN) || p.split('/')[2]?.includes(DYN)) return { error: `API group or version of ${show(path)} is not known statically` };
  const namespaced = segs[0] === 'namespaces' && segs.length >= 3;
  if (namespaced) segs = segs.slice(2);
  const [resource, name, sub, ...more] = segs;
  if (!resource || resource.includes(DYN)) return { error: `resource of ${show(path)} is not known statically` };
  if (more.length || sub?.includes(DYN)) return { error: `subresource of ${show(path)} is not known statically` };
  const named = name !== undefined && name !== '';
  const watch = method === 'WATCH' || /(^|&)watch=(1|true)/.test(query);
  const verbs: Record<string, string> = { GET: named ? 'get' : 'list', POST: 'create', PUT: 'update', PATCH: 'patch', DELETE: named ? 'delete' : 'deletecollection' };
  const verb = watch ? 'watch' : verbs[method];
  if (!verb) return { error: `HTTP method ${show(method)} is not one of GET, POST, PUT, PATCH, DELETE` };
  const dynamicName = named && name.includes(DYN);
  return { key: `${group}/${resource}${sub ? `/${sub}` : ''}`, verb, ...(named && !dynamicName ? { name } : {}), dynamicName, namespaced };
}

function show(s: string): string {
  return s.replace(new RegExp(`${DYN}([^${DYN}]*)${DYN}`, 'g'), '${$1}');
}

/** The expression under casts and parentheses. */
function innermost(n: ts.Expression): ts.Expression {
  while (ts.isAsExpression(n) || ts.isTypeAssertionExpression(n) || ts.isParenthesizedExpression(n) || ts.isNonNullExpression(n)) n = n.expression;
  return n;
}

/** True when `t` is (or is a union containing) the KubeRest class. */
function isRest(checker: ts.TypeChecker, node: ts.Expression): boolean {
  const t = checker.getTypeAtLocation(node);
  const types = t.isUnion() ? t.types : [t];
  return types.some((x) => x.getSymbol()?.getName() === REST_CLASS);
}

/**
 * A scanner over `sources` (absolute paths: every file a scanned call's names may come from, e.g. the CRD
 * constants, the client, the callers of helpers); `root` makes locations relative. The returned function
 * lists every KubeRest request made in `files` (a subset of `sources`), resolved.
 */
export function createRestScanner(sources: string[], root: string): (files: string[]) => { needs: ApiNeed[]; unresolved: UnresolvedCall[] } {
  // Only our own sources: no lib, no node_modules. Fast (no client-node typings), and every name the scan
  // follows (KubeRest, CRD constants, helpers) is declared in them; what stays unknown is reported.
  const program = ts.createProgram(sources, {
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    allowImportingTsExtensions: true,
    noEmit: true,
    noLib: true,
    noResolve: true,
    types: [],
  });
  const checker = program.getTypeChecker();
  const resolver = new Resolver(program);
  return (files) => scanFiles(program, checker, resolver, files, root);
}

function scanFiles(program: ts.Program, checker: ts.TypeChecker, resolver: Resolver, files: string[], root: string): { needs: ApiNeed[]; unresolved: UnresolvedCall[] } {
  const needs: ApiNeed[] = [];
  const unresolved: UnresolvedCall[] = [];
  for (const file of files) {
    const sf = program.getSourceFile(file);
    if (!sf) throw new Error(`${file}: not part of the scan program`);
    const at = (n: ts.Node): string => `${relative(root, file)}:${sf.getLineAndCharacterOfPosition(n.getStart()).line + 1}`;
    const what = (n: ts.Node): string => n.getText().replace(/\s+/g, ' ').slice(0, 120);
    const request = (call: ts.Node, methodExpr: ts.Expression | string, pathExpr: ts.Expression | undefined): void => {
      if (!pathExpr) return void unresolved.push({ at: at(call), what: what(call), why: 'no path argument' });
      const methods = typeof methodExpr === 'string' ? [methodExpr] : resolver.all(methodExpr);
      for (const method of methods) {
        if (method.includes(DYN)) {
          unresolved.push({ at: at(call), what: what(call), why: `HTTP method ${show(method)} is not a literal` });
          continue;
        }
        for (const path of resolver.all(pathExpr)) {
          const c = classifyRequest(method, path);
          if ('error' in c) unresolved.push({ at: at(call), what: what(call), why: c.error });
          else if (!('open' in c)) needs.push({ key: c.key, verb: c.verb, ...(c.name ? { name: c.name } : {}), ...(c.dynamicName ? { dynamicName: true } : {}), namespaced: c.namespaced, at: at(call) });
        }
      }
    };
    const visit = (n: ts.Node): void => {
      // The client's own methods call each other; what they send is decided by their callers.
      if (ts.isClassDeclaration(n) && n.name?.text === REST_CLASS) return;
      if (ts.isCallExpression(n) && ts.isPropertyAccessExpression(n.expression) && isRest(checker, n.expression.expression)) {
        const m = n.expression.name.text;
        const spec = REST_METHODS[m];
        if (spec) request(n, spec.method ?? n.arguments[0] ?? '', n.arguments[spec.pathArg]);
        else if (m !== 'close') unresolved.push({ at: at(n), what: what(n), why: `KubeRest.${m} is not a request method this scan knows: add it to REST_METHODS in deploy/scan-api-use.ts` });
      } else if (ts.isNewExpression(n) && ts.isIdentifier(n.expression) && INFORMER_CLASSES.has(n.expression.text)) {
        const spec = n.arguments?.[1];
        const path = spec && ts.isObjectLiteralExpression(spec)
          ? spec.properties.find((p) => p.name && ts.isIdentifier(p.name) && p.name.text === 'path')
          : undefined;
        const pathExpr = path && ts.isPropertyAssignment(path) ? path.initializer : path && ts.isShorthandPropertyAssignment(path) ? path.name : undefined;
        request(n, 'GET', pathExpr);
        request(n, 'WATCH', pathExpr);
      } else if ((ts.isAsExpression(n) || ts.isTypeAssertionExpression(n)) && !ts.isAsExpression(n.parent) && isRest(checker, innermost(n)) && !isRest(checker, n)) {
        // A KubeRest handed on as something else (client-node's Watch): its requests are out of this scan's sight.
        unresolved.push({ at: at(n), what: what(n), why: 'KubeRest is cast to another type, so its requests cannot be followed' });
      }
      n.forEachChild(visit);
    };
    visit(sf);
  }
  return { needs, unresolved };
}
