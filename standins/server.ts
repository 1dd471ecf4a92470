import type { IncomingMessage, ServerResponse } from 'node:http';

// Plumbing the stand-ins share: JSON replies, request bodies, and OpenAI's error body (which
// OpenAI-compatible servers answer with too). Kept apart from any one stand-in so that a stand-in
// and the modules it mounts (openaiBatch.ts) can all import it without a cycle.

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

export async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** OpenAI's error body: `{error: {message, type, param, code}}`. */
export function openAIErrorBody(message: string, code: string | null = null, param: string | null = null) {
  return { error: { message, type: 'invalid_request_error', param, code } };
}
