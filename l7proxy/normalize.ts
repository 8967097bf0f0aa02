/** Path, query and host normalization, done once per request; the result is what policy, routing and forwarding all use. */
// Why one place: every path-confusion advisory of the field (Istio CVE-2021-31920 `//` `%2F` `%5C`, CVE-2021-39156
// `#`, CVE-2021-39155 Host case, Envoy CVE-2019-9901 `..`, CVE-2019-9900 NUL, GHSA-m745-gh6x-349x `;`) comes from the
// policy engine and the backend reading two different strings. Here the proxy decides on the normalized string AND
// forwards that very string, and rejects what it cannot make unambiguous.
//
// Decisions (see README "Path rules"):
// - `//` collapses, `.`/`..` segments resolve and never climb above `/`; `%2E` counts as `.` (it is unreserved).
// - percent-encoded unreserved characters are decoded (`%61` → `a`); other escapes stay encoded, hex upper-cased;
//   decoding happens once (`%252F` stays `%252F`: the backend sees a literal `%2F`, never a separator).
// - rejected (400): `%2F`, `%5C`, raw `\`, `%00`-`%1F`/`%7F`, bad `%` escapes, invalid or overlong UTF-8,
//   `#` fragments, `..;`/`.;` segments (Tomcat reads them as dot segments), a `;x` segment followed by more
//   (Tomcat reads `/;x/admin` as `/admin`), non-ASCII or control bytes.
// - `;` stays part of its segment: `/admin;x` is not Exact `/admin`, but prefix matching (`pathHasPrefix`) treats `;`
//   as a segment boundary, so a prefix `/admin` covers `/admin;x` and `/admin;x/y` (servlet containers strip it).
//   Authorization takes the reading that narrows access: DENY prefixes cover `;x`, ALLOW prefixes do not (nginx
//   serves `/api;x/y` from a directory `api;x`, outside `/api`).
// - paths are case-sensitive (RFC 3986 §6.2.2.1): `/ADMIN` is not `/admin` and is forwarded exactly as `/ADMIN`.
// - `"<>^`{|}` are percent-encoded (normalizing, never rejecting, what some clients send raw).
// - Host: exactly one; lower-cased; one trailing dot removed; port split off for matching; strict characters.

/** A request target and host after normalization. */
export type NormalizedTarget = {
  /** Normalized path, always starting with `/`. */
  path: string;
  /** Raw query after validation (without `?`), or undefined when the target had none. */
  query: string | undefined;
  /** Lower-cased host without trailing dot or port; IPv6 without brackets. */
  host: string;
  /** Port from the Host header, when one was given. */
  port: number | undefined;
  /** `host[:port]` as forwarded in the Host header (IPv6 bracketed). */
  authority: string;
};

/** Either the value or why the input is refused (always answered with 400). */
export type Normalized<T> = { ok: true; value: T } | { ok: false; reason: string };

const UNRESERVED = /^[A-Za-z0-9\-._~]$/;
const HEX = /^[0-9A-Fa-f]{2}$/;
/** pchar minus `%`: unreserved, sub-delims, `:` and `@` (RFC 3986 §3.3). */
const PATH_SAFE = /^[A-Za-z0-9\-._~!$&'()*+,;=:@]$/;
/** Characters some clients send raw although RFC 3986 forbids them; encoded, not refused. */
const ENCODE_RAW = new Set(['"', '<', '>', '^', '`', '{', '|', '}']);
const utf8 = new TextDecoder('utf-8', { fatal: true });

function ok<T>(value: T): Normalized<T> { return { ok: true, value }; }
function no<T>(reason: string): Normalized<T> { return { ok: false, reason }; }
function pct(byte: number): string { return '%' + byte.toString(16).toUpperCase().padStart(2, '0'); }

/** `/` and pchar minus `%` (the PATH_SAFE set), by char code: a path of only these needs no rewriting. */
const PLAIN_PATH_CHAR = (() => {
  const t = new Uint8Array(128);
  for (const c of "/ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@") t[c.charCodeAt(0)] = 1;
  return t;
})();

/**
 * True when `raw` is already in normal form: only plain characters (no `%`, nothing to encode or refuse), no
 * empty segment but a trailing one (`//`), and no segment starting with `.` or `;` (no `.`/`..`/`..;`/`;x` segments).
 */
function isPlainPath(raw: string): boolean {
  let prev = 0;
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (c >= 128 || PLAIN_PATH_CHAR[c] === 0) return false;
    if (prev === 0x2f && (c === 0x2f || c === 0x2e || c === 0x3b)) return false;
    prev = c;
  }
  return true;
}

