import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { createEnvelope, EncryptionKeyError, EnvelopeError, parseEncryptionKeys } from '../../cache/index.js';

const k1 = randomBytes(32);
const k2 = randomBytes(32);

function expectEnvelopeError(fn: () => unknown, reason: EnvelopeError['reason']): void {
  try {
    fn();
  } catch (err) {
    expect(err).to.be.instanceOf(EnvelopeError);
    expect((err as EnvelopeError).code).to.equal('ENVELOPE_INVALID');
    expect((err as EnvelopeError).reason).to.equal(reason);
    return;
  }
  expect.fail('expected an EnvelopeError');
}

describe('cache: parseEncryptionKeys', () => {
  it('parses kid:base64 pairs in order (standard and URL-safe base64, spaces tolerated)', () => {
    const keys = parseEncryptionKeys(` new:${k1.toString('base64')} , old:${k2.toString('base64url')}`);
    expect(keys.map((k) => k.id)).to.deep.equal(['new', 'old']);
    expect(keys[0]?.key.equals(k1)).to.equal(true);
    expect(keys[1]?.key.equals(k2)).to.equal(true);
  });

  const bad: Array<[string, string, string, number]> = [
    ['an empty list', '', 'empty', 0],
    ['a trailing comma', `a:${k1.toString('base64')},`, 'element 2', 2],
    ['an element without a colon', `a:${k1.toString('base64')},nocolon`, 'element 2', 2],
    ['a kid with a space', `bad kid:${k1.toString('base64')}`, 'element 1', 1],
    ['a duplicate kid', `a:${k1.toString('base64')},a:${k2.toString('base64')}`, 'element 2 (kid "a"): duplicate', 2],
    ['a 16-byte key', `a:${randomBytes(16).toString('base64')}`, 'must be 32 bytes, got 16', 1],
    ['a key that is not base64', `a:not*base64!`, 'not base64', 1],
  ];
  for (const [label, text, message, element] of bad) {
    it(`rejects ${label}, naming the element and never the key`, () => {
      try {
        parseEncryptionKeys(text);
        expect.fail('expected an error');
      } catch (err) {
        expect(err).to.be.instanceOf(EncryptionKeyError);
        const error = err as EncryptionKeyError;
        expect(error.code).to.equal('CACHE_ENCRYPTION_KEY_INVALID');
        expect(error.element).to.equal(element);
        expect(error.message).to.contain(message);
        // Never echo key material.
        for (const material of [k1.toString('base64'), k2.toString('base64'), 'not*base64!']) expect(error.message).not.to.contain(material);
      }
    });
  }
});

describe('cache: envelope (AES-256-GCM)', () => {
  const writer = createEnvelope([{ id: 'k1', key: k1 }]);
  const l2Key = 'obo:abc:user.read';
  const plaintext = JSON.stringify({ v: { accessToken: 'eyJhbGciOi.payload.sig' }, e: 1 });

  it('round-trips and carries version 1 and the key id in clear, no plaintext', () => {
    const sealed = writer.seal(plaintext, l2Key);
    expect(sealed[0]).to.equal(1);
    expect(sealed.subarray(2, 2 + (sealed[1] ?? 0)).toString()).to.equal('k1');
    expect(sealed.toString('latin1')).not.to.contain('eyJ');
    expect(writer.open(sealed, l2Key)).to.equal(plaintext);
  });

  it('uses a fresh IV per value', () => {
    expect(writer.seal(plaintext, l2Key).equals(writer.seal(plaintext, l2Key))).to.equal(false);
  });

  it('binds the L2 key (AAD): the value does not open under another key', () => {
    expectEnvelopeError(() => writer.open(writer.seal(plaintext, l2Key), 'obo:other'), 'auth_failed');
  });

  it('refuses tampered ciphertext, tag, header and truncated values', () => {
    const sealed = writer.seal(plaintext, l2Key);
    for (const index of [sealed.length - 1, sealed.length - 20, 20]) {
      const copy = Buffer.from(sealed);
      copy[index] = (copy[index] ?? 0) ^ 0x01;
      expectEnvelopeError(() => writer.open(copy, l2Key), 'auth_failed');
    }
    const renamed = Buffer.from(sealed);
    renamed[3] = 0x32; // kid "k1" -> "k2": unknown
    expectEnvelopeError(() => writer.open(renamed, l2Key), 'unknown_kid');
    expectEnvelopeError(() => writer.open(sealed.subarray(0, 20), l2Key), 'malformed');
  });

  it('refuses garbage, unknown versions and plaintext envelopes', () => {
    expectEnvelopeError(() => writer.open(Buffer.from('garbage'), l2Key), 'malformed');
    expectEnvelopeError(() => writer.open(Buffer.alloc(0), l2Key), 'malformed');
    expectEnvelopeError(() => writer.open(createEnvelope('off').seal(plaintext, l2Key), l2Key), 'plaintext_refused');
  });

  it('rotation: [new, old] opens values sealed with [old]; a reader without the kid does not', () => {
    const sealedOld = writer.seal(plaintext, l2Key);
    const rotated = createEnvelope([
      { id: 'k2', key: k2 },
      { id: 'k1', key: k1 },
    ]);
    expect(rotated.open(sealedOld, l2Key)).to.equal(plaintext);
    const sealedNew = rotated.seal(plaintext, l2Key);
    expect(sealedNew.subarray(2, 4).toString()).to.equal('k2');
    expectEnvelopeError(() => writer.open(sealedNew, l2Key), 'unknown_kid');
  });

  it('encryption off stores version 0 and refuses encrypted values', () => {
    const off = createEnvelope('off');
    const sealed = off.seal(plaintext, l2Key);
    expect(sealed[0]).to.equal(0);
    expect(off.open(sealed, l2Key)).to.equal(plaintext);
    expectEnvelopeError(() => off.open(writer.seal(plaintext, l2Key), l2Key), 'encrypted_refused');
  });

  it('rejects keys that are not 32 bytes', () => {
    expect(() => createEnvelope([{ id: 'x', key: randomBytes(16) }])).to.throw(EncryptionKeyError);
    expect(() => createEnvelope([])).to.throw(EncryptionKeyError);
  });
});
