/**
 * The string `code` an error carries, if any: ours (`ApiError.code`), Node's (`ECONNRESET`),
 * undici's (`UND_ERR_HEADERS_TIMEOUT`). For labels and decisions, never the message.
 */
export function errorCode(error: unknown): string | undefined {
  if (typeof error !== 'object' || error === null || !('code' in error)) return undefined;
  return typeof error.code === 'string' ? error.code : undefined;
}
