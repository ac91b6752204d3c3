import { once } from 'node:events';
import { connect, createServer, type Http2Server } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import Koa from 'koa';
import { ApiError } from '../../api/errors.js';
import { requestBody, type RequestBodyState } from '../../middleware/request-body.js';

const LIMIT = 1024;

/**
 * The limit counts the bytes actually read. Over HTTP/1.1 a body has a Content-Length (Node
 * holds it to that) or is chunked (411), but an HTTP/2 request may send a body with no length
 * at all: only counting stops it.
 */
describe('requestBody: one reader, one limit, counted as read', () => {
  let server: Http2Server;
  let origin: string;
  let reads = 0;

  before(async () => {
    const app = new Koa<RequestBodyState>();
    app.use(async (ctx, next) => {
      try {
        await next();
      } catch (error) {
        if (!(error instanceof ApiError)) throw error;
        ctx.status = error.status;
        ctx.body = { error: error.code };
      }
    });
    app.use(requestBody(LIMIT));
    app.use(async (ctx) => {
      reads += 1;
      const first = await ctx.state.readBody();
      const second = await ctx.state.readBody();
      ctx.body = { length: first.length, same: first === second };
    });
    const handle = app.callback();
    server = createServer((req, res) => void handle(req, res));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  /** POSTs `size` bytes in chunks over HTTP/2, with no content-length. */
  async function post(size: number): Promise<{ status: number; body: Record<string, unknown> }> {
    const session = connect(origin);
    try {
      const stream = session.request({ ':method': 'POST', ':path': '/', 'content-type': 'application/octet-stream' });
      for (let sent = 0; sent < size; sent += 100) stream.write(Buffer.alloc(Math.min(100, size - sent), 0x61));
      stream.end();
      const [headers] = (await once(stream, 'response')) as [Record<string, string | number>];
      const chunks: Buffer[] = [];
      for await (const chunk of stream) chunks.push(chunk as Buffer);
      return { status: Number(headers[':status']), body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown> };
    } finally {
      session.close();
    }
  }

  it('reads a body of exactly the limit, once: every later call gets the same Buffer', async () => {
    expect(await post(LIMIT)).to.deep.equal({ status: 200, body: { length: LIMIT, same: true } });
  });

  it('a body with no length one byte over the limit is a 413', async () => {
    reads = 0;
    expect(await post(LIMIT + 1)).to.deep.equal({ status: 413, body: { error: 'payload_too_large' } });
    expect(reads, 'refused while reading').to.equal(1);
  });
});
