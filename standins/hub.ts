import { createHash, randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { closeServer, listenOnLoopback, readBody, sendJson } from './server';

// A stand-in Hugging Face Hub for dataset repos: the routes `huggingface_hub` (Python) and
// `@huggingface/hub` use to read and write them, with the Hub's error bodies and X-Error-Code
// headers (RepoNotFound, RevisionNotFound, EntryNotFound), so both clients raise the errors they
// raise against the real Hub. Reads: repo info (by revision), tree listing, paths-info, resolve
// (HEAD and GET with Range, X-Repo-Commit, ETag / X-Linked-Etag for large files). Writes: repo
// creation, branches, preupload (large files by extension, as the Hub's .gitattributes does),
// the Git LFS batch API with the basic transfer (upload + verify), and the NDJSON commit API.
// Not served: Xet storage (clients fall back to LFS when the server offers only "basic"; the
// Python client needs HF_HUB_DISABLE_XET=1 since it tries Xet first when hf_xet is installed).

interface StoredFile {
  content: Buffer;
  /** sha256 of a large file stored through LFS. */
  lfs?: string;
}

interface Commit {
  oid: string;
  parent?: string;
  summary: string;
  files: Map<string, StoredFile>;
  at: Date;
}

interface Repo {
  id: string;
  private: boolean;
  branches: Map<string, string>;
  commits: Map<string, Commit>;
}

export interface HubRequest {
  method: string;
  path: string;
  range?: string;
  authorized: boolean;
}

export interface HubStandin {
  baseURL: string;
  /** Every request, in order. */
  requests: HubRequest[];
  /** Bytes of file content served by `resolve`, Range requests counted by what they returned. */
  bytesServed: number;
  /** The commit a branch (default main) of a repo points at. */
  head(repo: string, branch?: string): string | undefined;
  close(): Promise<void>;
}

export interface HubStandinOptions {
  /** Tokens that authenticate, and the user each belongs to. */
  tokens?: Record<string, string>;
  port?: number;
}

const LFS_EXTENSIONS = /\.(parquet|arrow|tar|png|jpe?g|webp|gif|bin|zip|gz)$/i;
const hexId = () => randomBytes(20).toString('hex');
const gitOid = (content: Buffer) =>
  createHash('sha1')
    .update(Buffer.concat([Buffer.from(`blob ${content.length}\0`), content]))
    .digest('hex');
const sha256 = (content: Buffer) => createHash('sha256').update(content).digest('hex');

function hubError(res: ServerResponse, status: number, code: string | undefined, message: string): void {
  sendJson(res, status, { error: message }, code ? { 'x-error-code': code, 'x-error-message': message } : { 'x-error-message': message });
}

export async function startHubStandin(options: HubStandinOptions = {}): Promise<HubStandin> {
  const tokens = options.tokens ?? {};
  const repos = new Map<string, Repo>();
  const lfs = new Map<string, Buffer>();
  const requests: HubRequest[] = [];
  let baseURL = '';
  const state = { bytesServed: 0 };

  const userOf = (req: IncomingMessage): string | undefined => {
    const auth = req.headers.authorization;
    const token = auth?.startsWith('Bearer ') ? auth.slice(7) : undefined;
    return token ? tokens[token] : undefined;
  };

  /** The repo, if the caller may see it; answers the Hub's 401/404 otherwise. */
  const repoFor = (req: IncomingMessage, res: ServerResponse, id: string): Repo | undefined => {
    const repo = repos.get(id);
    if (!repo || (repo.private && !userOf(req))) {
      // The Hub does not say whether a private repo exists: 401 without credentials, 404 with.
      if (req.headers.authorization && !userOf(req)) hubError(res, 401, 'RepoNotFound', 'Invalid credentials in Authorization header');
      else if (!userOf(req)) hubError(res, 401, 'RepoNotFound', 'Repository not found');
      else hubError(res, 404, 'RepoNotFound', 'Repository not found');
      return undefined;
    }
    return repo;
  };

  const commitFor = (res: ServerResponse, repo: Repo, revision: string): Commit | undefined => {
    const rev = decodeURIComponent(revision);
    const oid = rev === 'HEAD' ? repo.branches.get('main') : (repo.branches.get(rev) ?? (repo.commits.has(rev) ? rev : undefined));
    const commit = oid ? repo.commits.get(oid) : undefined;
    if (!commit) hubError(res, 404, 'RevisionNotFound', `Invalid rev id: ${rev}`);
    return commit;
  };

  const entry = (path: string, file: StoredFile) => ({
    type: 'file',
    oid: gitOid(file.content),
    size: file.content.length,
    path,
    ...(file.lfs ? { lfs: { oid: file.lfs, size: file.content.length, pointerSize: 134 } } : {}),
  });

  const tree = (commit: Commit, prefix: string, recursive: boolean) => {
    const out: unknown[] = [];
    const dirs = new Set<string>();
    const base = prefix ? `${prefix.replace(/\/+$/, '')}/` : '';
    for (const [path, file] of [...commit.files].sort(([a], [b]) => a.localeCompare(b))) {
      if (!path.startsWith(base)) continue;
      const rest = path.slice(base.length);
      const slash = rest.indexOf('/');
      if (slash !== -1 && !recursive) {
        dirs.add(base + rest.slice(0, slash));
        continue;
      }
      if (recursive) for (let i = rest.indexOf('/'); i !== -1; i = rest.indexOf('/', i + 1)) dirs.add(base + rest.slice(0, i));
      out.push(entry(path, file));
    }
    return [...[...dirs].sort().map((path) => ({ type: 'directory', oid: gitOid(Buffer.from(path)), size: 0, path })), ...out];
  };

  const info = (repo: Repo, commit: Commit) => ({
    _id: repo.id,
    id: repo.id,
    author: repo.id.split('/')[0],
    sha: commit.oid,
    private: repo.private,
    gated: false,
    disabled: false,
    downloads: 0,
    likes: 0,
    tags: [],
    createdAt: commit.at.toISOString(),
    lastModified: commit.at.toISOString(),
    siblings: [...commit.files.keys()].sort().map((rfilename) => ({ rfilename })),
  });

  const newCommit = (repo: Repo, branch: string, summary: string, files: Map<string, StoredFile>): Commit => {
    const commit: Commit = { oid: hexId(), summary, files, at: new Date() };
    const parent = repo.branches.get(branch);
    if (parent) commit.parent = parent;
    repo.commits.set(commit.oid, commit);
    repo.branches.set(branch, commit.oid);
    return commit;
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', baseURL);
    const path = url.pathname;
    const method = req.method ?? 'GET';
    requests.push({
      method,
      path: `${path}${url.search}`,
      ...(req.headers.range ? { range: req.headers.range } : {}),
      authorized: !!userOf(req),
    });
    let m: RegExpExecArray | null;

    if (method === 'GET' && path === '/api/whoami-v2') {
      const user = userOf(req);
      if (!user) return hubError(res, 401, undefined, 'Invalid credentials in Authorization header');
      return sendJson(res, 200, { type: 'user', name: user, orgs: [], auth: { accessToken: { role: 'write', displayName: 'test' } } });
    }
    if (method === 'POST' && path === '/api/validate-yaml') {
      // The Hub checks a card's YAML header before a commit that changes README.md; any YAML passes here.
      await readBody(req);
      return sendJson(res, 200, { errors: [], warnings: [] });
    }
    if (method === 'POST' && path === '/api/repos/create') {
      const user = userOf(req);
      if (!user) return hubError(res, 401, undefined, 'Invalid username or password.');
      const body = JSON.parse((await readBody(req)).toString('utf8')) as {
        name?: string;
        organization?: string;
        type?: string;
        private?: boolean;
        visibility?: string;
      };
      if (body.type !== 'dataset') return hubError(res, 400, undefined, 'this stand-in serves dataset repos only');
      const id = body.organization ? `${body.organization}/${body.name}` : body.name?.includes('/') ? body.name : `${user}/${body.name}`;
      if (!id || !/^[\w.-]+\/[\w.-]+$/.test(id)) return hubError(res, 400, undefined, `Invalid repo name: ${String(id)}`);
      const url = `${baseURL}/datasets/${id}`;
      if (repos.has(id)) return sendJson(res, 409, { error: 'You already created this dataset repo', url });
      // huggingface_hub 1.x+ sends `visibility`; @huggingface/hub and older clients `private`.
      const repo: Repo = { id, private: !!body.private || body.visibility === 'private', branches: new Map(), commits: new Map() };
      repos.set(id, repo);
      newCommit(
        repo,
        'main',
        'initial commit',
        new Map([['.gitattributes', { content: Buffer.from('*.parquet filter=lfs diff=lfs merge=lfs -text\n') }]]),
      );
      return sendJson(res, 200, { url, name: id, id });
    }
    if ((m = /^\/api\/datasets\/([^/]+\/[^/]+?)(?:\/revision\/([^/]+))?$/.exec(path)) && method === 'GET') {
      const repo = repoFor(req, res, m[1]!);
      if (!repo) return;
      const commit = commitFor(res, repo, m[2] ?? 'main');
      if (commit) sendJson(res, 200, info(repo, commit));
      return;
    }
    if ((m = /^\/api\/datasets\/([^/]+\/[^/]+)\/tree\/([^/]+)(?:\/(.*))?$/.exec(path)) && method === 'GET') {
      const repo = repoFor(req, res, m[1]!);
      if (!repo) return;
      const commit = commitFor(res, repo, m[2]!);
      if (!commit) return;
      const prefix = decodeURIComponent(m[3] ?? '');
      const recursive = ['true', '1', 'True'].includes(url.searchParams.get('recursive') ?? '');
      const items = tree(commit, prefix, recursive);
      if (prefix && items.length === 0 && !commit.files.has(prefix))
        return hubError(res, 404, 'EntryNotFound', `${prefix} does not exist on "${decodeURIComponent(m[2]!)}"`);
      return sendJson(res, 200, items);
    }
    if ((m = /^\/api\/datasets\/([^/]+\/[^/]+)\/paths-info\/([^/]+)$/.exec(path)) && method === 'POST') {
      const repo = repoFor(req, res, m[1]!);
      if (!repo) return;
      const commit = commitFor(res, repo, m[2]!);
      if (!commit) return;
      const raw = (await readBody(req)).toString('utf8');
      const paths = (req.headers['content-type'] ?? '').includes('json')
        ? ((JSON.parse(raw) as { paths?: string[] }).paths ?? [])
        : new URLSearchParams(raw).getAll('paths');
      const out: unknown[] = [];
      for (const p of paths) {
        const file = commit.files.get(p);
        if (file) out.push(entry(p, file));
        else if ([...commit.files.keys()].some((k) => k.startsWith(`${p}/`)))
          out.push({ type: 'directory', oid: gitOid(Buffer.from(p)), size: 0, path: p });
      }
      return sendJson(res, 200, out);
    }
    if ((m = /^\/datasets\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(path)) && (method === 'GET' || method === 'HEAD')) {
      const repo = repoFor(req, res, m[1]!);
      if (!repo) return;
      const commit = commitFor(res, repo, m[2]!);
      if (!commit) return;
      const filePath = decodeURIComponent(m[3]!);
      const file = commit.files.get(filePath);
      if (!file) return hubError(res, 404, 'EntryNotFound', `${filePath} does not exist on "${decodeURIComponent(m[2]!)}"`);
      const headers: Record<string, string> = {
        'x-repo-commit': commit.oid,
        'accept-ranges': 'bytes',
        'content-type': 'application/octet-stream',
        etag: `"${file.lfs ?? gitOid(file.content)}"`,
        ...(file.lfs ? { 'x-linked-etag': `"${file.lfs}"`, 'x-linked-size': String(file.content.length) } : {}),
      };
      const size = file.content.length;
      const range = /^bytes=(\d*)-(\d*)$/.exec(req.headers.range ?? '');
      let body = file.content;
      let status = 200;
      if (range) {
        const start = range[1] === '' ? Math.max(0, size - Number(range[2])) : Number(range[1]);
        const end = range[1] !== '' && range[2] !== '' ? Math.min(size - 1, Number(range[2])) : size - 1;
        if (start >= size || start > end) {
          res.writeHead(416, { 'content-range': `bytes */${size}` });
          return void res.end();
        }
        body = file.content.subarray(start, end + 1);
        headers['content-range'] = `bytes ${start}-${end}/${size}`;
        status = 206;
      }
      headers['content-length'] = String(body.length);
      res.writeHead(status, headers);
      if (method === 'HEAD') return void res.end();
      state.bytesServed += body.length;
      return void res.end(body);
    }
    if ((m = /^\/api\/datasets\/([^/]+\/[^/]+)\/branch\/([^/]+)$/.exec(path)) && method === 'POST') {
      const repo = repoFor(req, res, m[1]!);
      if (!repo) return;
      if (!userOf(req)) return hubError(res, 401, undefined, 'Invalid username or password.');
      const branch = decodeURIComponent(m[2]!);
      if (repo.branches.has(branch)) return hubError(res, 409, undefined, `Reference already exists: refs/heads/${branch}`);
      repo.branches.set(branch, repo.branches.get('main')!);
      return sendJson(res, 200, {});
    }
    if ((m = /^\/api\/datasets\/([^/]+\/[^/]+)\/preupload\/([^/]+)$/.exec(path)) && method === 'POST') {
      const repo = repoFor(req, res, m[1]!);
      if (!repo) return;
      if (!userOf(req)) return hubError(res, 401, undefined, 'Invalid username or password.');
      const body = JSON.parse((await readBody(req)).toString('utf8')) as { files?: Array<{ path: string; size: number }> };
      return sendJson(res, 200, {
        files: (body.files ?? []).map((f) => ({
          path: f.path,
          uploadMode: LFS_EXTENSIONS.test(f.path) || f.size > 10 * 1024 * 1024 ? 'lfs' : 'regular',
          shouldIgnore: false,
        })),
        commitOid: repo.branches.get('main'),
      });
    }
    if ((m = /^\/datasets\/([^/]+\/[^/]+)\.git\/info\/lfs\/objects\/batch$/.exec(path)) && method === 'POST') {
      const repo = repoFor(req, res, m[1]!);
      if (!repo) return;
      if (!userOf(req)) return hubError(res, 401, undefined, 'Invalid username or password.');
      const body = JSON.parse((await readBody(req)).toString('utf8')) as {
        operation: string;
        objects: Array<{ oid: string; size: number }>;
      };
      const objects = body.objects.map(({ oid, size }) =>
        body.operation === 'upload' && !lfs.has(oid)
          ? {
              oid,
              size,
              authenticated: true,
              actions: {
                upload: { href: `${baseURL}/lfs-upload/${oid}` },
                verify: { href: `${baseURL}/lfs-verify/${oid}` },
              },
            }
          : lfs.has(oid)
            ? {
                oid,
                size,
                authenticated: true,
                ...(body.operation === 'download' ? { actions: { download: { href: `${baseURL}/lfs-object/${oid}` } } } : {}),
              }
            : { oid, size, error: { code: 404, message: 'Object does not exist' } },
      );
      res.writeHead(200, { 'content-type': 'application/vnd.git-lfs+json' });
      return void res.end(JSON.stringify({ transfer: 'basic', objects }));
    }
    if ((m = /^\/lfs-upload\/([0-9a-f]{64})$/.exec(path)) && method === 'PUT') {
      const content = await readBody(req);
      if (sha256(content) !== m[1]) return hubError(res, 400, undefined, 'sha256 of the uploaded content does not match the oid');
      lfs.set(m[1]!, content);
      res.writeHead(200);
      return void res.end();
    }
    if ((m = /^\/lfs-verify\/([0-9a-f]{64})$/.exec(path)) && method === 'POST') {
      await readBody(req);
      return lfs.has(m[1]!) ? sendJson(res, 200, {}) : hubError(res, 404, undefined, 'Object does not exist');
    }
    if ((m = /^\/api\/datasets\/([^/]+\/[^/]+)\/commit\/([^/]+)$/.exec(path)) && method === 'POST') {
      const repo = repoFor(req, res, m[1]!);
      if (!repo) return;
      if (!userOf(req)) return hubError(res, 401, undefined, 'Invalid username or password.');
      const branch = decodeURIComponent(m[2]!);
      const parentOid = repo.branches.get(branch);
      if (!parentOid) return hubError(res, 404, 'RevisionNotFound', `Invalid rev id: ${branch}`);
      const files = new Map(repo.commits.get(parentOid)!.files);
      let summary = '';
      const raw = (await readBody(req)).toString('utf8');
      for (const line of raw.split('\n').filter((l) => l.trim() !== '')) {
        const { key, value } = JSON.parse(line) as { key: string; value: Record<string, unknown> };
        if (key === 'header') {
          summary = String(value.summary ?? '');
          if (typeof value.parentCommit === 'string' && value.parentCommit !== parentOid)
            return hubError(res, 412, undefined, 'A commit has happened since. Please refresh and try again.');
        } else if (key === 'file') {
          const content = Buffer.from(String(value.content), value.encoding === 'base64' ? 'base64' : 'utf8');
          files.set(String(value.path), { content });
        } else if (key === 'lfsFile') {
          const content = lfs.get(String(value.oid));
          if (!content) return hubError(res, 422, undefined, `LFS object ${String(value.oid)} for ${String(value.path)} was not uploaded`);
          files.set(String(value.path), { content, lfs: String(value.oid) });
        } else if (key === 'deletedFile') {
          files.delete(String(value.path));
        } else if (key === 'deletedFolder') {
          const prefix = `${String(value.path).replace(/\/+$/, '')}/`;
          for (const p of [...files.keys()]) if (p.startsWith(prefix)) files.delete(p);
        } else {
          return hubError(res, 400, undefined, `unsupported commit operation "${key}"`);
        }
      }
      const commit = newCommit(repo, branch, summary, files);
      return sendJson(res, 200, {
        success: true,
        commitOid: commit.oid,
        commitUrl: `${baseURL}/datasets/${repo.id}/commit/${commit.oid}`,
        hookOutput: '',
        pullRequestUrl: null,
      });
    }
    hubError(res, 404, undefined, `not served by the Hub stand-in: ${method} ${path}`);
  };

  const { server, port } = await listenOnLoopback((req, res) => {
    handle(req, res).catch((err: Error) => {
      if (!res.headersSent) hubError(res, 500, undefined, err.message);
      else res.destroy();
    });
  }, options.port);
  baseURL = `http://127.0.0.1:${port}`;
  return {
    baseURL,
    requests,
    get bytesServed() {
      return state.bytesServed;
    },
    head: (repo, branch = 'main') => repos.get(repo)?.branches.get(branch),
    close: () => closeServer(server),
  };
}
