// Seeded directory: tenants, app registrations, users, groups and mail. Ids are fixed so a
// dev setup (.env) survives emulator restarts; secrets and signing keys are per instance.
import { randomBytes } from 'node:crypto';
import type { UserName } from './types.js';

export const MSA_TENANT_ID = '9188040d-6c67-4c5b-b112-36a304b66dad';
export const GRAPH_APP_ID = '00000003-0000-0000-c000-000000000000';
export const GRAPH_RESOURCE = 'https://graph.microsoft.com';

/** Graph delegated scopes the emulator knows (canonical spelling). */
export const GRAPH_SCOPES = [
  'User.Read',
  'User.ReadWrite',
  'User.ReadBasic.All',
  'User.Read.All',
  'Mail.Read',
  'Mail.ReadBasic',
  'GroupMember.Read.All',
  'Directory.Read.All',
  'Calendars.Read',
  'Files.Read',
] as const;

export const DEFAULT_CONSENT = ['User.Read', 'User.ReadBasic.All', 'Mail.Read', 'GroupMember.Read.All'];

export interface Tenant {
  id: string;
  domain: string;
  displayName: string;
}

export interface DirectoryUser {
  id: string;
  tenantId: string;
  userPrincipalName: string;
  displayName: string;
  givenName: string;
  surname: string;
  jobTitle: string | null;
  department: string | null;
  officeLocation: string | null;
  mobilePhone: string | null;
  businessPhones: string[];
  preferredLanguage: string | null;
  hasPhoto: boolean;
  groupIds: string[];
  createdDateTime: string;
}

export interface DirectoryObject {
  id: string;
  kind: 'group' | 'directoryRole';
  displayName: string;
  description: string;
  mail: string | null;
}

export interface Message {
  id: string;
  subject: string;
  bodyPreview: string;
  receivedDateTime: string;
  isRead: boolean;
  importance: 'low' | 'normal' | 'high';
  hasAttachments: boolean;
  from: { name: string; address: string };
}

export interface AppRegistration {
  clientId: string;
  displayName: string;
  appIdUris: string[];
  confidential: boolean;
  secrets: { value: string; expiresAt: number }[];
  /** SHA-1 and SHA-256 thumbprints (hex) of registered certificates, with their public keys. */
  certificates: { sha1Hex: string; sha256Hex: string; certificatePem: string }[];
  exposedScopes: string[];
}

export interface Directory {
  tenant: Tenant;
  otherTenant: Tenant;
  users: DirectoryUser[];
  named: Record<UserName, DirectoryUser>;
  objects: DirectoryObject[];
  messages: Map<string, Message[]>;
  api: AppRegistration;
  spa: AppRegistration;
  otherApi: AppRegistration;
}

