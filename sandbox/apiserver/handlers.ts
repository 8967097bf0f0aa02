/**
 * The HTTP side of the server: authentication, routing of Kubernetes REST paths (discovery, OpenAPI,
 * collections, objects, subresources), body decoding, content negotiation (JSON, Table, metadata) and
 * `Status` error answers. The semantics live in objects.ts; this file only translates.
 */

import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { arch } from 'node:os';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { AGGREGATED_DISCOVERY_TYPE, aggregatedDiscovery, apiGroup, apiGroupList, apiResourceList, apiVersions, openApiV3Document, openApiV3Root } from './discovery.ts';
import { StatusError, badRequest, fieldForbidden, fieldRequired, invalid, internalError, methodNotAllowed, notFound, pathNotFound, unauthorized, unsupportedMediaType } from './errors.ts';
import type { JsonObject, JsonValue } from './json.ts';
import { asArray, asNumber, asObject, asString } from './json.ts';
import type { DeleteOptions, ListOptions, ObjectService, PatchType, WriteOptions } from './objects.ts';
import { nowRfc3339 } from './objects.ts';
import type { Registry, ResourceType } from './registry.ts';
import { apiVersionOf } from './registry.ts';
import { parseFieldSelector, parseLabelSelector } from './selectors.ts';
import type { ObjectStore } from './store.ts';
import type { Rendering } from './negotiation.ts';
import { negotiateRendering } from './negotiation.ts';
import type { PodLogDirectory } from './pod-logs.ts';
import { parsePodLogRequest, servePodLog } from './pod-logs.ts';
import type { PodProxyDialer } from './pod-proxy.ts';
import { parsePodProxyId, planPodProxyTarget, servePodProxy } from './pod-proxy.ts';
import type { IncludeObject } from './tables.ts';
import { decodeKubernetesProtobuf } from './protobuf.ts';
import { toTable } from './tables.ts';
import type { TokenAuthority, UidLookup, UserInfo } from './tokens.ts';
import { TOKEN_ISSUER } from './tokens.ts';
import type { WatchHub, WatchRendering } from './watch.ts';

/** The Kubernetes version the server reports. */
export const SERVER_VERSION = { major: '1', minor: '32', gitVersion: 'v1.32.0-nodemesh' };

const MAX_BODY_BYTES = 16 * 1024 * 1024;

/** What the HTTP handler works with. */
export interface HandlerContext {
  objects: ObjectService;
  registry: Registry;
  store: ObjectStore;
  watches: WatchHub;
  tokens: TokenAuthority;
  log: (line: string) => void;
  /** host:port clients use, for /api serverAddressByClientCIDRs. */
  serverAddress: () => string;
  /** Where pods' container logs are (the sandbox kubelet's files); pods/log answers 503 without it. */
  podLogDirectory?: PodLogDirectory;
  /** Opens streams to pods for pods/proxy (the sandbox's reaches into node namespaces); pods/proxy answers 503 without it. */
  podProxyDialer?: PodProxyDialer;
}

interface Negotiated {
  rendering: Rendering;
  include: IncludeObject;
}

function negotiate(accept: string | undefined, query: URLSearchParams): Negotiated {
  const include = (query.get('includeObject') as IncludeObject | null) ?? 'Metadata';
  return { rendering: negotiateRendering(accept, { yaml: true, table: true, metadata: true }), include };
}

function send(res: ServerResponse, code: number, body: JsonValue | string, contentType = 'application/json', warnings: string[] = []): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  const headers: Record<string, string | string[]> = { 'Content-Type': contentType, 'Cache-Control': 'no-cache, private', 'Content-Length': String(Buffer.byteLength(text)) };
  if (warnings.length) headers['Warning'] = warnings.map((w) => `299 - ${JSON.stringify(w)}`);
  res.writeHead(code, headers);
  res.end(text);
}

function sendError(res: ServerResponse, e: StatusError): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  send(res, e.code, e.toStatus());
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    const b = c as Buffer;
    size += b.length;
    if (size > MAX_BODY_BYTES) throw new StatusError(413, 'RequestEntityTooLarge', `the request body is larger than ${MAX_BODY_BYTES} bytes`);
    chunks.push(b);
  }
  return Buffer.concat(chunks);
}

