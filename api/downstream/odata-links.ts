import { Transform, pipeline, type Readable, type TransformCallback } from 'node:stream';
import { BadGatewayError } from '../errors.js';

/** The new value of a link, or undefined to drop the member that carries it. */
export type LinkRewrite = (link: string) => string | undefined;

/** `@odata.nextLink`, `@odata.deltaLink`, `members@odata.nextLink`, and OData 4.01's `@nextLink`. */
const LINK_MEMBER = /@(?:odata\.)?(?:nextLink|deltaLink)$/;
/** The rest of the collection the response is a page of. */
const NEXT_PAGE_MEMBER = /^@(?:odata\.)?nextLink$/;
/** Longest member name examined, and longest link value accepted. */
const MAX_NAME_BYTES = 4096;
const MAX_LINK_BYTES = 64 * 1024;

/**
 * Streams a JSON body through, rewriting the value of every link member (see LINK_MEMBER) with
 * `rewrite`, or dropping the member when `rewrite` has no value for it. The top-level
 * `@odata.nextLink` is the rest of the collection: when it has to be dropped, the caller could
 * not complete the collection through us, so that is a 502 (BadGatewayError), never a silently
 * shortened result.
 *
 * Output is held back until that member has been decided, the body has ended, or `holdBytes`
 * are waiting, so the 502 can still be the response status; resolves with the stream to send
 * then. A failure after that point destroys the stream (the caller sees a broken response).
 * Bodies that are not well-formed JSON pass through as they are.
 */
export function rewriteODataLinks(body: Readable, rewrite: LinkRewrite, holdBytes = 1024 * 1024): Promise<Readable> {
  const rewriter = new LinkRewriter(rewrite, holdBytes);
  pipeline(body, rewriter, () => undefined);
  return rewriter.ready;
}

interface Container {
  object: boolean;
  /** The first member was dropped: the next comma at this level goes too. */
  swallowComma: boolean;
}

type Phase = 'beforeName' | 'name' | 'afterName' | 'value';

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;
const isWhitespace = (byte: number) => byte === 0x20 || byte === 0x09 || byte === 0x0a || byte === 0x0d;

class LinkRewriter extends Transform {
  readonly ready: Promise<Readable>;
  private resolveReady!: (stream: Readable) => void;
  private rejectReady!: (error: Error) => void;
  private committed = false;
  private held: Buffer[] = [];
  private heldBytes = 0;

  private readonly stack: Container[] = [];
  private inString = false;
  private escaped = false;
  private expectName = false;
  /** Bytes of a member that may be rewritten or dropped, from its comma (or its name) on. */
  private member: number[] | undefined;
  private memberHasComma = false;
  private phase: Phase = 'beforeName';
  private name: number[] = [];
  private linkName = '';
  private linkTopLevel = false;
  private valueStart = 0;

