/** The L4 report's arithmetic: paired ratios, medians, the sockmap decision, and a Markdown that states goals met or not. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type Cell, type RunMeta, type Variant, decideSockmap, median, renderMarkdown, summarize } from './l4-report.ts';

function cell(n: number, rep: number, variant: Variant, connect: number, rtt: number, extra: Partial<Cell> = {}): Cell {
  return {
    n, rep, variant, order: 0,
    crrFirst: { p50us: connect, p99us: connect * 2, errors: 0 },
    crrLast: { p50us: connect, p99us: connect * 2, errors: 0 },
    rr: { p50us: rtt, p99us: rtt * 2, rps: 1e6 / rtt, errors: 0 },
    cps: { cps: 1e6 / connect, cpuUsPerConn: connect, errors: 0 },
    ...extra,
  };
}

describe('L4 report', () => {
  it('takes medians and pairs each ratio with the baseline of the same repetition', () => {
    assert.equal(median([3, 1, 2]), 2);
    assert.equal(median([4, 1, 2, 3]), 2.5);
    // The machine drifts between repetitions; the ratio must not.
    const cells = [cell(100, 0, 'direct', 50, 20), cell(100, 0, 'iptables', 60, 20), cell(100, 1, 'direct', 100, 40), cell(100, 1, 'iptables', 120, 40)];
    const s = summarize(cells).get('100|iptables|connectP50');
    assert.equal(s?.ratio, 1.2);
    assert.equal(s?.median, 90);
  });

  it('keeps sockmap off unless round trips gain 10 %', () => {
    const same = [cell(100, 0, 'nodemesh', 50, 20), cell(100, 0, 'nodemesh-sockmap', 50, 19.5)];
    assert.equal(decideSockmap(same).enable, false);
    const faster = [cell(100, 0, 'nodemesh', 50, 20), cell(100, 0, 'nodemesh-sockmap', 50, 15)];
    assert.equal(decideSockmap(faster).enable, true);
  });

  it('renders tables and says which goals were met', () => {
    const meta: RunMeta = { date: '2026-11-21T00:00:00Z', seed: 1, reps: 1, ns: [100], kernel: 'k', cpu: 'c', cpus: 2, governor: 'g', node: '24', openssl: '3', iptables: 'iptables', nft: '1', clang: 'clang', bpftool: 'b', git: 'abc', notes: [] };
    const prog = { program: { allMs: 3, addOneMs: 0.5, deleteAllMs: 1, planMs: 1, applyMs: 2 } };
    const md = renderMarkdown(meta, [cell(100, 0, 'direct', 50, 20), cell(100, 0, 'nodemesh', 51, 20, prog), cell(100, 0, 'nodemesh-sockmap', 51, 20, prog)], [{ n: 100, samplesMs: [2, 3, 4], agentMs: [0.5], apiToEventMs: [1] }]);
    assert.match(md, /\| nodemesh \| 51\.0 \(×1\.02\)/);
    assert.match(md, /connect latency within 5 % of direct at every N: nodemesh connect p50 ratios ×1\.020 → \*\*met\*\*/);
    assert.match(md, /\| 100 \| 3\.00 \(2\.00–4\.00\) \| 1\.0 \| 0\.50 \|/);
    assert.match(md, /sockmap redirection \*\*off\*\*/);
  });
});