function decodeBody(buf: Buffer, contentType: string | undefined): unknown {
  const ct = (contentType ?? '').split(';')[0]!.trim().toLowerCase();
  if (ct === 'application/vnd.kubernetes.protobuf') return decodeKubernetesProtobuf(buf);
  if (ct.includes('protobuf') || ct.includes('cbor')) {
    throw unsupportedMediaType(`the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got ${ct})`);
  }
  const text = buf.toString('utf8');
  if (text.trim() === '') return undefined;
  const yamlFirst = ct.includes('yaml');
  try {
    if (!yamlFirst) return JSON.parse(text) as unknown;
  } catch (e) {
    if (ct === 'application/json' || ct.endsWith('+json')) throw badRequest(`the request body is not valid JSON: ${(e as Error).message}`);
  }
  try {
    return parseYaml(text) as unknown;
  } catch (e) {
    throw badRequest(`the request body is neither valid JSON nor YAML: ${(e as Error).message}`);
  }
}

function patchTypeOf(contentType: string | undefined): PatchType {
  const ct = (contentType ?? '').split(';')[0]!.trim().toLowerCase();
  switch (ct) {
    case 'application/json-patch+json':
      return 'json';
    case 'application/merge-patch+json':
      return 'merge';
    case 'application/strategic-merge-patch+json':
      return 'strategic';
    case 'application/apply-patch+yaml':
    case 'application/apply-patch+cbor':
      return 'apply';
  }
  throw unsupportedMediaType(
    `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml (got ${ct || 'no Content-Type'})`,
  );
}

/** The field manager of a write: `fieldManager`, else the User-Agent's product name (`kubectl/v1.32 ...` → `kubectl`), as the real server does. */
function fieldManagerOf(q: URLSearchParams, userAgent: string | undefined): string {
  const explicit = q.get('fieldManager');
  if (explicit !== null && explicit !== '') {
    if (explicit.length > 128) throw invalid('meta.k8s.io', 'PatchOptions', '', [{ type: 'TooLong', field: 'fieldManager', message: 'Too long: may not be more than 128 bytes' }]);
    if (!/^[\x20-\x7e]+$/.test(explicit)) throw badRequest(`fieldManager: Invalid value: ${JSON.stringify(explicit)}: must be printable ASCII`);
    return explicit;
  }
  const product = (userAgent ?? '').split('/')[0]!.trim();
  return product.slice(0, 128) || 'unknown';
}

function writeOptions(q: URLSearchParams, req: IncomingMessage): WriteOptions {
  const dry = q.getAll('dryRun');
  for (const d of dry) if (d !== 'All') throw badRequest(`dryRun: Unsupported value: ${JSON.stringify(d)}: supported values: "All"`);
  const fv = q.get('fieldValidation') ?? 'Warn';
  if (fv !== 'Strict' && fv !== 'Warn' && fv !== 'Ignore') {
    throw badRequest(`fieldValidation: Unsupported value: ${JSON.stringify(fv)}: supported values: "Ignore", "Strict", "Warn"`);
  }
  return { dryRun: dry.length > 0, fieldValidation: fv, warnings: [], fieldManager: fieldManagerOf(q, req.headers['user-agent']) };
}

/** PATCH options of apply: `fieldManager` is required, `force` is for apply only. */
function patchOptions(q: URLSearchParams, type: PatchType, wo: WriteOptions): WriteOptions {
  const force = q.get('force');
  if (type !== 'apply') {
    if (force !== null) throw invalid('meta.k8s.io', 'PatchOptions', '', [fieldForbidden('force', 'may not be specified for non-apply patch')]);
    return wo;
  }
  if (!q.get('fieldManager')) throw invalid('meta.k8s.io', 'PatchOptions', '', [fieldRequired('fieldManager', 'is required for apply patch')]);
  if (force !== null && force !== 'true' && force !== 'false') throw badRequest(`force: Invalid value: ${JSON.stringify(force)}: must be true or false`);
  return { ...wo, force: force === 'true' };
}

