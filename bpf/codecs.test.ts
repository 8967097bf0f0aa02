/** Codecs: the generated file matches the objects' BTF (drift fails), and byte order is right. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { addr, addressToBytes, bytesToAddress, encodeValue, ip4, perCpuCodec, port } from './codec.ts';
import { mapSpecs, nmLb4KeyCodec, nmLbBeCodec, nmSock4KeyCodec, nmSvcFlags } from './codecs.generated.ts';
import { countCpuList } from './cpus.ts';
import { BpfCodecError } from './errors.ts';
import { GENERATED_PATH, generateCodecs, listBuiltObjects, readBtf } from './gen-codecs.ts';

const here = dirname(fileURLToPath(import.meta.url));

describe('codecs.generated.ts vs BTF', () => {
  it('is what the generator produces from the freshly built objects (run `make -C bpf codecs` on drift)', () => {
    // Unprivileged: clang builds, bpftool only parses the files.
    execFileSync('make', ['-s', '-C', here], { stdio: 'pipe' });
    const fresh = generateCodecs(listBuiltObjects());
    const committed = readFileSync(GENERATED_PATH, 'utf8');
    assert.equal(committed, fresh, 'bpf/codecs.generated.ts is stale: run `make -C bpf codecs`');
  });

  it('gives every map codec the key and value size the BTF states', () => {
    const sizes = new Map<string, { key: number; value: number }>();
    for (const obj of listBuiltObjects()) {
      const types = readBtf(obj);
      for (const t of types.values()) {
        if (t.kind !== 'VAR') continue;
        const def = types.get(t.type_id ?? -1);
        const member = (n: string) => def?.members?.find((m) => m.name === n);
        const sizeOf = (id: number): number => {
          const x = types.get(id);
          if (!x) return -1;
          if (x.kind === 'TYPEDEF' || x.kind === 'CONST' || x.kind === 'VOLATILE') return sizeOf(x.type_id ?? -1);
          return x.size ?? -1;
        };
        const k = member('key');
        const v = member('value');
        if (!k || !v) continue;
        sizes.set(t.name, { key: sizeOf(types.get(k.type_id)?.type_id ?? -1), value: sizeOf(types.get(v.type_id)?.type_id ?? -1) });
      }
    }
    for (const [name, spec] of Object.entries(mapSpecs)) {
      assert.deepEqual({ key: spec.key.size, value: spec.value.size }, sizes.get(name), name);
    }
  });

  it('exports the C enums', () => {
    assert.equal(nmSvcFlags.NM_SVC_F_AFFINITY, 1);
    assert.equal(nmSvcFlags.NM_SVC_F_L7, 4);
  });
});

describe('byte order and padding', () => {
  it('writes addresses and ports in network order, the rest in host order, padding as zero', () => {
    const buf = Buffer.alloc(8, 0xee);
    nmLb4KeyCodec.encode({ addr: '10.96.0.10', port: 80, proto: 6 }, buf, 0);
    assert.equal(buf.toString('hex'), '0a60000a00500600');
    assert.deepEqual(nmLb4KeyCodec.decode(buf, 0), { addr: '10.96.0.10', port: 80, proto: 6 });
  });

  it('stores backend addresses as IPv4-mapped IPv6 and renders them back as dotted quads', () => {
    const b = encodeValue(nmLbBeCodec, { addr: '10.0.0.7', port: 8080, proto: 6, flags: 1, svc_id: 3 });
    assert.equal(b.subarray(0, 16).toString('hex'), '00000000000000000000ffff0a000007');
    assert.equal(b.readUInt16BE(16), 8080);
    assert.equal(b.readUInt32LE(20), 3);
    assert.deepEqual(nmLbBeCodec.decode(b, 0), { addr: '10.0.0.7', port: 8080, proto: 6, flags: 1, svc_id: 3 });
  });

  it('round-trips 64-bit cookies', () => {
    const k = { cookie: 0xfedcba9876543210n, addr: '192.168.1.2', port: 53 };
    assert.deepEqual(nmSock4KeyCodec.decode(encodeValue(nmSock4KeyCodec, k), 0), k);
  });

  it('parses and formats IPv6 (RFC 5952)', () => {
    for (const [input, out] of [
      ['fd00::1', 'fd00::1'],
      ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
      ['::', '::'],
      ['::1', '::1'],
      ['fe80::', 'fe80::'],
      ['2001:db8:1:2:3:4:5:6', '2001:db8:1:2:3:4:5:6'],
      ['::ffff:10.1.2.3', '10.1.2.3'],
      ['64:ff9b::192.0.2.33', '64:ff9b::c000:221'],
    ] as const) {
      assert.equal(bytesToAddress(addressToBytes(input), 0), out, input);
      assert.equal(addr.decode(encodeValue(addr, input), 0), out, input);
    }
  });

  it('rejects values that do not fit, naming the field', () => {
    assert.throws(() => encodeValue(nmLb4KeyCodec, { addr: '10.0.0.256', port: 1, proto: 6 }), (e: unknown) => e instanceof BpfCodecError && /nm_lb4_key\.addr/.test(e.message) && e.code === 'NM_ERR_BPF_CODEC');
    assert.throws(() => encodeValue(port, 70000), BpfCodecError);
    assert.throws(() => encodeValue(ip4, 'fd00::1'), BpfCodecError);
    assert.throws(() => encodeValue(nmLb4KeyCodec, { addr: '10.0.0.1', port: 1 } as never), /proto: missing/);
  });

  it('lays per-CPU values out 8-byte aligned, one per CPU', () => {
    const c = perCpuCodec(port, 3);
    assert.equal(c.size, 24);
    const b = encodeValue(c, [1, 2, 3]);
    assert.equal(b.readUInt16BE(8), 2);
    assert.deepEqual(c.decode(b, 0), [1, 2, 3]);
    assert.throws(() => encodeValue(c, [1, 2]), /needs 3 elements/);
  });

  it('counts kernel CPU lists', () => {
    assert.equal(countCpuList('0-1\n'), 2);
    assert.equal(countCpuList('0-3,8-11'), 8);
    assert.equal(countCpuList('0'), 1);
  });
});

describe('IPv4 parsing', () => {
  it('accepts dotted quads and refuses everything else', () => {
    for (const good of ['0.0.0.0', '255.255.255.255', '10.96.0.10', '1.2.3.4']) assert.equal(ip4.decode(encodeValue(ip4, good), 0), good);
    for (const bad of ['1.2.3', '1.2.3.4.5', '256.1.1.1', '01.2.3.4', '1..2.3', '1.2.3.4 ', 'a.b.c.d', '', '1.2.3.-4']) {
      assert.throws(() => encodeValue(ip4, bad), BpfCodecError, bad);
      assert.throws(() => encodeValue(addr, bad), BpfCodecError, bad);
    }
  });
});
