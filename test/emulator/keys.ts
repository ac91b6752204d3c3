// The token-signing key ring: RSA-2048 keys with self-signed certificates, kid == x5t
// (base64url SHA-1 of the certificate, as Entra does), rotation and retirement.
import { createHash, createPrivateKey, createPublicKey, generateKeyPair, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import { selfSignedCertificate } from './certs.js';
import type { SignerKeys } from './jwt.js';
import type { KeyChoice, KeyControl, KeyInfo } from './types.js';

const generateKeyPairAsync = promisify(generateKeyPair);

export interface SigningKey {
  kid: string;
  x5tS256: string;
  privateKey: KeyObject;
  publicKey: KeyObject;
  publicPem: string;
  certDer: Buffer;
  /** Tenant whose concrete issuer this key is bound to; undefined = shared key (issuer template). */
  boundTenant?: string;
}

export interface PublicJwk {
  kty: 'RSA';
  use: 'sig';
  kid: string;
  x5t: string;
  n: string;
  e: string;
  x5c: string[];
  cloud_instance_name: string;
  issuer: string;
}

async function generateSigningKey(boundTenant?: string): Promise<SigningKey> {
  const pair = await generateKeyPairAsync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  const certDer = await selfSignedCertificate(pair, 'accounts.accesscontrol.windows.net');
  const key: SigningKey = {
    kid: createHash('sha1').update(certDer).digest('base64url'),
    x5tS256: createHash('sha256').update(certDer).digest('base64url'),
    privateKey: createPrivateKey(pair.privateKey),
    publicKey: createPublicKey(pair.publicKey),
    publicPem: pair.publicKey,
    certDer,
  };
  if (boundTenant) key.boundTenant = boundTenant;
  return key;
}

interface RingState {
  current: string;
  previous: string;
  published: string[];
}

export class KeyRing {
  private readonly byKid = new Map<string, SigningKey>();
  private state: RingState;
  private readonly initial: RingState;
  private readonly otherCurves = new Map<string, KeyObject>();
  /** Generated in the background so rotate() is quick (tests race JWKS cooldowns against it). */
  private standby: Promise<SigningKey>;

  private constructor(
    private readonly roles: { current: SigningKey; previous: SigningKey; unpublished: SigningKey; msa: SigningKey },
    /** Signs the Graph tokens /token issues; never published (Graph tokens are opaque). */
    readonly graphKey: SigningKey,
  ) {
    for (const key of [roles.current, roles.previous, roles.unpublished, roles.msa, graphKey]) this.byKid.set(key.kid, key);
    this.initial = {
      current: roles.current.kid,
      previous: roles.previous.kid,
      published: [roles.current.kid, roles.previous.kid, roles.msa.kid],
    };
    this.state = structuredClone(this.initial);
    this.standby = this.nextStandby();
  }

  static async create(msaTenantId: string): Promise<KeyRing> {
    const [current, previous, unpublished, msa, graph] = await Promise.all([
      generateSigningKey(),
      generateSigningKey(),
      generateSigningKey(),
      generateSigningKey(msaTenantId),
      generateSigningKey(),
    ]);
    return new KeyRing({ current, previous, unpublished, msa }, graph);
  }

  get current(): SigningKey {
    return this.mustGet(this.state.current);
  }

  resolve(choice: KeyChoice = 'current'): SigningKey {
    switch (choice) {
      case 'current':
        return this.current;
      case 'previous':
        return this.mustGet(this.state.previous);
      case 'unpublished':
        return this.roles.unpublished;
      case 'msa':
        return this.roles.msa;
      default:
        return this.mustGet(choice);
    }
  }

  find(kid: unknown): SigningKey | undefined {
    return typeof kid === 'string' ? this.byKid.get(kid) : undefined;
  }

  isPublished(kid: string): boolean {
    return this.state.published.includes(kid);
  }

  signerKeys(key: SigningKey): SignerKeys {
    return {
      rsa: key.privateKey,
      rsaPublicPem: key.publicPem,
      ec: (curve) => this.otherKey(curve, () => generateKeyPairSync('ec', { namedCurve: curve }).privateKey),
      ed25519: () => this.otherKey('ed25519', () => generateKeyPairSync('ed25519').privateKey),
    };
  }

  /** The published keys as Entra lists them; `issuerFor` maps a key to its JWK `issuer`. */
  jwks(issuerFor: (key: SigningKey) => string): { keys: PublicJwk[] } {
    return {
      keys: this.state.published.map((kid) => {
        const key = this.mustGet(kid);
        const jwk = key.publicKey.export({ format: 'jwk' });
        return {
          kty: 'RSA',
          use: 'sig',
          kid: key.kid,
          x5t: key.kid,
          n: String(jwk.n),
          e: String(jwk.e),
          x5c: [key.certDer.toString('base64')],
          cloud_instance_name: 'microsoftonline.com',
          issuer: issuerFor(key),
        };
      }),
    };
  }

  reset(): void {
    this.state = structuredClone(this.initial);
  }

  control(issuerFor: (key: SigningKey) => string): KeyControl {
    // Object-literal getters get their own `this`; this arrow keeps the ring's, for the live state.
    const live = (): RingState => this.state;
    return {
      get currentKid() {
        return live().current;
      },
      get previousKid() {
        return live().previous;
      },
      unpublishedKid: this.roles.unpublished.kid,
      msaKid: this.roles.msa.kid,
      publishedKids: () => [...this.state.published],
      list: () =>
        [...this.byKid.values()]
          .filter((key) => key !== this.graphKey)
          .map((key): KeyInfo => ({
            kid: key.kid,
            x5t: key.kid,
            published: this.isPublished(key.kid),
            current: key.kid === this.state.current,
            issuer: issuerFor(key),
          })),
      rotate: async () => {
        const pending = this.standby;
        this.standby = this.nextStandby();
        const fresh = await pending;
        this.byKid.set(fresh.kid, fresh);
        this.state.previous = this.state.current;
        this.state.current = fresh.kid;
        this.state.published = [fresh.kid, ...this.state.published];
        return fresh.kid;
      },
      retire: (kid: string) => {
        this.mustGet(kid);
        this.state.published = this.state.published.filter((k) => k !== kid);
      },
      publish: (kid: string) => {
        const key = this.mustGet(kid);
        if (key === this.graphKey) throw new Error('emulator: the Graph token key is never published');
        if (!this.isPublished(kid)) this.state.published = [...this.state.published, kid];
      },
      publicKeyPem: (choice: KeyChoice) => this.resolve(choice).publicPem,
    };
  }

  private nextStandby(): Promise<SigningKey> {
    const next = generateSigningKey();
    next.catch(() => undefined); // surfaced by the rotate() that awaits it
    return next;
  }

  private otherKey(name: string, make: () => KeyObject): KeyObject {
    let key = this.otherCurves.get(name);
    if (!key) {
      key = make();
      this.otherCurves.set(name, key);
    }
    return key;
  }

  private mustGet(kid: string): SigningKey {
    const key = this.byKid.get(kid);
    if (!key) throw new Error(`emulator: unknown key '${kid}'`);
    return key;
  }
}
