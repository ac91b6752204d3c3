import { once } from 'node:events';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { request } from 'undici';

interface RecordedRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
}

export interface RecordingProxy {
  /** `http://127.0.0.1:<port>`: use it as GRAPH_BASE_URL. */
  url: string;
  requests: RecordedRequest[];
  close(): Promise<void>;
}

/**
 * A plain-HTTP reverse proxy in front of an HTTPS origin (the emulator's Graph) that remembers
 * what each request carried, so a test can see the headers the service sent downstream.
 */
export async function startRecordingProxy(target: string): Promise<RecordingProxy> {
  const requests: RecordedRequest[] = [];
  const server = createServer((req, res) => {
    requests.push({ method: req.method ?? '', path: req.url ?? '', headers: req.headers });
    const { host: _host, connection: _connection, ...headers } = req.headers;
    request(`${target}${req.url ?? ''}`, { method: req.method as 'GET', headers, body: req.method === 'GET' ? null : req })
      .then(async (upstream) => {
        res.writeHead(upstream.statusCode, upstream.headers as Record<string, string | string[]>);
        for await (const chunk of upstream.body) res.write(chunk);
        res.end();
      })
      .catch(() => res.writeHead(502).end());
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
