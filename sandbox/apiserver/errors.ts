/** Errors of the API server: Kubernetes `Status` builders for HTTP answers and NM_ERR_APISERVER_* codes. */

import type { JsonObject } from './json.ts';
import { formatValue } from './json.ts';

/** Stable codes for failures of the server itself (start-up, certificates, CRD files). */
export const ERROR_CODES = {
  certs: 'NM_ERR_APISERVER_CERTS',
  crdFile: 'NM_ERR_APISERVER_CRD_FILE',
  listen: 'NM_ERR_APISERVER_LISTEN',
  options: 'NM_ERR_APISERVER_OPTIONS',
} as const;

/** A failure of the server's own set-up, carrying one of ERROR_CODES. */
export class ApiServerError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ApiServerError';
    this.code = code;
  }
}

/** One entry of `Status.details.causes`, as the real server fills it for field errors. */
export interface StatusCause {
  reason: string; // FieldValueInvalid, FieldValueRequired, FieldValueNotSupported, ...
  message: string; // the message without the field prefix
  field: string; // e.g. spec.rules[0].timeouts.request
}

/** Details of a Status: which object the error is about and the field causes. */
export interface StatusDetails {
  name?: string;
  group?: string;
  kind?: string;
  uid?: string;
  causes?: StatusCause[];
  retryAfterSeconds?: number;
}

/** An error answered to the client as a Kubernetes `Status` body with an HTTP code. */
export class StatusError extends Error {
  readonly code: number;
  readonly reason: string;
  readonly details: StatusDetails | undefined;
  constructor(code: number, reason: string, message: string, details?: StatusDetails) {
    super(message);
    this.name = 'StatusError';
    this.code = code;
    this.reason = reason;
    this.details = details;
  }

  /** The `Status` object sent as the response body (or inside a watch ERROR event). */
  toStatus(): JsonObject {
    const status: JsonObject = {
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: this.message,
      reason: this.reason,
      code: this.code,
    };
    if (this.details) status['details'] = JSON.parse(JSON.stringify(this.details)) as JsonObject;
    return status;
  }
}

/** A qualified resource name as the real server prints it: `pods`, `deployments.apps`. */
export function qualifiedResource(group: string, plural: string): string {
  return group ? `${plural}.${group}` : plural;
}

/** 404 for a named object. */
export function notFound(group: string, plural: string, name: string): StatusError {
  return new StatusError(404, 'NotFound', `${qualifiedResource(group, plural)} "${name}" not found`, {
    name,
    ...(group ? { group } : {}),
    kind: plural,
  });
}

/** 404 for a path the server does not serve. */
export function pathNotFound(): StatusError {
  return new StatusError(404, 'NotFound', 'the server could not find the requested resource', {});
}

/** 409 AlreadyExists on create. */
export function alreadyExists(group: string, plural: string, name: string): StatusError {
  return new StatusError(409, 'AlreadyExists', `${qualifiedResource(group, plural)} "${name}" already exists`, {
    name,
    ...(group ? { group } : {}),
    kind: plural,
  });
}

/** 409 Conflict when the client's resourceVersion (or uid precondition) is stale. */
export function conflict(group: string, plural: string, name: string, why?: string): StatusError {
  const tail = why ?? 'the object has been modified; please apply your changes to the latest version and try again';
  return new StatusError(409, 'Conflict', `Operation cannot be fulfilled on ${qualifiedResource(group, plural)} "${name}": ${tail}`, {
    name,
    ...(group ? { group } : {}),
    kind: plural,
  });
}

/** 400 BadRequest. */
export function badRequest(message: string): StatusError {
  return new StatusError(400, 'BadRequest', message);
}

/** 401 Unauthorized. */
export function unauthorized(): StatusError {
  return new StatusError(401, 'Unauthorized', 'Unauthorized');
}

/** 403 Forbidden, e.g. content in a terminating namespace. */
export function forbidden(group: string, plural: string, name: string, why: string): StatusError {
  return new StatusError(403, 'Forbidden', `${qualifiedResource(group, plural)} "${name}" is forbidden: ${why}`, {
    name,
    ...(group ? { group } : {}),
    kind: plural,
  });
}