  constructor(
    private readonly rewrite: LinkRewrite,
    private readonly holdBytes: number,
  ) {
    super();
    this.ready = new Promise((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    this.ready.catch(() => undefined);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    try {
      this.scan(chunk);
      done();
    } catch (error) {
      done(error as Error);
    }
  }

  override _flush(done: TransformCallback): void {
    if (this.member) this.output(Buffer.from(this.member));
    this.member = undefined;
    this.commit();
    done();
  }

  override _destroy(error: Error | null, done: (error?: Error | null) => void): void {
    if (!this.committed) this.rejectReady(error ?? new BadGatewayError('The downstream API broke off its answer.'));
    done(error);
  }

  private commit(): void {
    if (this.committed) return;
    this.committed = true;
    for (const buffer of this.held) this.push(buffer);
    this.held = [];
    this.resolveReady(this);
  }

  private output(buffer: Buffer): void {
    if (buffer.length === 0) return;
    if (this.committed) {
      this.push(buffer);
      return;
    }
    this.held.push(buffer);
    this.heldBytes += buffer.length;
    if (this.heldBytes > this.holdBytes) this.commit();
  }

  private scan(chunk: Buffer): void {
    let runStart = 0;
    let i = 0;
    while (i < chunk.length) {
      const byte = chunk[i] as number;
      if (this.member) {
        if (this.memberByte(byte)) {
          i += 1;
          if (!this.member) runStart = i;
        } else {
          runStart = i; // not part of a member after all: scanned again as ordinary JSON
        }
        continue;
      }
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (byte === BACKSLASH) this.escaped = true;
        else if (byte === QUOTE) this.inString = false;
        i += 1;
        continue;
      }
      const top = this.stack.at(-1);
      if (byte === 0x7b /* { */ || byte === 0x5b /* [ */) {
        this.stack.push({ object: byte === 0x7b, swallowComma: false });
        this.expectName = byte === 0x7b;
      } else if (byte === 0x7d /* } */ || byte === 0x5d /* ] */) {
        this.stack.pop();
        this.expectName = false;
      } else if (byte === COMMA && top?.object) {
        this.output(chunk.subarray(runStart, i));
        runStart = i + 1;
        this.expectName = true;
        if (top.swallowComma) top.swallowComma = false;
        else this.startMember([COMMA], true, 'beforeName');
        i += 1;
        continue;
      } else if (byte === QUOTE && top?.object && this.expectName) {
        this.output(chunk.subarray(runStart, i));
        this.expectName = false;
        this.startMember([QUOTE], false, 'name');
        i += 1;
        runStart = i;
        continue;
      } else if (byte === QUOTE) {
        this.inString = true;
      }
      i += 1;
    }
    if (!this.member) this.output(chunk.subarray(runStart));
  }

  private startMember(bytes: number[], hasComma: boolean, phase: Phase): void {
    this.member = bytes;
    this.memberHasComma = hasComma;
    this.phase = phase;
    this.name = [];
    this.escaped = false;
  }

  /** One byte of a held member. False: the byte does not belong to it (the member was let go). */
  private memberByte(byte: number): boolean {
    const member = this.member as number[];
    switch (this.phase) {
      case 'beforeName':
        if (isWhitespace(byte)) break;
        if (byte === QUOTE) {
          this.phase = 'name';
          this.expectName = false;
          break;
        }
        this.letGo();
        return false;
      case 'name':
        if (this.escaped) this.escaped = false;
        else if (byte === BACKSLASH) this.escaped = true;
        else if (byte === QUOTE) {
          member.push(byte);
          const name = memberName(this.name);
          if (!LINK_MEMBER.test(name)) {
            this.letGo();
            return true;
          }
          this.linkName = name;
          this.linkTopLevel = this.stack.length === 1;
          this.phase = 'afterName';
          return true;
        }
        this.name.push(byte);
        if (this.name.length > MAX_NAME_BYTES) {
          // Too long to be a link member: the rest of the name is scanned as an ordinary string.
          member.push(byte);
          this.inString = true;
          this.letGo();
          return true;
        }
        break;
      case 'afterName':
        if (isWhitespace(byte) || byte === COLON) break;
        if (byte === QUOTE) {
          this.valueStart = member.length;
          this.phase = 'value';
          break;
        }
        this.letGo();
        return false;
      case 'value':
        if (this.escaped) this.escaped = false;
        else if (byte === BACKSLASH) this.escaped = true;
        else if (byte === QUOTE) {
          member.push(byte);
          this.decide();
          return true;
        }
        if (member.length - this.valueStart > MAX_LINK_BYTES) throw new BadGatewayError('The downstream API sent a link too long to check.');
        break;
    }
    member.push(byte);
    return true;
  }

  /** The held bytes are ordinary JSON after all: send them on. */
  private letGo(): void {
    const member = this.member as number[];
    this.member = undefined;
    this.output(Buffer.from(member));
  }

  private decide(): void {
    const member = this.member as number[];
    this.member = undefined;
    let link: string | undefined;
    try {
      link = JSON.parse(Buffer.from(member.slice(this.valueStart)).toString('utf8')) as string;
    } catch {
      link = undefined;
    }
    const replacement = link === undefined ? undefined : this.rewrite(link);
    const nextPage = this.linkTopLevel && NEXT_PAGE_MEMBER.test(this.linkName);
    if (replacement !== undefined) {
      this.output(Buffer.concat([Buffer.from(member.slice(0, this.valueStart)), Buffer.from(JSON.stringify(replacement))]));
    } else if (nextPage) {
      const error = new BadGatewayError('The downstream API sent a next-page link this API cannot follow.');
      if (!this.committed) this.rejectReady(error);
      throw error;
    } else if (!this.memberHasComma) {
      const top = this.stack.at(-1);
      if (top) top.swallowComma = true;
    }
    if (nextPage) this.commit();
  }
}

/** A member name as a JSON reader sees it: `"\u0040odata.nextLink"` is `@odata.nextLink` too. */
function memberName(bytes: number[]): string {
  const text = Buffer.from(bytes).toString('utf8');
  if (!text.includes('\\')) return text;
  try {
    return JSON.parse(`"${text}"`) as string;
  } catch {
    return text; // not well-formed JSON: passed through as it is
  }
}

/**
 * The rewrite for links in a response from `downstreamBaseUrl` (to `requestUrl`): a link to the
 * downstream itself becomes the same path and query under `proxyBaseUrl` (our URL for that
 * downstream); a link anywhere else has no rewrite (it is dropped).
 */
export function proxyLinkRewrite(downstreamBaseUrl: string, requestUrl: URL, proxyBaseUrl: string): LinkRewrite {
  const base = new URL(downstreamBaseUrl);
  const basePath = downstreamBaseUrl.slice(base.origin.length);
  const proxyBase = new URL(proxyBaseUrl);
  return (link) => {
    if (!URL.canParse(link, requestUrl.href)) return undefined;
    const url = new URL(link, requestUrl);
    if (url.origin !== base.origin || url.username || url.password) return undefined;
    // From the path on, the link as the downstream wrote it: the URL parser would re-encode the query.
    const authority = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i.exec(link);
    const rest = (authority ? link.slice(authority[0].length) : `${url.pathname}${url.search}`).replace(/#.*$/, '');
    if (!rest.startsWith(`${basePath}/`)) return undefined;
    const rewritten = `${proxyBaseUrl}${rest.slice(basePath.length)}`;
    // Dot segments (`..`, `%2e%2e`, after a backslash) resolve at the caller as at the downstream:
    // only a link that stays under our base (and so under the downstream's) is passed on.
    const resolved = URL.canParse(rewritten) ? new URL(rewritten) : undefined;
    return resolved?.origin === proxyBase.origin && resolved.pathname.startsWith(`${proxyBase.pathname}/`) ? rewritten : undefined;
  };
}
