/**
 * A TCP proxy that holds every new connection until the test releases it: a Redis that is slow
 * to become reachable for one instance (a new pod's first connection through DNS, TLS and AUTH to
 * a managed Redis), without touching the connections other instances already have.
 *
 *   const proxy = await startHoldingTcpProxy({ backendPort: redis.port });
 *   REDIS_URL=proxy.url            // redis://127.0.0.1:<port>: connects, but nothing answers yet
 *   proxy.release();               // held connections reach the backend; later ones go at once
 *   await proxy.close();
 *
 * Bytes a client sends while held wait in the proxy and are delivered in order.
 */
import { once } from 'node:events';
import { createServer, Socket, type AddressInfo } from 'node:net';

export interface HoldingTcpProxy {
  readonly port: number;
  readonly url: string;
  /** Connections accepted so far. */
  readonly connections: number;
  release(): void;
  close(): Promise<void>;
}

export async function startHoldingTcpProxy(options: { backendPort: number; backendHost?: string }): Promise<HoldingTcpProxy> {
  const host = options.backendHost ?? '127.0.0.1';
  const sockets = new Set<Socket>();
  const held: Socket[] = [];
  let holding = true;
  let accepted = 0;

  const track = (socket: Socket): void => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
  };
  const pass = (client: Socket): void => {
    if (client.destroyed) return;
    const backend = new Socket();
    track(backend);
    backend.connect(options.backendPort, host, () => {
      client.pipe(backend);
      backend.pipe(client);
      client.resume();
    });
    backend.once('close', () => client.destroy());
    client.once('close', () => backend.destroy());
  };
  const server = createServer((client) => {
    accepted++;
    track(client);
    client.pause();
    if (holding) held.push(client);
    else pass(client);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    get connections() {
      return accepted;
    },
    release() {
      holding = false;
      for (const client of held.splice(0)) pass(client);
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