function listOptions(rt: ResourceType, q: URLSearchParams): ListOptions {
  const limitStr = q.get('limit');
  const limit = limitStr ? Number(limitStr) : undefined;
  if (limit !== undefined && (!Number.isInteger(limit) || limit < 0)) throw badRequest(`invalid limit "${limitStr}": must be a non-negative integer`);
  const supported = new Set(['metadata.name', 'metadata.namespace', ...rt.fieldLabels]);
  return {
    labelSelector: parseLabelSelector(q.get('labelSelector')),
    fieldSelector: parseFieldSelector(q.get('fieldSelector'), supported, `${rt.kind}`),
    limit,
    continueToken: q.get('continue') ?? undefined,
  };
}

function deleteOptions(body: unknown, q: URLSearchParams): DeleteOptions {
  const b = asObject(body) ?? {};
  const out: DeleteOptions = {};
  const policy = asString(b['propagationPolicy']) ?? q.get('propagationPolicy') ?? undefined;
  if (policy !== undefined) {
    if (policy !== 'Background' && policy !== 'Foreground' && policy !== 'Orphan') {
      throw badRequest(`propagationPolicy: Unsupported value: ${JSON.stringify(policy)}: supported values: "Foreground", "Background", "Orphan"`);
    }
    out.propagationPolicy = policy;
  } else if (b['orphanDependents'] === true || q.get('orphanDependents') === 'true') {
    out.propagationPolicy = 'Orphan';
  }
  const grace = asNumber(b['gracePeriodSeconds']) ?? (q.get('gracePeriodSeconds') !== null ? Number(q.get('gracePeriodSeconds')) : undefined);
  if (grace !== undefined && Number.isFinite(grace)) out.gracePeriodSeconds = Math.max(0, grace);
  const pre = asObject(b['preconditions']);
  if (pre) {
    out.preconditions = {};
    const uid = asString(pre['uid']);
    const rv = asString(pre['resourceVersion']);
    if (uid) out.preconditions.uid = uid;
    if (rv) out.preconditions.resourceVersion = rv;
  }
  return out;
}

function bodyDryRun(body: unknown): boolean {
  return asArray(asObject(body)?.['dryRun']).includes('All');
}

interface ResourcePath {
  rt: ResourceType;
  namespace: string | undefined;
  name: string | undefined;
  sub: string | undefined;
  watchPath: boolean;
}

function parseResourcePath(registry: Registry, group: string, version: string, segs: string[]): ResourcePath {
  let watchPath = false;
  if (segs[0] === 'watch') {
    watchPath = true;
    segs = segs.slice(1);
  }
  if (segs.length === 0) throw pathNotFound();
  let namespace: string | undefined;
  let rest = segs;
  if (segs[0] === 'namespaces' && segs.length >= 3) {
    const candidate = registry.lookup(group, version, segs[2]!);
    if (candidate?.namespaced) {
      namespace = segs[1];
      rest = segs.slice(2);
    }
  }
  const rt = registry.lookup(group, version, rest[0]!);
  if (!rt) throw pathNotFound();
  if (rest.length > 3) throw pathNotFound();
  if (!rt.namespaced && namespace !== undefined) throw pathNotFound();
  return { rt, namespace, name: rest[1], sub: rest[2], watchPath };
}

