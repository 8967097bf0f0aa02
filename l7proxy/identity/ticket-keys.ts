/** Session-ticket keys per trust bundle (see session-binding.ts for why). */
import { randomBytes } from 'node:crypto';
import type { TrustBundle } from './trust-bundle.ts';

const keysByBundle = new WeakMap<TrustBundle, Buffer>();

/**
 * The 48-byte session-ticket key material (name, HMAC and AES keys) for `bundle`: random, made once per bundle
 * object and never derived from anything a peer sees. Bundles are immutable, so a rotation is a new object.
 */
export function ticketKeysFor(bundle: TrustBundle): Buffer {
  let keys = keysByBundle.get(bundle);
  if (!keys) {
    keys = randomBytes(48);
    keysByBundle.set(bundle, keys);
  }
  return keys;
}

