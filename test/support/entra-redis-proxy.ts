/**
 * A stand-in for Azure Cache for Redis / Azure Managed Redis with Microsoft Entra
 * authentication, in front of a plain `redis-server` (which has no idea of Entra):
 *
 *   const proxy = await startEntraRedisProxy({ backendPort: redis.port, jwksUrl, issuer });
 *   REDIS_URL=redis://127.0.0.1:${proxy.port}  REDIS_AUTH=entra
 *
 * What it does, as Azure does:
 * - `AUTH <user> <token>` succeeds only for an RS256 JWT signed by a key of `jwksUrl`, with
 *   `aud` https://redis.azure.com, unexpired, whose `oid` equals `<user>`; else `-WRONGPASS`.
 * - Every other command before a successful AUTH gets `-NOAUTH`.
 * - A connection whose token expires is closed (Azure drops it; a client must re-AUTH before).
 * - A new AUTH on an open connection replaces the token and its expiry.
 * - AUTH on a RESP2 connection in subscribe mode is refused, as Redis refuses it there, so a
 *   subscriber has to reconnect with a fresh token instead.
 *
 * Written here because no stock server behaves like this; it speaks just enough RESP to count
 * replies, so answers it makes itself stay in order with the server's.
 */
import { createServer, Socket, type Server } from 'node:net';
import { createRemoteJWKSet, jwtVerify } from 'jose';

const REDIS_AUDIENCE = 'https://redis.azure.com';

export interface EntraRedisProxyOptions {
  backendPort: number;
  backendHost?: string;
  /** The emulator's JWKS (`${authorityHost}/${tenant}/discovery/v2.0/keys`). */
  jwksUrl: string;
  /** Accepted issuers of Redis tokens (v1 form: https://sts.windows.net/<tid>/). */
  issuers: string[];
}

interface EntraRedisProxyStats {
  connections: number;
  authAccepted: number;
  authRefused: number;
  /** Commands refused with NOAUTH. */
  unauthenticated: number;
  /** Connections closed because their token expired. */
  closedExpired: number;
}

export interface EntraRedisProxy {
  readonly port: number;
  readonly url: string;
  readonly stats: EntraRedisProxyStats;
  /** Users (`oid`s) that authenticated, in order. */
  readonly users: string[];
  /** Closes every client connection now (a failover, a maintenance event). */
  dropAll(): void;
  close(): Promise<void>;
}

interface ClientConnection {
  client: Socket;
  backend: Socket;
  /** Replies owed to the client, in order: a reply of the server's, or one of ours. */
  owed: (Buffer | 'backend')[];
  subscribed: boolean;
  expiry?: NodeJS.Timeout;
  authed: boolean;
  /** Serialises AUTH checks (they are async) with the commands after them. */
  queue: Promise<void>;
}

