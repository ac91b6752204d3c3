import { once } from 'node:events';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ReceivedRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

export interface RecordingDownstream {
  /** `http://127.0.0.1:<port>`: a downstream's baseUrl in DOWNSTREAM_APIS. */
  url: string;
  /** Every request received, with its whole body. */
  received: ReceivedRequest[];
  close(): Promise<void>;
}

/**
 * A downstream API (a DOWNSTREAM_APIS entry) that keeps every request it gets, body included,
 * and answers 200 with `reply(request)` as JSON (default `{}`): the far side of the proxy, as the
 * downstream sees it.
 */
export async function startRecordingDownstream(reply: (request: ReceivedRequest) => unknown = () => ({})): Promise<RecordingDownstream> {
  const received: ReceivedRequest[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const request = { method: req.method ?? '', path: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks) };
      received.push(request);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(reply(request)));
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    received,
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