/** Normalize an origin-form path (starts with `/`, no query). */
export function normalizePath(raw: string): Normalized<string> {
  if (!raw.startsWith('/')) return no('path must start with "/"');
  if (isPlainPath(raw)) return ok(raw);
  let out = '';
  let run: number[] = []; // consecutive escaped bytes >= 0x80, validated as one UTF-8 sequence
  const flush = (): string | undefined => {
    if (run.length === 0) return undefined;
    try { utf8.decode(Uint8Array.from(run)); } catch { return 'percent-encoded bytes are not valid UTF-8 (overlong or truncated sequence)'; }
    run = [];
    return undefined;
  };
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i]!;
    if (c === '%') {
      const hex = raw.slice(i + 1, i + 3);
      if (!HEX.test(hex)) return no(`invalid percent-encoding at offset ${i}`);
      const byte = parseInt(hex, 16);
      i += 2;
      if (byte >= 0x80) { run.push(byte); out += pct(byte); continue; }
      const bad = flush(); if (bad) return no(bad);
      if (byte === 0x2f) return no('encoded slash %2F in path');
      if (byte === 0x5c) return no('encoded backslash %5C in path');
      if (byte < 0x20 || byte === 0x7f) return no(`encoded control character ${pct(byte)} in path`);
      const ch = String.fromCharCode(byte);
      out += UNRESERVED.test(ch) ? ch : pct(byte);
      continue;
    }
    const bad = flush(); if (bad) return no(bad);
    if (c === '/' || PATH_SAFE.test(c)) out += c;
    else if (ENCODE_RAW.has(c)) out += pct(c.charCodeAt(0));
    else if (c === '\\') return no('backslash in path');
    else if (c === '#') return no('fragment "#" in request target');
    else if (c === '?') return no('"?" in path');
    else return no(`invalid character ${JSON.stringify(c)} in path`);
  }
  const bad = flush(); if (bad) return no(bad);
  const parts = out.split('/');
  const segs: string[] = [];
  let trailing = false;
  for (let i = 1; i < parts.length; i++) {
    const seg = parts[i]!;
    const last = i === parts.length - 1;
    trailing = false;
    if (seg === '' || seg === '.') { trailing = last; continue; }
    if (seg === '..') { segs.pop(); trailing = last; continue; }
    if (/^\.\.?;/.test(seg)) return no('dot segment with parameters ("..;" / ".;") in path');
    // Servlet containers strip `;params` before resolving segments, so `/;x/admin` reaches them as `//admin`,
    // i.e. `/admin`, while prefix matching here would see a first segment `;x`. Only a last segment may be
    // parameters alone (`/app/;jsessionid=1` is `/app/` to them, and still under prefix `/app` here).
    if (seg.startsWith(';') && !last) return no('empty segment with parameters ("/;x/") in path');
    segs.push(seg);
  }
  if (segs.length === 0) return ok('/');
  return ok('/' + segs.join('/') + (trailing ? '/' : ''));
}

/** Validate a query (without `?`): well-formed escapes, no fragment, no controls; kept as sent otherwise. */
export function normalizeQuery(raw: string): Normalized<string> {
  let out = '';
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i]!;
    if (c === '%') {
      if (!HEX.test(raw.slice(i + 1, i + 3))) return no(`invalid percent-encoding in query at offset ${i}`);
      out += c;
    } else if (c === '/' || c === '?' || PATH_SAFE.test(c)) out += c;
    else if (ENCODE_RAW.has(c) || c === '\\') out += pct(c.charCodeAt(0));
    else if (c === '#') return no('fragment "#" in request target');
    else return no(`invalid character ${JSON.stringify(c)} in query`);
  }
  return ok(out);
}

type NormalizedHost = { host: string; port: number | undefined; authority: string };

// The last Host normalized and its result: a connection sends the same Host on every request (results are never edited).
let lastHostRaw: string | undefined;
let lastHostResult: Normalized<NormalizedHost> | undefined;

/** Normalize one Host (or `:authority`) value: lower-case, trailing dot removed, port split off. */
export function normalizeHost(raw: string): Normalized<NormalizedHost> {
  if (raw === lastHostRaw) return lastHostResult!;
  const r = computeNormalizedHost(raw);
  lastHostRaw = raw;
  lastHostResult = r;
  return r;
}