/** Builds the request listener for the HTTP(S) servers. */
export function createRequestHandler(ctx: HandlerContext): (req: IncomingMessage, res: ServerResponse) => void {
  const openApiCache = new Map<string, { gen: number; text: string; hash: string }>();
  const openApiDoc = (group: string, version: string): { text: string; hash: string } | undefined => {
    const key = `${group}/${version}`;
    const cached = openApiCache.get(key);
    if (cached && cached.gen === ctx.registry.generation) return cached;
    const doc = openApiV3Document(ctx.registry, group, version);
    if (!doc) return undefined;
    const text = JSON.stringify(doc);
    const entry = { gen: ctx.registry.generation, text, hash: createHash('sha512').update(text).digest('hex').slice(0, 64).toUpperCase() };
    openApiCache.set(key, entry);
    return entry;
  };
  const uidLookup: UidLookup = (kind, ns, name) => {
    const key = kind === 'ServiceAccount' ? '/serviceaccounts' : kind === 'Pod' ? '/pods' : '/nodes';
    return asString(asObject(ctx.store.get(key, kind === 'Node' ? '' : ns, name)?.['metadata'])?.['uid']);
  };

  async function authenticate(req: IncomingMessage): Promise<UserInfo> {
    const h = req.headers.authorization;
    const m = h?.match(/^Bearer\s+(\S+)\s*$/i);
    if (!m) throw unauthorized();
    const r = await ctx.tokens.authenticate(m[1]!, [], uidLookup);
    if ('error' in r) throw unauthorized();
    return r.user;
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://apiserver');
    const path = url.pathname.replace(/\/+$/, '') || '/';
    const q = url.searchParams;
    const method = req.method ?? 'GET';

    if (/^\/(healthz|livez|readyz)(\/.*)?$/.test(path)) {
      send(res, 200, 'ok', 'text/plain; charset=utf-8');
      return;
    }
    if (path === '/version') {
      send(res, 200, { ...SERVER_VERSION, gitCommit: '', gitTreeState: 'clean', buildDate: '2026-01-01T00:00:00Z', goVersion: `node${process.versions.node}`, compiler: 'nodemesh', platform: `linux/${arch() === 'x64' ? 'amd64' : arch()}` });
      return;
    }
    if (path === '/.well-known/openid-configuration') {
      const base = `https://${ctx.serverAddress()}`;
      send(res, 200, { issuer: TOKEN_ISSUER, jwks_uri: `${base}/openid/v1/jwks`, response_types_supported: ['id_token'], subject_types_supported: ['public'], id_token_signing_alg_values_supported: ['ES256'] });
      return;
    }
    if (path === '/openid/v1/jwks') {
      send(res, 200, ctx.tokens.jwks(), 'application/jwk-set+json');
      return;
    }
    const user = await authenticate(req);
    // pods/proxy keeps the rest of the path as sent (raw, trailing slash and all): it belongs to the pod.
    const proxied = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)\/proxy(\/.*)?$/.exec(url.pathname);
    if (proxied) {
      await podProxy(req, res, decodeURIComponent(proxied[1]!), decodeURIComponent(proxied[2]!), proxied[3] ?? '', url.search);
      return;
    }
    const segs = path.split('/').filter(Boolean).map(decodeURIComponent);
    const accept = req.headers.accept;
    const discoveryPath = path === '/api' || path === '/apis' || (segs[0] === 'apis' && segs.length <= 3) || (segs[0] === 'api' && segs.length === 2);
    const aggregated = discoveryPath && negotiateRendering(accept, { discovery: path === '/api' || path === '/apis' }) === 'discovery';

    if (path === '/api') {
      if (aggregated) send(res, 200, aggregatedDiscovery(ctx.registry, true), AGGREGATED_DISCOVERY_TYPE);
      else send(res, 200, apiVersions(ctx.serverAddress()));
      return;
    }
    if (path === '/apis') {
      if (aggregated) send(res, 200, aggregatedDiscovery(ctx.registry, false), AGGREGATED_DISCOVERY_TYPE);
      else send(res, 200, apiGroupList(ctx.registry));
      return;
    }
    if (path === '/openapi/v2') throw new StatusError(404, 'NotFound', 'the nodemesh sandbox API server publishes /openapi/v3 only');
    if (path === '/openapi/v3') {
      send(res, 200, openApiV3Root(ctx.registry, (g, v) => openApiDoc(g, v)?.hash ?? ''));
      return;
    }
    if (segs[0] === 'openapi' && segs[1] === 'v3') {
      const [group, version] = segs[2] === 'api' && segs.length === 4 ? ['', segs[3]!] : segs[2] === 'apis' && segs.length === 5 ? [segs[3]!, segs[4]!] : [undefined, undefined];
      const doc = group !== undefined ? openApiDoc(group, version!) : undefined;
      if (!doc) throw pathNotFound();
      send(res, 200, doc.text, 'application/json');
      return;
    }

    let group: string;
    let version: string;
    let rest: string[];
    if (segs[0] === 'api') {
      if (segs.length < 2) throw pathNotFound();
      group = '';
      version = segs[1]!;
      rest = segs.slice(2);
    } else if (segs[0] === 'apis') {
      if (segs.length === 2) {
        const g = apiGroup(ctx.registry, segs[1]!);
        if (!g) throw pathNotFound();
        send(res, 200, g);
        return;
      }
      if (segs.length < 3) throw pathNotFound();
      group = segs[1]!;
      version = segs[2]!;
      rest = segs.slice(3);
    } else {
      throw pathNotFound();
    }
    if (rest.length === 0) {
      const list = apiResourceList(ctx.registry, group, version);
      if (!list) throw pathNotFound();
      send(res, 200, list);
      return;
    }
    const rp = parseResourcePath(ctx.registry, group, version, rest);
    await handleResource(req, res, rp, q, method, user);
  }

  async function handleResource(req: IncomingMessage, res: ServerResponse, rp: ResourcePath, q: URLSearchParams, method: string, user: UserInfo): Promise<void> {
    const { rt, namespace, name, sub } = rp;
    const ns = namespace ?? '';
    const objects = ctx.objects;
    if (sub === 'log' && name !== undefined && rt.extraSubresources.includes('log')) {
      if (method !== 'GET') throw methodNotAllowed();
      await podLog(res, ns, name, q);
      return;
    }
    const neg = negotiate(req.headers.accept, q);
    // Objects, lists and Status answers in the negotiated format (JSON or YAML).
    const reply = (code: number, body: JsonValue, warnings: string[] = []): void => {
      // Sorted keys and YAML 1.1 quoting (timestamps, "yes") as the real server's Go encoder writes them.
      if (neg.rendering === 'yaml') send(res, code, toYaml(body, { version: '1.1', sortMapEntries: true }), 'application/yaml', warnings);
      else send(res, code, body, 'application/json', warnings);
    };

    if (name === undefined) {
      if (method === 'GET') {
        if (!rt.verbs.includes('list')) throw methodNotAllowed();
        const lo = listOptions(rt, q);
        const watching = rp.watchPath || q.get('watch') === 'true' || q.get('watch') === '1';
        if (watching) {
          if (neg.rendering === 'yaml') throw new StatusError(406, 'NotAcceptable', 'watch streams are JSON only: accept application/json');
          const timeout = q.get('timeoutSeconds');
          const sie = q.get('sendInitialEvents');
          const rendering: WatchRendering = neg.rendering === 'table' ? { as: 'table', include: neg.include } : neg.rendering === 'metadata' ? { as: 'metadata' } : { as: 'object' };
          ctx.watches.serve(
            {
              rt,
              namespace: rt.namespaced ? namespace : undefined,
              labelSelector: lo.labelSelector,
              fieldSelector: lo.fieldSelector,
              resourceVersion: q.get('resourceVersion') ?? undefined,
              sendInitialEvents: sie === null ? undefined : sie === 'true',
              allowBookmarks: q.get('allowWatchBookmarks') === 'true',
              timeoutSeconds: timeout ? Number(timeout) : undefined,
              rendering,
            },
            res,
          );
          return;
        }
        const result = objects.list(rt, rt.namespaced ? namespace : undefined, lo);
        const listMeta: JsonObject = { resourceVersion: result.resourceVersion };
        if (result.continueToken) listMeta['continue'] = result.continueToken;
        if (result.remainingItemCount !== undefined) listMeta['remainingItemCount'] = result.remainingItemCount;
        if (neg.rendering === 'table') {
          send(res, 200, toTable(rt, result.items, listMeta, neg.include), 'application/json;as=Table;v=v1;g=meta.k8s.io');
          return;
        }
        if (neg.rendering === 'metadata') {
          send(res, 200, {
            kind: 'PartialObjectMetadataList',
            apiVersion: 'meta.k8s.io/v1',
            metadata: listMeta,
            items: result.items.map((o) => ({ kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: o['metadata'] ?? {} })),
          });
          return;
        }
        if (neg.rendering === 'yaml') {
          reply(200, { kind: rt.listKind, apiVersion: apiVersionOf(rt), metadata: listMeta, items: result.items });
          return;
        }
        // Built by hand so a 10k-item list is one join, not a second walk over a wrapper object.
        const text = `{"kind":${JSON.stringify(rt.listKind)},"apiVersion":${JSON.stringify(apiVersionOf(rt))},"metadata":${JSON.stringify(listMeta)},"items":[${result.items.map((o) => JSON.stringify(o)).join(',')}]}`;
        send(res, 200, text);
        return;
      }
      if (method === 'POST') {
        if (!rt.verbs.includes('create')) throw methodNotAllowed();
        if (rt.namespaced && namespace === undefined) throw methodNotAllowed();
        const body = decodeBody(await readBody(req), req.headers['content-type']);
        const wo = writeOptions(q, req);
        if (rt.storageKey === '') {
          await createVirtual(res, rt, ns, body, user);
          return;
        }
        const created = objects.create(rt, ns, body, wo);
        reply(201, created, wo.warnings);
        return;
      }
      if (method === 'DELETE') {
        if (!rt.verbs.includes('deletecollection')) throw methodNotAllowed();
        const buf = await readBody(req);
        const body = decodeBody(buf, req.headers['content-type']);
        const wo = writeOptions(q, req);
        if (bodyDryRun(body)) wo.dryRun = true;
        const deleted = objects.deleteCollection(rt, rt.namespaced ? namespace : undefined, listOptions(rt, q), deleteOptions(body, q), wo);
        reply(200, { kind: rt.listKind, apiVersion: apiVersionOf(rt), metadata: { resourceVersion: String(ctx.store.currentRevision()) }, items: deleted });
        return;
      }
      throw methodNotAllowed();
    }

    if (rt.namespaced && namespace === undefined) throw pathNotFound();
    if (rt.storageKey === '') throw methodNotAllowed();

    if (sub === undefined) {
      switch (method) {
        case 'GET': {
          const obj = objects.get(rt, ns, name);
          if (neg.rendering === 'table') {
            send(res, 200, toTable(rt, [obj], { resourceVersion: asString(asObject(obj['metadata'])?.['resourceVersion']) ?? '' }, neg.include), 'application/json;as=Table;v=v1;g=meta.k8s.io');
          } else if (neg.rendering === 'metadata') {
            send(res, 200, { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: obj['metadata'] ?? {} });
          } else {
            reply(200, obj);
          }
          return;
        }
        case 'PUT': {
          const body = decodeBody(await readBody(req), req.headers['content-type']);
          const wo = writeOptions(q, req);
          reply(200, objects.update(rt, ns, name, body, wo), wo.warnings);
          return;
        }
        case 'PATCH': {
          const type = patchTypeOf(req.headers['content-type']);
          const buf = await readBody(req);
          const body = decodeBody(buf, type === 'apply' ? 'application/yaml' : 'application/json');
          if (body === undefined) throw badRequest('the patch body is empty');
          const wo = patchOptions(q, type, writeOptions(q, req));
          if (type === 'apply') {
            const r = objects.apply(rt, ns, name, body, wo);
            reply(r.created ? 201 : 200, r.object, wo.warnings);
            return;
          }
          reply(200, objects.patch(rt, ns, name, type, body, wo), wo.warnings);
          return;
        }
        case 'DELETE': {
          const body = decodeBody(await readBody(req), req.headers['content-type']);
          const wo = writeOptions(q, req);
          if (bodyDryRun(body)) wo.dryRun = true;
          const r = objects.delete(rt, ns, name, deleteOptions(body, q), wo);
          reply(r.removed ? 200 : 202, r.object);
          return;
        }
      }
      throw methodNotAllowed();
    }

    if (sub === 'status' && rt.status) {
      switch (method) {
        case 'GET':
          reply(200, objects.get(rt, ns, name));
          return;
        case 'PUT': {
          const body = decodeBody(await readBody(req), req.headers['content-type']);
          const wo = writeOptions(q, req);
          reply(200, objects.update(rt, ns, name, body, wo, 'status'), wo.warnings);
          return;
        }
        case 'PATCH': {
          const type = patchTypeOf(req.headers['content-type']);
          const body = decodeBody(await readBody(req), type === 'apply' ? 'application/yaml' : 'application/json');
          if (body === undefined) throw badRequest('the patch body is empty');
          const wo = patchOptions(q, type, writeOptions(q, req));
          if (type === 'apply') {
            reply(200, objects.apply(rt, ns, name, body, wo, 'status').object, wo.warnings);
            return;
          }
          reply(200, objects.patch(rt, ns, name, type, body, wo, 'status'), wo.warnings);
          return;
        }
      }
      throw methodNotAllowed();
    }
    if (sub === 'scale' && rt.scale) {
      switch (method) {
        case 'GET':
          send(res, 200, objects.getScale(rt, ns, name));
          return;
        case 'PUT': {
          const body = decodeBody(await readBody(req), req.headers['content-type']);
          send(res, 200, objects.updateScale(rt, ns, name, body, writeOptions(q, req)));
          return;
        }
        case 'PATCH': {
          const type = patchTypeOf(req.headers['content-type']);
          const body = decodeBody(await readBody(req), 'application/json');
          send(res, 200, objects.patchScale(rt, ns, name, type, body, writeOptions(q, req)));
          return;
        }
      }
      throw methodNotAllowed();
    }
    if (sub === 'token' && rt.extraSubresources.includes('token')) {
      if (method !== 'POST') throw methodNotAllowed();
      const body = decodeBody(await readBody(req), req.headers['content-type']);
      await tokenRequest(res, ns, name, body);
      return;
    }
    if (sub === 'binding' && rt.extraSubresources.includes('binding')) {
      if (method !== 'POST') throw methodNotAllowed();
      const body = decodeBody(await readBody(req), req.headers['content-type']);
      objects.bind(ns, name, body);
      send(res, 201, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', code: 201 });
      return;
    }
    if (sub === 'finalize' && rt.extraSubresources.includes('finalize')) {
      if (method !== 'PUT') throw methodNotAllowed();
      const body = decodeBody(await readBody(req), req.headers['content-type']);
      send(res, 200, objects.update(rt, ns, name, body, writeOptions(q, req)));
      return;
    }
    throw pathNotFound();
  }

  async function podLog(res: ServerResponse, ns: string, name: string, q: URLSearchParams): Promise<void> {
    const pod = ctx.store.get('/pods', ns, name);
    if (!pod) throw notFound('', 'pods', name);
    const request = parsePodLogRequest(pod, q, Date.now());
    const uid = asString(asObject(pod['metadata'])?.['uid']) ?? '';
    const dir = ctx.podLogDirectory?.(ns, name, uid);
    if (!dir) {
      throw new StatusError(503, 'ServiceUnavailable', `no kubelet keeps logs for pod ${ns}/${name} on this API server (it runs without the sandbox kubelets)`);
    }
    const current = (): JsonObject | undefined => {
      const p = ctx.store.get('/pods', ns, name);
      return p && asObject(p['metadata'])?.['uid'] === uid ? p : undefined;
    };
    await servePodLog(res, { dir, pod, current }, request);
  }

  async function podProxy(req: IncomingMessage, res: ServerResponse, ns: string, id: string, upstreamPath: string, search: string): Promise<void> {
    const parsed = parsePodProxyId(id);
    if (!parsed) throw badRequest(`pods/proxy: "${id}" is not [scheme:]name[:port] (scheme http or https)`);
    const pod = ctx.store.get('/pods', ns, parsed.name);
    if (!pod) throw notFound('', 'pods', parsed.name);
    await servePodProxy(req, res, { target: planPodProxyTarget(pod, parsed), upstreamPath, search, dialer: ctx.podProxyDialer });
  }

  async function createVirtual(res: ServerResponse, rt: ResourceType, ns: string, body: unknown, user: UserInfo): Promise<void> {
    const b = asObject(body) ?? {};
    const spec = asObject(b['spec']) ?? {};
    const base = { apiVersion: apiVersionOf(rt), kind: rt.kind, metadata: { creationTimestamp: null } };
    switch (rt.kind) {
      case 'TokenReview': {
        const token = asString(spec['token']);
        if (!token) throw badRequest('TokenReview spec.token is required');
        const audiences = asArray(spec['audiences']).map(String);
        const r = await ctx.tokens.authenticate(token, audiences, uidLookup);
        const status: JsonObject =
          'error' in r
            ? { authenticated: false, user: {}, error: r.error }
            : { authenticated: true, user: { username: r.user.username, ...(r.user.uid ? { uid: r.user.uid } : {}), groups: r.user.groups, ...(r.user.extra ? { extra: r.user.extra } : {}) }, audiences: r.audiences };
        send(res, 201, { ...base, spec, status });
        return;
      }
      case 'SelfSubjectReview':
        send(res, 201, { ...base, status: { userInfo: { username: user.username, ...(user.uid ? { uid: user.uid } : {}), groups: user.groups, ...(user.extra ? { extra: user.extra } : {}) } } });
        return;
      case 'SelfSubjectAccessReview':
        // The sandbox has no authorization layer: every authenticated identity may do everything.
        send(res, 201, { ...base, spec, status: { allowed: true, reason: 'the nodemesh sandbox API server does not enforce RBAC' } });
        return;
      case 'Binding': {
        const podName = asString(asObject(b['metadata'])?.['name']);
        if (!podName) throw badRequest('Binding metadata.name (the pod) is required');
        ctx.objects.bind(ns, podName, body);
        send(res, 201, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', code: 201 });
        return;
      }
    }
    throw methodNotAllowed();
  }

  async function tokenRequest(res: ServerResponse, ns: string, saName: string, body: unknown): Promise<void> {
    const sa = ctx.store.get('/serviceaccounts', ns, saName);
    if (!sa) throw notFound('', 'serviceaccounts', saName);
    const spec = asObject(asObject(body)?.['spec']) ?? {};
    const audiences = asArray(spec['audiences']).map(String);
    const expirationSeconds = Math.max(600, asNumber(spec['expirationSeconds']) ?? 3600);
    const bound = asObject(spec['boundObjectRef']);
    let pod: { name: string; uid: string } | undefined;
    let node: { name: string; uid: string } | undefined;
    if (bound) {
      const kind = asString(bound['kind']);
      const bname = asString(bound['name']) ?? '';
      if (kind === 'Pod') {
        const p = ctx.store.get('/pods', ns, bname);
        if (!p) throw notFound('', 'pods', bname);
        const uid = asString(asObject(p['metadata'])?.['uid']) ?? '';
        if (bound['uid'] && bound['uid'] !== uid) throw new StatusError(409, 'Conflict', `the UID in the bound object reference (${String(bound['uid'])}) does not match the UID in record. The object might have been deleted and then recreated`);
        pod = { name: bname, uid };
        const nodeName = asString(asObject(p['spec'])?.['nodeName']);
        const n = nodeName ? ctx.store.get('/nodes', '', nodeName) : undefined;
        if (n && nodeName) node = { name: nodeName, uid: asString(asObject(n['metadata'])?.['uid']) ?? '' };
      } else if (kind === 'Node') {
        const n = ctx.store.get('/nodes', '', bname);
        if (!n) throw notFound('', 'nodes', bname);
        node = { name: bname, uid: asString(asObject(n['metadata'])?.['uid']) ?? '' };
      } else {
        throw badRequest(`boundObjectRef.kind: Unsupported value: ${JSON.stringify(kind)}: supported values: "Pod", "Node"`);
      }
    }
    const saUid = asString(asObject(sa['metadata'])?.['uid']) ?? '';
    const issued = await ctx.tokens.issue({ namespace: ns, serviceAccount: { name: saName, uid: saUid }, ...(pod ? { pod } : {}), ...(node ? { node } : {}) }, audiences, expirationSeconds);
    send(res, 201, {
      kind: 'TokenRequest',
      apiVersion: 'authentication.k8s.io/v1',
      metadata: { name: saName, namespace: ns, creationTimestamp: nowRfc3339() },
      spec: { audiences: audiences.length ? audiences : [TOKEN_ISSUER], expirationSeconds, boundObjectRef: bound ?? null },
      status: { token: issued.token, expirationTimestamp: issued.expirationTimestamp },
    });
  }

  return (req, res) => {
    handle(req, res).catch((e: unknown) => {
      if (e instanceof StatusError) {
        sendError(res, e);
        return;
      }
      ctx.log(`apiserver: internal error on ${req.method ?? ''} ${req.url ?? ''}: ${(e as Error)?.stack ?? String(e)}`);
      sendError(res, internalError(e));
    });
  };
}
