/** Output of the plugin: kubectl-style tables (default), JSON (`-o json`), and durations/ages for humans. */

/** Output formats every subcommand supports. */
export type OutputFormat = 'table' | 'json' | 'wide';

/** A kubectl-style table: upper-case headers, columns padded to the widest cell plus three spaces. */
export function formatTable(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]! + 3))).join('').trimEnd();
  return [line(headers.map((h) => h.toUpperCase())), ...rows.map(line)].join('\n') + '\n';
}

/** JSON as the plugin prints it: two-space indent, trailing newline. */
export function formatJson(v: unknown): string {
  return `${JSON.stringify(v, null, 2)}\n`;
}

/** A short age like kubectl's: 45s, 3m12s, 5h, 12d. Negative (clock skew) reads as 0s. */
export function formatAge(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 10) return `${m}m${s % 60}s`;
  if (m < 180) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h`;
  return `${Math.floor(h / 24)}d`;
}

/** Milliseconds of a date-ish value (Date, RFC 3339 string), or undefined. */
export function toMillis(v: unknown): number | undefined {
  if (v instanceof Date) return v.getTime();
  if (typeof v === 'string' && v !== '') {
    const t = Date.parse(v);
    return Number.isNaN(t) ? undefined : t;
  }
  return undefined;
}

/** Indents every non-empty line by `by` (tables nested under a heading). */
export function indent(text: string, by = '  '): string {
  return text.replace(/^(?=.)/gm, by);
}