function computeNormalizedHost(raw: string): Normalized<NormalizedHost> {
  let host: string; let portText: string | undefined;
  if (raw.startsWith('[')) {
    const end = raw.indexOf(']');
    if (end < 0) return no('Host: unterminated IPv6 literal');
    host = raw.slice(1, end).toLowerCase();
    if (!/^[0-9a-f:.]+$/.test(host) || !host.includes(':')) return no('Host: invalid IPv6 literal');
    const rest = raw.slice(end + 1);
    if (rest !== '' && !rest.startsWith(':')) return no('Host: junk after IPv6 literal');
    portText = rest === '' ? undefined : rest.slice(1);
  } else {
    const colon = raw.lastIndexOf(':');
    host = (colon >= 0 ? raw.slice(0, colon) : raw).toLowerCase();
    portText = colon >= 0 ? raw.slice(colon + 1) : undefined;
    if (host.endsWith('.')) host = host.slice(0, -1);
    if (host === '' || host.length > 253) return no('Host: empty or longer than 253 characters');
    if (!/^[a-z0-9\-_~.]+$/.test(host)) return no('Host: invalid character (letters, digits, "-", ".", "_", "~" only)');
    if (host.split('.').some((l) => l === '' || l.length > 63)) return no('Host: empty or over-long label');
  }
  let port: number | undefined;
  if (portText !== undefined) {
    if (!/^[0-9]{1,5}$/.test(portText)) return no('Host: invalid port');
    port = Number(portText);
    if (port < 1 || port > 65535) return no('Host: port out of range');
  }
  const shown = host.includes(':') ? `[${host}]` : host;
  return ok({ host, port, authority: port === undefined ? shown : `${shown}:${port}` });
}

/**
 * Normalize a request target (origin- or absolute-form) and the Host values sent with it.
 * `hosts` holds every Host header (HTTP/1) or `:authority` plus any `host` (HTTP/2); all must agree.
 */
export function normalizeTarget(target: string, hosts: readonly string[]): Normalized<NormalizedTarget> {
  if (hosts.length === 0) return no('missing Host header');
  const first = normalizeHost(hosts[0]!);
  if (!first.ok) return first;
  for (const h of hosts.slice(1)) {
    const other = normalizeHost(h);
    if (!other.ok) return other;
    if (other.value.authority !== first.value.authority) return no('conflicting Host values (duplicate Host or Host differs from :authority)');
  }
  let { host, port, authority } = first.value;
  let rest = target;
  if (target === '*') return no('asterisk-form request target is not supported');
  const abs = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)/.exec(target);
  if (abs) {
    if (abs[1]!.toLowerCase() !== 'http') return no(`absolute-form target with scheme ${JSON.stringify(abs[1])}`);
    if (abs[2]!.includes('@')) return no('userinfo in absolute-form target');
    const fromTarget = normalizeHost(abs[2]!);
    if (!fromTarget.ok) return fromTarget;
    if (fromTarget.value.authority !== authority) return no('absolute-form target authority differs from Host');
    ({ host, port, authority } = fromTarget.value);
    rest = target.slice(abs[0].length);
    if (rest === '' || rest.startsWith('?')) rest = '/' + rest;
  }
  if (rest.includes('#')) return no('fragment "#" in request target');
  const q = rest.indexOf('?');
  const path = normalizePath(q >= 0 ? rest.slice(0, q) : rest);
  if (!path.ok) return path;
  let query: string | undefined;
  if (q >= 0) {
    const nq = normalizeQuery(rest.slice(q + 1));
    if (!nq.ok) return nq;
    query = nq.value;
  }
  return ok({ path: path.value, query, host, port, authority });
}

/** The target sent upstream: path plus `?query` when there was one. */
export function formatTarget(path: string, query: string | undefined): string {
  return query === undefined ? path : `${path}?${query}`;
}

/**
 * Whether `path` is under `prefix` on a segment boundary (both normalized). A trailing `/` on the prefix is ignored
 * (Gateway API), and `;` counts as a boundary so a prefix `/admin` also covers `/admin;jsessionid=x` (servlet
 * containers strip the parameters). `semicolonIsBoundary: false` is the narrower reading (nginx serves `/admin;x`
 * as a sibling of `/admin`, not below it), for an ALLOW that must not grant more than its prefix.
 */
export function pathHasPrefix(path: string, prefix: string, semicolonIsBoundary = true): boolean {
  const p = prefix.endsWith('/') ? prefix.slice(0, -1) : prefix;
  if (p === '') return true;
  if (!path.startsWith(p)) return false;
  const next = path[p.length];
  return next === undefined || next === '/' || (semicolonIsBoundary && next === ';');
}