export async function startEntraRedisProxy(options: EntraRedisProxyOptions): Promise<EntraRedisProxy> {
  const keys = createRemoteJWKSet(new URL(options.jwksUrl), { cooldownDuration: 0 });
  const stats: EntraRedisProxyStats = { connections: 0, authAccepted: 0, authRefused: 0, unauthenticated: 0, closedExpired: 0 };
  const users: string[] = [];
  const open = new Set<ClientConnection>();

  async function verify(user: string, token: string): Promise<number | undefined> {
    try {
      const { payload } = await jwtVerify(token, keys, { audience: REDIS_AUDIENCE, issuer: options.issuers, algorithms: ['RS256'] });
      if (payload.oid !== user || typeof payload.exp !== 'number') return undefined;
      return payload.exp * 1000;
    } catch {
      return undefined;
    }
  }

  function answer(connection: ClientConnection, reply: Buffer): void {
    connection.owed.push(reply);
    flush(connection);
  }

  /** Writes our own replies at the head of the queue (those owed before them have been sent). */
  function flush(connection: ClientConnection): void {
    while (connection.owed.length > 0 && connection.owed[0] !== 'backend') {
      const head = connection.owed.shift();
      if (head instanceof Buffer) connection.client.write(head);
    }
  }

  async function handle(connection: ClientConnection, command: string[], raw: Buffer): Promise<void> {
    const name = (command[0] ?? '').toUpperCase();
    if (name === 'AUTH') {
      if (connection.subscribed) {
        return answer(
          connection,
          resp("-ERR Can't execute 'auth': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"),
        );
      }
      const [user, token] = command.length === 3 ? [command[1] ?? '', command[2] ?? ''] : ['default', command[1] ?? ''];
      const expiresAt = await verify(user, token);
      if (expiresAt === undefined) {
        stats.authRefused += 1;
        return answer(connection, resp('-WRONGPASS invalid username-password pair or user is disabled.'));
      }
      stats.authAccepted += 1;
      users.push(user);
      connection.authed = true;
      if (connection.expiry) clearTimeout(connection.expiry);
      connection.expiry = setTimeout(
        () => {
          stats.closedExpired += 1;
          connection.client.destroy();
        },
        Math.max(0, expiresAt - Date.now()),
      );
      connection.expiry.unref();
      return answer(connection, resp('+OK'));
    }
    if (!connection.authed && name !== 'QUIT') {
      stats.unauthenticated += 1;
      return answer(connection, resp('-NOAUTH Authentication required.'));
    }
    if (['SUBSCRIBE', 'PSUBSCRIBE', 'SSUBSCRIBE'].includes(name)) connection.subscribed = true;
    // In subscribe mode the server pushes messages no command asked for: nothing to count.
    if (!connection.subscribed) connection.owed.push('backend');
    connection.backend.write(raw);
  }

  const server: Server = createServer((client) => {
    stats.connections += 1;
    const backend = new Socket();
    const connection: ClientConnection = { client, backend, owed: [], subscribed: false, authed: false, queue: Promise.resolve() };
    open.add(connection);
    backend.connect(options.backendPort, options.backendHost ?? '127.0.0.1');
    const end = (): void => {
      if (connection.expiry) clearTimeout(connection.expiry);
      open.delete(connection);
      client.destroy();
      backend.destroy();
    };
    client.on('error', end).on('close', end);
    backend.on('error', end).on('close', end);

    let pending = Buffer.alloc(0);
    client.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      for (;;) {
        const parsed = parseCommand(pending);
        if (!parsed) break;
        const raw = pending.subarray(0, parsed.end);
        pending = pending.subarray(parsed.end);
        connection.queue = connection.queue.then(() => handle(connection, parsed.args, Buffer.from(raw)));
      }
    });

    let replies = Buffer.alloc(0);
    backend.on('data', (chunk: Buffer) => {
      if (connection.subscribed && connection.owed.length === 0) {
        client.write(chunk);
        return;
      }
      replies = Buffer.concat([replies, chunk]);
      for (;;) {
        const end = replyEnd(replies, 0);
        if (end < 0) break;
        client.write(replies.subarray(0, end));
        replies = replies.subarray(end);
        if (connection.owed[0] === 'backend') connection.owed.shift();
        flush(connection);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;

  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    stats,
    users,
    dropAll() {
      for (const connection of open) connection.client.destroy();
    },
    async close() {
      for (const connection of open) connection.client.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function resp(line: string): Buffer {
  return Buffer.from(`${line}\r\n`);
}

/** One command from a client: a RESP array of bulk strings, or an inline command. */
function parseCommand(buffer: Buffer): { args: string[]; end: number } | undefined {
  if (buffer.length === 0) return undefined;
  if (buffer[0] !== 0x2a /* '*' */) {
    const eol = buffer.indexOf('\r\n');
    if (eol < 0) return undefined;
    return { args: buffer.subarray(0, eol).toString('utf8').trim().split(/\s+/), end: eol + 2 };
  }
  const head = buffer.indexOf('\r\n');
  if (head < 0) return undefined;
  const count = Number(buffer.subarray(1, head).toString());
  let offset = head + 2;
  const args: string[] = [];
  for (let i = 0; i < count; i += 1) {
    const eol = buffer.indexOf('\r\n', offset);
    if (eol < 0 || buffer[offset] !== 0x24 /* '$' */) return undefined;
    const length = Number(buffer.subarray(offset + 1, eol).toString());
    const start = eol + 2;
    if (buffer.length < start + length + 2) return undefined;
    args.push(buffer.subarray(start, start + length).toString('utf8'));
    offset = start + length + 2;
  }
  return { args, end: offset };
}

/** Where the RESP2 reply starting at `offset` ends, or -1 while it is incomplete. */
function replyEnd(buffer: Buffer, offset: number): number {
  if (offset >= buffer.length) return -1;
  const eol = buffer.indexOf('\r\n', offset);
  if (eol < 0) return -1;
  const type = String.fromCharCode(buffer[offset] ?? 0);
  const size = Number(buffer.subarray(offset + 1, eol).toString());
  switch (type) {
    case '+':
    case '-':
    case ':':
      return eol + 2;
    case '$':
      if (size < 0) return eol + 2;
      return buffer.length >= eol + 2 + size + 2 ? eol + 2 + size + 2 : -1;
    case '*': {
      if (size < 0) return eol + 2;
      let end = eol + 2;
      for (let i = 0; i < size; i += 1) {
        end = replyEnd(buffer, end);
        if (end < 0) return -1;
      }
      return end;
    }
    default:
      return eol + 2;
  }
}
