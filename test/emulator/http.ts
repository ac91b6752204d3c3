// Minimal HTTPS plumbing shared by the Entra and Graph servers: one context per request,
// JSON/text writers, bounded body reading and a completion hook for the request log.
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface HttpContext {
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  method: string;
  path: string;
  requestId: string;
  startedAt: number;
  /** Fields a route adds to its request-log entry. */
  note: {
    formParams?: string[];
    scope?: string;
    grantType?: string;
    clientRequestId?: string;
    error?: string;
    fault?: string;
  };
}

export type Handler = (ctx: HttpContext) => Promise<void>;

export interface RunningServer {
  server: Server;
  origin: string;
  close(): Promise<void>;
}

class BodyTooLargeError extends Error {}

export async function listenHttps(
  options: { port: number; key: string; cert: string },
  handler: Handler,
  onFinished: (ctx: HttpContext) => void,
): Promise<RunningServer> {
  const server = createServer({ key: options.key, cert: options.cert }, (req, res) => {
    const url = new URL(req.url ?? '/', 'https://127.0.0.1');
    const ctx: HttpContext = {
      req,
      res,
      url,
      method: req.method ?? 'GET',
      path: url.pathname,
      requestId: randomUUID(),
      startedAt: Date.now(),
      note: {},
    };
    let finished = false;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      onFinished(ctx);
    };
    res.on('finish', finish);
    res.on('close', finish);
    handler(ctx).catch((error: unknown) => {
      if (!res.headersSent) {
        const status = error instanceof BodyTooLargeError ? 413 : 500;
        sendJson(ctx, status, { error: status === 413 ? 'request_too_large' : 'emulator_error', error_description: String(error) });
      } else {
        res.destroy();
      }
    });
  });
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  return {
    server,
    origin: `https://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

export function sendJson(ctx: HttpContext, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  ctx.res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    ...headers,
    'Content-Length': String(Buffer.byteLength(text)),
  });
  ctx.res.end(text);
}

export function sendText(ctx: HttpContext, status: number, contentType: string, text: string, headers: Record<string, string> = {}): void {
  ctx.res.writeHead(status, { ...headers, 'Content-Type': contentType, 'Content-Length': String(Buffer.byteLength(text)) });
  ctx.res.end(text);
}

/** Writes a large body in chunks, honouring back-pressure (a "streamed" download). */
export async function sendStream(
  ctx: HttpContext,
  status: number,
  headers: Record<string, string>,
  body: Buffer,
  chunkSize = 64 * 1024,
): Promise<void> {
  ctx.res.writeHead(status, { ...headers, 'Content-Length': String(body.length) });
  for (let offset = 0; offset < body.length; offset += chunkSize) {
    if (ctx.res.destroyed) return;
    const ok = ctx.res.write(body.subarray(offset, offset + chunkSize));
    if (!ok) await new Promise<void>((resolve) => ctx.res.once('drain', () => resolve()));
  }
  ctx.res.end();
}

export async function readBody(req: IncomingMessage, limit = 1024 * 1024): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const buffer = Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk));
    size += buffer.length;
    if (size > limit) throw new BodyTooLargeError(`body larger than ${limit} bytes`);
    chunks.push(buffer);
  }
  return Buffer.concat(chunks);
}

export function header(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name.toLowerCase()];
  return Array.isArray(value) ? value[0] : value;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
