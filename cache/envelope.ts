import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { EncryptionKeyError, EnvelopeError } from './errors.js';

export interface EncryptionKey {
  id: string;
  /** 32 bytes (AES-256). */
  key: Buffer;
}

/**
 * Seals values for L2 and opens them again. The L2 key is bound as additional authenticated
 * data, so a value copied under another key does not open.
 *
 * Sealed layout (binary):
 *   v1 (AES-256-GCM): 0x01 | kidLength (1 byte) | kid (UTF-8) | iv (12) | ciphertext | tag (16)
 *                     AAD = the header (0x01, kidLength, kid) followed by the UTF-8 L2 key
 *   v0 (encryption off): 0x00 | plaintext
 * A reader with keys refuses v0 and a reader with encryption off refuses v1: a value is never
 * taken in a form the reader was not configured for.
 */
export interface Envelope {
  readonly encrypted: boolean;
  seal(plaintext: string, l2Key: string): Buffer;
  /** The plaintext, or throws EnvelopeError (the caller treats it as a miss). */
  open(sealed: Buffer, l2Key: string): string;
}

const V0_PLAINTEXT = 0x00;
const V1_AES_256_GCM = 0x01;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const KID_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;
const BASE64_PATTERN = /^[A-Za-z0-9+/_-]+={0,2}$/;

/**
 * Parses CACHE_ENCRYPTION_KEYS: "kid:base64key,kid2:base64key" (standard or URL-safe base64
 * of 32 bytes). The first key encrypts; all of them decrypt. Errors name the element by
 * position (and its kid once that is known to be well-formed), never the key material.
 */
export function parseEncryptionKeys(text: string): EncryptionKey[] {
  if (text.trim() === '') throw new EncryptionKeyError(0, 'CACHE_ENCRYPTION_KEYS is empty');
  const seen = new Set<string>();
  return text.split(',').map((raw, index) => {
    const element = index + 1;
    const item = raw.trim();
    const colon = item.indexOf(':');
    if (colon < 0) throw new EncryptionKeyError(element, `CACHE_ENCRYPTION_KEYS element ${element}: expected kid:base64key`);
    const id = item.slice(0, colon).trim();
    const encoded = item.slice(colon + 1).trim();
    if (!KID_PATTERN.test(id)) {
      throw new EncryptionKeyError(element, `CACHE_ENCRYPTION_KEYS element ${element}: the key id must be 1-64 characters of A-Z a-z 0-9 . _ -`);
    }
    const where = `CACHE_ENCRYPTION_KEYS element ${element} (kid "${id}")`;
    if (seen.has(id)) throw new EncryptionKeyError(element, `${where}: duplicate key id`);
    seen.add(id);
    if (!BASE64_PATTERN.test(encoded)) throw new EncryptionKeyError(element, `${where}: the key is not base64`);
    const key = Buffer.from(encoded, 'base64');
    if (key.length !== 32) throw new EncryptionKeyError(element, `${where}: the key must be 32 bytes, got ${key.length}`);
    return { id, key };
  });
}

export function createEnvelope(keys: readonly EncryptionKey[] | 'off'): Envelope {
  return keys === 'off' ? new PlaintextEnvelope() : new AesGcmEnvelope(keys);
}

class AesGcmEnvelope implements Envelope {
  readonly encrypted = true;
  private readonly current: { key: Buffer; header: Buffer };
  private readonly byId: Map<string, Buffer>;

  constructor(keys: readonly EncryptionKey[]) {
    const first = keys[0];
    if (!first) throw new EncryptionKeyError(0, 'at least one encryption key is required');
    this.byId = new Map();
    for (const [index, { id, key }] of keys.entries()) {
      if (!KID_PATTERN.test(id)) throw new EncryptionKeyError(index + 1, `encryption key ${index + 1}: invalid key id`);
      if (key.length !== 32) throw new EncryptionKeyError(index + 1, `encryption key ${index + 1} (kid "${id}"): the key must be 32 bytes`);
      if (!this.byId.has(id)) this.byId.set(id, key);
    }
    this.current = { key: first.key, header: header(first.id) };
  }

  seal(plaintext: string, l2Key: string): Buffer {
    const { key, header: head } = this.current;
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', key, iv);
    cipher.setAAD(aad(head, l2Key));
    const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return Buffer.concat([head, iv, body, cipher.getAuthTag()]);
  }

  open(sealed: Buffer, l2Key: string): string {
    if (sealed.length < 2) throw new EnvelopeError('malformed', 'value too short');
    if (sealed[0] === V0_PLAINTEXT) throw new EnvelopeError('plaintext_refused', 'unencrypted value refused (encryption is on)');
    if (sealed[0] !== V1_AES_256_GCM) throw new EnvelopeError('malformed', 'unknown envelope version');
    const kidLength = sealed[1] ?? 0;
    const headLength = 2 + kidLength;
    if (kidLength === 0 || sealed.length < headLength + IV_BYTES + TAG_BYTES) throw new EnvelopeError('malformed', 'value too short');
    const kid = sealed.toString('utf8', 2, headLength);
    const key = this.byId.get(kid);
    if (!key) throw new EnvelopeError('unknown_kid', 'value sealed with a key id that is not configured');
    const iv = sealed.subarray(headLength, headLength + IV_BYTES);
    const tag = sealed.subarray(sealed.length - TAG_BYTES);
    const body = sealed.subarray(headLength + IV_BYTES, sealed.length - TAG_BYTES);
    try {
      const decipher = createDecipheriv('aes-256-gcm', key, iv);
      decipher.setAAD(aad(sealed.subarray(0, headLength), l2Key));
      decipher.setAuthTag(tag);
      return Buffer.concat([decipher.update(body), decipher.final()]).toString('utf8');
    } catch {
      throw new EnvelopeError('auth_failed', 'value failed authentication (tampered, wrong key or moved to another cache key)');
    }
  }
}

class PlaintextEnvelope implements Envelope {
  readonly encrypted = false;

  seal(plaintext: string): Buffer {
    return Buffer.concat([Buffer.of(V0_PLAINTEXT), Buffer.from(plaintext, 'utf8')]);
  }

  open(sealed: Buffer): string {
    if (sealed[0] === V1_AES_256_GCM) throw new EnvelopeError('encrypted_refused', 'encrypted value refused (encryption is off)');
    if (sealed.length < 2 || sealed[0] !== V0_PLAINTEXT) throw new EnvelopeError('malformed', 'unknown envelope version');
    return sealed.toString('utf8', 1);
  }
}

function header(kid: string): Buffer {
  const id = Buffer.from(kid, 'utf8');
  return Buffer.concat([Buffer.of(V1_AES_256_GCM, id.length), id]);
}

function aad(head: Buffer, l2Key: string): Buffer {
  return Buffer.concat([head, Buffer.from(l2Key, 'utf8')]);
}
