/** A minimal protobuf wire-format reader: enough to walk OTLP messages field by field without generated code. */
// Why not protobufjs: the receiver needs one message family (ExportTraceServiceRequest); a 100-line reader
// keeps the sandbox free of a code generator and lets the decoder tolerate unknown fields as the spec demands.
import { OtlpReceiverError } from './errors.ts';

/** Wire types of the protobuf encoding. */
export const WIRE = { varint: 0, fixed64: 1, lengthDelimited: 2, startGroup: 3, endGroup: 4, fixed32: 5 } as const;

/** One field as read from the wire; `bytes` for length-delimited, `value` for numeric wire types. */
export type WireField =
  | { field: number; wire: 0; value: bigint }
  | { field: number; wire: 1; value: bigint; raw: Uint8Array }
  | { field: number; wire: 2; bytes: Uint8Array }
  | { field: number; wire: 5; value: number; raw: Uint8Array };

/** Iterates the fields of one encoded message; `context` names the message in errors. */
export function* readFields(buf: Uint8Array, context: string): Generator<WireField> {
  let pos = 0;
  const need = (n: number, what: string): void => {
    if (pos + n > buf.length) {
      throw new OtlpReceiverError('NM_ERR_OTLP_PROTOBUF_TRUNCATED', `${context}: ${what} needs ${n} bytes at offset ${pos} but the message has ${buf.length}: truncated body or not protobuf (send Content-Type: application/json for OTLP/JSON)`);
    }
  };
  const varint = (what: string): bigint => {
    let result = 0n;
    let shift = 0n;
    for (let i = 0; i < 10; i++) {
      need(1, what);
      const b = buf[pos++]!;
      result |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return result;
      shift += 7n;
    }
    throw new OtlpReceiverError('NM_ERR_OTLP_PROTOBUF_TRUNCATED', `${context}: ${what} is a varint longer than 10 bytes at offset ${pos}: corrupt message`);
  };
  while (pos < buf.length) {
    const tag = varint('field tag');
    const field = Number(tag >> 3n);
    const wire = Number(tag & 7n);
    if (field === 0) throw new OtlpReceiverError('NM_ERR_OTLP_PROTOBUF_WIRE_TYPE', `${context}: field number 0 at offset ${pos}: corrupt message`);
    switch (wire) {
      case WIRE.varint:
        yield { field, wire: 0, value: varint(`field ${field}`) };
        break;
      case WIRE.fixed64: {
        need(8, `field ${field} (fixed64)`);
        const raw = buf.subarray(pos, pos + 8);
        pos += 8;
        yield { field, wire: 1, value: new DataView(raw.buffer, raw.byteOffset, 8).getBigUint64(0, true), raw };
        break;
      }
      case WIRE.lengthDelimited: {
        const len = Number(varint(`field ${field} length`));
        need(len, `field ${field} (length-delimited)`);
        const bytes = buf.subarray(pos, pos + len);
        pos += len;
        yield { field, wire: 2, bytes };
        break;
      }
      case WIRE.fixed32: {
        need(4, `field ${field} (fixed32)`);
        const raw = buf.subarray(pos, pos + 4);
        pos += 4;
        yield { field, wire: 5, value: new DataView(raw.buffer, raw.byteOffset, 4).getUint32(0, true), raw };
        break;
      }
      default:
        // Groups (3, 4) are deprecated and never used by OTLP; anything else is not protobuf.
        throw new OtlpReceiverError('NM_ERR_OTLP_PROTOBUF_WIRE_TYPE', `${context}: field ${field} has wire type ${wire}, which OTLP never uses: corrupt message or not protobuf`);
    }
  }
}

/** Decodes UTF-8 bytes of a string field. */
export function readString(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8');
}

/** Lower-case hex of a bytes field (trace and span IDs). */
export function readHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

/** A varint reinterpreted as a signed 64-bit integer (protobuf int64 uses two's complement, not zigzag). */
export function toInt64(v: bigint): bigint {
  return BigInt.asIntN(64, v);
}
