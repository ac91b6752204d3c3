/**
 * A TCP forwarder in front of a redis-server that can take one client's pub/sub subscriber
 * away while its command connections keep working, which no Redis command does for one client
 * alone (CLIENT PAUSE stops everybody, CLIENT KILL cannot stop the reconnect):
 *
 *   const cutter = await startSubscriberCuttingProxy(redis.port);   // REDIS_URL = cutter.url
 *   cutter.cutSubscribers();   // drop subscriber connections, and refuse their reconnects
 *   cutter.restoreSubscribers();
 *   cutter.freezeSubscribers(); // keep them open but hold back what the server sends them
 *   cutter.thawSubscribers();  // deliver what was held back, in order
 *   cutter.cutAll();           // drop every connection and refuse new ones (Redis unreachable)
 *
 * A connection counts as a subscriber once it sends SUBSCRIBE (RESP is sniffed, not parsed).
 */
import { createServer, Socket, type Server } from 'node:net';

export interface SubscriberCuttingProxy {
  readonly port: number;
  readonly url: string;
  /** Subscriber connections refused (dropped at their SUBSCRIBE) while cut. */
  readonly refusedSubscribers: number;
  cutSubscribers(): void;
  restoreSubscribers(): void;
  freezeSubscribers(): void;
  thawSubscribers(): void;
  cutAll(): void;
  restoreAll(): void;
  close(): Promise<void>;
}

interface Link {
  client: Socket;
  backend: Socket;
  subscriber: boolean;
  held: Buffer[] | undefined;
}

const SUBSCRIBE = /\r\n\$9\r\nsubscribe\r\n/i;

export async function startSubscriberCuttingProxy(backendPort: number, backendHost = '127.0.0.1'): Promise<SubscriberCuttingProxy> {
  const links = new Set<Link>();
  let subscribersCut = false;
  let frozen = false;
  let allCut = false;
  let refusedSubscribers = 0;

  const drop = (link: Link) => {
    link.client.destroy();
    link.backend.destroy();
    links.delete(link);
  };

  const server: Server = createServer((client) => {
    if (allCut) {
      client.destroy();
      return;
    }
    const backend = new Socket();
    const link: Link = { client, backend, subscriber: false, held: undefined };
    links.add(link);
    backend.connect(backendPort, backendHost);
    client.on('data', (chunk: Buffer) => {
      if (!link.subscriber && SUBSCRIBE.test(chunk.toString('latin1'))) {
        link.subscriber = true;
        if (frozen) link.held = [];
      }
      if (link.subscriber && subscribersCut) {
        refusedSubscribers += 1;
        drop(link);
        return;
      }
      backend.write(chunk);
    });
    backend.on('data', (chunk: Buffer) => {
      if (link.held) link.held.push(chunk);
      else client.write(chunk);
    });
    const end = () => drop(link);
    client.on('error', end);
    backend.on('error', end);
    client.on('close', end);
    backend.on('close', end);
  });
  server.listen(0, '127.0.0.1');
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;

  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    get refusedSubscribers() {
      return refusedSubscribers;
    },
    cutSubscribers() {
      subscribersCut = true;
      for (const link of links) if (link.subscriber) drop(link);
    },
    restoreSubscribers() {
      subscribersCut = false;
    },
    freezeSubscribers() {
      frozen = true;
      for (const link of links) if (link.subscriber) link.held ??= [];
    },
    thawSubscribers() {
      frozen = false;
      for (const link of links) {
        const held = link.held;
        link.held = undefined;
        for (const chunk of held ?? []) link.client.write(chunk);
      }
    },
    cutAll() {
      allCut = true;
      for (const link of links) drop(link);
    },
    restoreAll() {
      allCut = false;
    },
    async close() {
      for (const link of links) drop(link);
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
