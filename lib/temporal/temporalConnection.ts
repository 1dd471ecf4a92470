import { readFileSync } from 'node:fs';
import { Connection, type ConnectionOptions } from '@temporalio/client';
import type { NativeConnection, NativeConnectionOptions, TLSConfig } from '@temporalio/worker';
import { UsageError } from '../shared/errors';

// How the CLI, `atelier worker` and the in-process workers reach an external Temporal server: one
// set of options built from the environment variables Temporal's own CLI and SDKs read
// (environment configuration: TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS,
// TEMPORAL_TLS_CLIENT_CERT_PATH|DATA, TEMPORAL_TLS_CLIENT_KEY_PATH|DATA,
// TEMPORAL_TLS_SERVER_CA_CERT_PATH|DATA, TEMPORAL_TLS_SERVER_NAME, TEMPORAL_GRPC_META_*), so a run
// can target a TLS cluster or Temporal Cloud with the settings an operator already has. Both the
// client Connection and the workers' NativeConnection are built from the same object, so they can
// never disagree. The API key is only ever handed to the SDK: it is not logged, not stored, and
// not part of `describe()`.
// Not read: TOML profiles (TEMPORAL_CONFIG_FILE / TEMPORAL_PROFILE) and
// TEMPORAL_TLS_DISABLE_HOST_VERIFICATION (the TypeScript SDK cannot turn verification off; asking
// for it is refused rather than ignored).

export interface TemporalTarget {
  address: string;
  namespace: string;
  /** undefined: plaintext. */
  tls: TLSConfig | undefined;
  apiKey: string | undefined;
  metadata: Record<string, string>;
}

function flag(env: NodeJS.ProcessEnv, name: string): boolean | undefined {
  const raw = env[name]?.trim().toLowerCase();
  if (!raw) return undefined;
  if (raw === 'true' || raw === '1') return true;
  if (raw === 'false' || raw === '0') return false;
  throw new UsageError(`${name}=${env[name]} is not a boolean: use true or false`);
}

/** PEM bytes from NAME_PATH (a file) or NAME_DATA (the PEM text itself); never both. */
function pem(env: NodeJS.ProcessEnv, name: string): Buffer | undefined {
  const path = env[`${name}_PATH`];
  const data = env[`${name}_DATA`];
  if (path && data) throw new UsageError(`set ${name}_PATH or ${name}_DATA, not both`);
  if (data) return Buffer.from(data);
  if (!path) return undefined;
  try {
    return readFileSync(path);
  } catch (err) {
    throw new UsageError(`${name}_PATH=${path} cannot be read: ${(err as Error).message}`);
  }
}

/** gRPC metadata from TEMPORAL_GRPC_META_SOME_HEADER=value (header `some-header`), as the CLI does. */
function grpcMetadata(env: NodeJS.ProcessEnv): Record<string, string> {
  const prefix = 'TEMPORAL_GRPC_META_';
  const metadata: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith(prefix) || !value) continue;
    const header = name.slice(prefix.length).toLowerCase().replace(/_/g, '-');
    if (header === 'authorization') throw new UsageError('set the API key with TEMPORAL_API_KEY, not TEMPORAL_GRPC_META_AUTHORIZATION');
    metadata[header] = value;
  }
  return metadata;
}

/**
 * The connection settings in `env` for `address` (TEMPORAL_ADDRESS unless given). TLS is on when
 * TEMPORAL_TLS=true, or when an API key or any TLS file/name is set, unless TEMPORAL_TLS=false.
 */
export function temporalTargetFromEnv(env: NodeJS.ProcessEnv = process.env, address = env.TEMPORAL_ADDRESS): TemporalTarget {
  if (!address) throw new UsageError('TEMPORAL_ADDRESS is not set');
  if (flag(env, 'TEMPORAL_TLS_DISABLE_HOST_VERIFICATION')) {
    throw new UsageError(
      'TEMPORAL_TLS_DISABLE_HOST_VERIFICATION is not supported by the TypeScript SDK: give the server CA (TEMPORAL_TLS_SERVER_CA_CERT_PATH) and, if its name differs from the address, TEMPORAL_TLS_SERVER_NAME',
    );
  }
  const apiKey = env.TEMPORAL_API_KEY || undefined;
  const crt = pem(env, 'TEMPORAL_TLS_CLIENT_CERT');
  const key = pem(env, 'TEMPORAL_TLS_CLIENT_KEY');
  if (Boolean(crt) !== Boolean(key)) {
    throw new UsageError('mutual TLS needs both TEMPORAL_TLS_CLIENT_CERT_PATH (or _DATA) and TEMPORAL_TLS_CLIENT_KEY_PATH (or _DATA)');
  }
  const ca = pem(env, 'TEMPORAL_TLS_SERVER_CA_CERT');
  const serverName = env.TEMPORAL_TLS_SERVER_NAME || undefined;
  const explicit = flag(env, 'TEMPORAL_TLS');
  const implied = Boolean(apiKey || crt || ca || serverName);
  let tls: TLSConfig | undefined;
  if (explicit ?? implied) {
    tls = {
      ...(crt && key ? { clientCertPair: { crt, key } } : {}),
      ...(ca ? { serverRootCACertificate: ca } : {}),
      ...(serverName ? { serverNameOverride: serverName } : {}),
    };
  } else if (explicit === false && (crt || ca || serverName)) {
    throw new UsageError('TEMPORAL_TLS=false, yet TLS certificates or a server name are set: remove one or the other');
  }
  return { address, namespace: env.TEMPORAL_NAMESPACE || 'default', tls, apiKey, metadata: grpcMetadata(env) };
}

/** A plaintext target (the project's own dev servers). */
export function plainTarget(address: string, namespace: string): TemporalTarget {
  return { address, namespace, tls: undefined, apiKey: undefined, metadata: {} };
}

/** What a log line may say about a target: never the key, nor certificate contents. */
export function describeTarget(t: TemporalTarget): string {
  const parts = [t.address, `namespace ${t.namespace}`];
  if (t.tls) {
    parts.push(
      `TLS${t.tls.clientCertPair ? ' with client certificate' : ''}${t.tls.serverRootCACertificate ? ', own CA' : ''}${t.tls.serverNameOverride ? `, server name ${t.tls.serverNameOverride}` : ''}`,
    );
  }
  if (t.apiKey) parts.push('API key');
  return parts.join(', ');
}

export function clientConnectionOptions(t: TemporalTarget): ConnectionOptions {
  return {
    address: t.address,
    ...(t.tls ? { tls: t.tls } : {}),
    ...(t.apiKey ? { apiKey: t.apiKey } : {}),
    ...(Object.keys(t.metadata).length ? { metadata: t.metadata } : {}),
  };
}

export function nativeConnectionOptions(t: TemporalTarget): NativeConnectionOptions {
  return {
    address: t.address,
    ...(t.tls ? { tls: t.tls } : {}),
    ...(t.apiKey ? { apiKey: t.apiKey } : {}),
    ...(Object.keys(t.metadata).length ? { metadata: t.metadata } : {}),
  };
}

export function connectClient(t: TemporalTarget): Promise<Connection> {
  return Connection.connect(clientConnectionOptions(t));
}

/** The workers' connection; @temporalio/worker loads here, not with this module (the CLI's start-up). */
export async function connectNative(t: TemporalTarget): Promise<NativeConnection> {
  const { NativeConnection } = await import('@temporalio/worker');
  return NativeConnection.connect(nativeConnectionOptions(t));
}