/** 405 MethodNotAllowed. */
export function methodNotAllowed(): StatusError {
  return new StatusError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
}

/** 410 Gone (reason Expired) for a resourceVersion older than the retained history. */
export function gone(message: string): StatusError {
  return new StatusError(410, 'Expired', message);
}

/** 415 UnsupportedMediaType. */
export function unsupportedMediaType(message: string): StatusError {
  return new StatusError(415, 'UnsupportedMediaType', message);
}

/** 500 InternalError: a bug on our side, reported without crashing the server. */
export function internalError(err: unknown): StatusError {
  const msg = err instanceof Error ? err.message : String(err);
  return new StatusError(500, 'InternalError', `Internal error occurred: ${msg}`);
}

/** A field error before it is wrapped into a 422: the same vocabulary as k8s.io/apimachinery's field.Error. */
export interface FieldError {
  type: 'Invalid' | 'Required' | 'NotSupported' | 'Forbidden' | 'TooLong' | 'TooMany' | 'Duplicate' | 'TypeInvalid';
  field: string;
  message: string; // the body after the type prefix, already rendered
}

const CAUSE_REASON: Record<FieldError['type'], string> = {
  Invalid: 'FieldValueInvalid',
  Required: 'FieldValueRequired',
  NotSupported: 'FieldValueNotSupported',
  Forbidden: 'FieldValueForbidden',
  TooLong: 'FieldValueTooLong',
  TooMany: 'FieldValueTooMany',
  Duplicate: 'FieldValueDuplicate',
  TypeInvalid: 'FieldValueTypeInvalid',
};

/** field.Invalid: `Invalid value: <v>: <detail>`. */
export function fieldInvalid(field: string, value: unknown, detail: string): FieldError {
  return { type: 'Invalid', field, message: `Invalid value: ${formatValue(value)}${detail ? `: ${detail}` : ''}` };
}

/** field.Required: `Required value`. */
export function fieldRequired(field: string, detail = ''): FieldError {
  return { type: 'Required', field, message: `Required value${detail ? `: ${detail}` : ''}` };
}

/** field.NotSupported: `Unsupported value: "x": supported values: "a", "b"`. */
export function fieldNotSupported(field: string, value: unknown, supported: readonly unknown[]): FieldError {
  const list = supported.map((s) => formatValue(s)).join(', ');
  return { type: 'NotSupported', field, message: `Unsupported value: ${formatValue(value)}: supported values: ${list}` };
}

/** field.Forbidden: `Forbidden: <detail>`. */
export function fieldForbidden(field: string, detail: string): FieldError {
  return { type: 'Forbidden', field, message: `Forbidden: ${detail}` };
}

/** field.TooLong. */
export function fieldTooLong(field: string, max: number): FieldError {
  return { type: 'TooLong', field, message: `Too long: may not be more than ${max} bytes` };
}

/** field.TooMany. */
export function fieldTooMany(field: string, actual: number, max: number): FieldError {
  return { type: 'TooMany', field, message: `Too many: ${actual}: must have at most ${max} items` };
}

/** field.Duplicate. */
export function fieldDuplicate(field: string, value: unknown): FieldError {
  return { type: 'Duplicate', field, message: `Duplicate value: ${formatValue(value)}` };
}

/** 422 Invalid with one cause per field error, worded like the real server so kubectl prints it the same way. */
export function invalid(group: string, kind: string, name: string, errors: readonly FieldError[]): StatusError {
  const rendered = errors.map((e) => (e.field ? `${e.field}: ${e.message}` : e.message));
  const agg = rendered.length === 1 ? rendered[0]! : `[${rendered.join(', ')}]`;
  const qualifiedKind = group ? `${kind}.${group}` : kind;
  return new StatusError(422, 'Invalid', `${qualifiedKind} "${name}" is invalid: ${agg}`, {
    name,
    ...(group ? { group } : {}),
    kind,
    causes: errors.map((e) => ({ reason: CAUSE_REASON[e.type], message: e.message, field: e.field })),
  });
}
