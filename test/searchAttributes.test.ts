import { Client } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureSearchAttributes, setQueueRateLimit, type Session } from '../cli/session';
import { UsageError } from '../lib/shared/errors';
import { ALL_SEARCH_ATTRIBUTES } from '../lib/shared/searchAttributes';
import { startTestServer } from './helpers/temporalEnv';

// ensureSearchAttributes against a real dev server that has none of Atelier's attributes
// registered (TestWorkflowEnvironment starts it without the project's --search-attribute flags),
// i.e. the situation of any external server. The PostgreSQL cluster test covers the same path on
// the store that exposed the enum bug.

let env: TestWorkflowEnvironment;

beforeAll(async () => {
  env = (await startTestServer()).env;
});
afterAll(async () => env?.teardown());

describe('ensureSearchAttributes', () => {
  it('registers Keyword attributes as KEYWORD and Int attributes as INT, then finds them all', async () => {
    const client = new Client({ connection: env.connection, namespace: 'default' });
    const lines: string[] = [];
    expect(await ensureSearchAttributes(client, 'default', (l) => lines.push(l))).toBe(true);
    expect(lines.join('\n')).toMatch(/registered search attributes AtelierRunId/);
    const { customAttributes } = await env.connection.operatorService.listSearchAttributes({ namespace: 'default' });
    const { IndexedValueType } = temporal.api.enums.v1;
    for (const key of ALL_SEARCH_ATTRIBUTES) {
      expect([key.name, customAttributes?.[key.name]]).toEqual([
        key.name,
        key.type === 'INT' ? IndexedValueType.INDEXED_VALUE_TYPE_INT : IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
      ]);
    }
    // Second time: nothing to add, nothing said.
    lines.length = 0;
    expect(await ensureSearchAttributes(client, 'default', (l) => lines.push(l))).toBe(true);
    expect(lines).toEqual([]);
  });

  it('reports a real failure instead of swallowing it', async () => {
    const client = new Client({ connection: env.connection, namespace: 'no-such-namespace' });
    const failure = await ensureSearchAttributes(client, 'no-such-namespace').catch((err: unknown) => err);
    expect(failure).toBeInstanceOf(UsageError);
    expect((failure as Error).message).toMatch(/no-such-namespace/);
  });
});

describe('setQueueRateLimit', () => {
  // Only the fields setQueueRateLimit reads, with a real client on the real server.
  const sessionFor = (namespace: string) =>
    ({ client: new Client({ connection: env.connection, namespace }), namespace }) as Pick<Session, 'client' | 'namespace'> as Session;

  it('sets the limit on a server that supports it', async () => {
    expect(await setQueueRateLimit(sessionFor('default'), 'api-openai', 2)).toBe(true);
  });

  it('reports a real failure instead of returning "unsupported"', async () => {
    const failure = await setQueueRateLimit(sessionFor('no-such-namespace'), 'api-openai', 2).catch((err: unknown) => err);
    expect(failure).toBeInstanceOf(UsageError);
    expect((failure as Error).message).toMatch(/api-openai/);
  });
});