export function createDirectory(appCertificate: { sha1Hex: string; sha256Hex: string; certificatePem: string }): Directory {
  const tenant: Tenant = { id: 'b3d1f7c2-5e8a-4c6b-9f1d-2a7e6c4b8d90', domain: 'contoso.onmicrosoft.com', displayName: 'Contoso' };
  const otherTenant: Tenant = { id: 'e6a4c2b1-7d3f-4a9e-8c5b-1f2d3e4a5b6c', domain: 'fabrikam.onmicrosoft.com', displayName: 'Fabrikam' };

  const objects: DirectoryObject[] = [
    group('7a1e0c52-0f0b-4a44-9d7e-111111111101', 'All Company', 'Everyone at Contoso', 'allcompany@contoso.onmicrosoft.com'),
    group('7a1e0c52-0f0b-4a44-9d7e-111111111102', 'Engineering', 'Engineering team', 'engineering@contoso.onmicrosoft.com'),
    group('7a1e0c52-0f0b-4a44-9d7e-111111111103', 'API Owners', 'Owners of the middle-tier API', null),
    group('7a1e0c52-0f0b-4a44-9d7e-111111111104', 'On-call', 'Pager rotation', 'oncall@contoso.onmicrosoft.com'),
    group('7a1e0c52-0f0b-4a44-9d7e-111111111105', 'Security Champions', 'Security reviewers', null),
    group('7a1e0c52-0f0b-4a44-9d7e-111111111106', 'Book Club', 'Monthly book club', 'books@contoso.onmicrosoft.com'),
    group('7a1e0c52-0f0b-4a44-9d7e-111111111107', 'Release Managers', 'Approve releases', null),
    {
      id: '7a1e0c52-0f0b-4a44-9d7e-111111111108',
      kind: 'directoryRole',
      displayName: 'Application Developer',
      description: 'Can create application registrations.',
      mail: null,
    },
    group('8b2f1d63-1a1c-4b55-8e8f-222222222201', 'Fabrikam Everyone', 'Everyone at Fabrikam', 'everyone@fabrikam.onmicrosoft.com'),
  ];
  const contosoGroups = objects.slice(0, 8).map((o) => o.id);

  const alice = user(tenant, 'c0a1e5f2-1111-4a1a-8a1a-a11ce0000001', 'alice', 'Alice', 'Adams', 'Principal Engineer', true, contosoGroups);
  const bob = user(tenant, 'c0a1e5f2-2222-4b2b-8b2b-b0b000000002', 'bob', 'Bob', 'Brown', 'Product Manager', false, contosoGroups.slice(0, 2));
  const carol = user(otherTenant, 'c0a1e5f2-3333-4c3c-8c3c-ca2010000003', 'carol', 'Carol', 'Clark', 'Consultant', true, [
    '8b2f1d63-1a1c-4b55-8e8f-222222222201',
  ]);
  const fillers = [
    'Dana Diaz',
    'Eli Evans',
    'Fay Foster',
    'Gus Grant',
    'Hana Hill',
    'Ian Irwin',
    'Jo James',
    'Kai Kent',
    'Lia Lopez',
    'Max Moore',
  ].map((full, i) => {
    const [given = '', sur = ''] = full.split(' ');
    return user(
      tenant,
      `d1d2d3d4-${String(i).padStart(4, '0')}-4d4d-8d4d-0000000000${String(10 + i)}`,
      given.toLowerCase(),
      given,
      sur,
      null,
      false,
      [contosoGroups[0] ?? ''],
    );
  });
  const fabrikamFillers = ['Nia Nash', 'Oto Owen'].map((full, i) => {
    const [given = '', sur = ''] = full.split(' ');
    return user(
      otherTenant,
      `f1f2f3f4-${String(i).padStart(4, '0')}-4f4f-8f4f-0000000000${String(10 + i)}`,
      given.toLowerCase(),
      given,
      sur,
      null,
      false,
      [],
    );
  });

  const apiClientId = '6f1c8e2a-3b4d-4e5f-9a8b-7c6d5e4f3a2b';
  const otherApiClientId = '4c3b2a19-8f7e-4d6c-b5a4-93827160f5e4';
  return {
    tenant,
    otherTenant,
    users: [alice, bob, ...fillers, carol, ...fabrikamFillers],
    named: { alice, bob, carol },
    objects,
    messages: new Map([
      [alice.id, messages(alice, 25)],
      [bob.id, messages(bob, 3)],
    ]),
    api: {
      clientId: apiClientId,
      displayName: 'OBO Middle Tier API',
      appIdUris: [`api://${apiClientId}`],
      confidential: true,
      secrets: [
        { value: newSecret(), expiresAt: Date.now() + 365 * 86_400_000 },
        { value: newSecret(), expiresAt: Date.now() - 86_400_000 },
      ],
      certificates: [appCertificate],
      exposedScopes: ['access_as_user'],
    },
    spa: {
      clientId: '0d9e8f7a-6b5c-4d3e-a2f1-0e9d8c7b6a5f',
      displayName: 'Contoso SPA',
      appIdUris: [],
      confidential: false,
      secrets: [],
      certificates: [],
      exposedScopes: [],
    },
    otherApi: {
      clientId: otherApiClientId,
      displayName: 'Another API',
      appIdUris: ['api://other-api.contoso.example'],
      confidential: true,
      secrets: [{ value: newSecret(), expiresAt: Date.now() + 365 * 86_400_000 }],
      certificates: [],
      exposedScopes: ['Data.Read'],
    },
  };
}

function group(id: string, displayName: string, description: string, mail: string | null): DirectoryObject {
  return { id, kind: 'group', displayName, description, mail };
}

function user(
  tenant: Tenant,
  id: string,
  alias: string,
  givenName: string,
  surname: string,
  jobTitle: string | null,
  hasPhoto: boolean,
  groupIds: string[],
): DirectoryUser {
  return {
    id,
    tenantId: tenant.id,
    userPrincipalName: `${alias}@${tenant.domain}`,
    displayName: `${givenName} ${surname}`,
    givenName,
    surname,
    jobTitle,
    department: jobTitle ? 'R&D' : null,
    officeLocation: jobTitle ? '18/2111' : null,
    mobilePhone: null,
    businessPhones: jobTitle ? ['+1 425 555 0100'] : [],
    preferredLanguage: 'en-US',
    hasPhoto,
    groupIds,
    createdDateTime: '2023-03-14T09:26:53Z',
  };
}

/** A user made up from any `oid` (the `syntheticUsers` option): plain, no photo, no groups. */
export function syntheticUser(tenant: Tenant, oid: string): DirectoryUser {
  const short = oid.slice(0, 8);
  return { ...user(tenant, oid, `user-${oid}`, 'Synthetic', short, null, false, []), displayName: `Synthetic User ${short}` };
}

function messages(owner: DirectoryUser, count: number): Message[] {
  const subjects = ['Quarterly review', 'Build failed', 'Lunch?', 'Design doc feedback', 'Release notes', 'Welcome aboard'];
  const start = Date.parse('2025-01-31T12:00:00Z');
  return Array.from({ length: count }, (_, i) => ({
    // Exchange ids are long opaque base64 strings.
    id: Buffer.from(`AAMkAGI2${owner.id}:${i}`).toString('base64url'),
    subject: `${subjects[i % subjects.length] ?? 'Hello'} #${i + 1}`,
    bodyPreview: `Message ${i + 1} for ${owner.givenName}.`,
    receivedDateTime: new Date(start - i * 3_600_000).toISOString().replace('.000Z', 'Z'),
    isRead: i % 3 === 0,
    importance: i % 7 === 0 ? 'high' : 'normal',
    hasAttachments: i % 5 === 0,
    from: { name: 'Contoso Notifications', address: 'no-reply@contoso.onmicrosoft.com' },
  }));
}

/** Entra-style client secret: 40 characters with the "8Q~" marker. */
function newSecret(): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.~-';
  const pick = (n: number): string => Array.from(randomBytes(n), (b) => alphabet[b % alphabet.length]).join('');
  return `${pick(3)}8Q~${pick(34)}`;
}
