// The viewer's page: one HTML document, style and script inline, plain DOM (no framework, no build).
// Row text is set with textContent only: instructions and errors are data, never markup.

const STYLE = `
:root { color-scheme: light dark; --ok: #2a9d4b; --failed: #d1495b; --pending: #8d99ae; --accent: #3a86ff; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, sans-serif; }
header { position: sticky; top: 0; z-index: 2; padding: 10px 16px; background: Canvas; border-bottom: 1px solid #8884; }
header h1 { font-size: 16px; margin: 0 0 6px; }
#counts span { margin-right: 12px; }
#filters { display: flex; gap: 12px; flex-wrap: wrap; align-items: center; margin-top: 6px; }
#redo { margin-top: 6px; }
#redo code { user-select: all; background: #8882; padding: 2px 6px; border-radius: 4px; }
#help { color: #888; font-size: 12px; }
#grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(330px, 1fr)); gap: 12px; padding: 16px; }
.tile { border: 2px solid #8884; border-radius: 8px; padding: 8px; cursor: pointer; }
.tile.selected { border-color: var(--accent); box-shadow: 0 0 0 2px var(--accent); }
.tile.accepted { background: #2a9d4b22; }
.tile.rejected { background: #d1495b22; }
.pair { display: flex; align-items: center; gap: 6px; height: 150px; }
.pair img, .pair .none { width: 150px; height: 150px; object-fit: contain; background: #8882; border-radius: 4px; }
.pair .none { display: flex; align-items: center; justify-content: center; color: #888; font-size: 12px; text-align: center; }
.meta { margin-top: 6px; display: flex; gap: 6px; align-items: center; }
.badge { font-size: 11px; padding: 1px 6px; border-radius: 8px; color: white; }
.badge.ok { background: var(--ok); } .badge.failed { background: var(--failed); } .badge.pending { background: var(--pending); }
.badge.accepted { background: var(--ok); } .badge.rejected { background: var(--failed); }
.text { margin-top: 4px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.score { font-size: 12px; color: #888; }
.error { color: var(--failed); font-size: 12px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
#detail { position: fixed; inset: 0; z-index: 3; background: Canvas; overflow: auto; padding: 16px 24px; }
#detail[hidden] { display: none; }
#detail img { max-width: 100%; border: 1px solid #8884; margin: 4px 0; }
#detail .images { display: flex; flex-wrap: wrap; gap: 16px; }
#detail .images figure { margin: 0; max-width: 48%; }
#detail dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; }
#detail dt { color: #888; }
`;

const SCRIPT = `
const state = { rows: [], runId: '', selected: null, open: null, tiles: new Map(), signature: '' };
const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; };
const filters = () => ({ status: $('f-status').value, errorType: $('f-error').value, review: $('f-review').value, scoreBelow: $('f-score').value });

function visible(row) {
  const f = filters();
  if (f.status && row.status !== f.status) return false;
  if (f.errorType && row.errorType !== f.errorType) return false;
  if (f.review === 'unmarked' && (row.review || row.status !== 'ok')) return false;
  if (f.review && f.review !== 'unmarked' && row.review !== f.review) return false;
  if (f.scoreBelow !== '' && !(row.score && row.score.overall < Number(f.scoreBelow))) return false;
  return true;
}

function image(row, slot, thumb) {
  const img = el('img');
  img.loading = 'lazy';
  img.alt = 'row ' + row.index + ' ' + slot;
  img.src = '/' + (thumb ? 'thumb' : 'image') + '/' + row.index + '/' + slot + '?v=' + encodeURIComponent(row.outputs.join('|') + (row.attempts || ''));
  return img;
}

function tileFor(row) {
  const tile = el('div', 'tile');
  tile.dataset.index = row.index;
  const pair = el('div', 'pair');
  pair.append(row.inputs > 0 ? image(row, 'in0', true) : el('div', 'none', 'text to image'), el('span', '', '→'));
  pair.append(row.outputs.length > 0 ? image(row, 'out' + (row.outputs.length - 1), true) : el('div', 'none', row.status === 'failed' ? 'failed' : 'not done yet'));
  const meta = el('div', 'meta');
  meta.append(el('b', '', '#' + row.index), el('span', 'badge ' + row.status, row.status));
  if (row.review) meta.append(el('span', 'badge ' + row.review, row.review));
  if (row.generation) meta.append(el('span', '', 'gen ' + row.generation));
  if (row.score) meta.append(el('span', 'score', 'score ' + row.score.overall.toFixed(1)));
  if (row.costUsd !== undefined) meta.append(el('span', '', '$' + row.costUsd.toFixed(4)));
  tile.append(pair, meta, el('div', 'text', row.turns.join(' → ')));
  if (row.error) tile.append(el('div', 'error', row.error));
  tile.className = 'tile' + (row.review ? ' ' + row.review : '') + (state.selected === row.index ? ' selected' : '');
  tile.addEventListener('click', () => { select(row.index); openDetail(row.index); });
  return tile;
}

function render() {
  const grid = $('grid');
  const shown = state.rows.filter(visible);
  const next = [];
  for (const row of shown) {
    const key = JSON.stringify(row);
    let entry = state.tiles.get(row.index);
    if (!entry || entry.key !== key) { entry = { key, tile: tileFor(row) }; state.tiles.set(row.index, entry); }
    entry.tile.classList.toggle('selected', state.selected === row.index);
    next.push(entry.tile);
  }
  // Re-attach only when the set or order of tiles changed: images already shown are kept.
  const current = [...grid.children];
  if (current.length !== next.length || current.some((t, i) => t !== next[i])) grid.replaceChildren(...next);
  if (state.selected !== null && !shown.some((r) => r.index === state.selected)) state.selected = shown[0] ? shown[0].index : null;
  if (state.selected === null && shown[0]) { state.selected = shown[0].index; render(); return; }
  const count = (p) => state.rows.filter(p).length;
  $('counts').replaceChildren(...[
    ['rows', state.rows.length], ['ok', count((r) => r.status === 'ok')], ['failed', count((r) => r.status === 'failed')],
    ['pending', count((r) => r.status === 'pending')], ['accepted', count((r) => r.review === 'accepted')], ['rejected', count((r) => r.review === 'rejected')],
    ['shown', shown.length],
  ].map(([k, v]) => el('span', '', k + ': ' + v)));
  const rejected = state.rows.filter((r) => r.review === 'rejected');
  $('redo').replaceChildren(rejected.length
    ? el('span', '', rejected.length + ' rejected row(s). To regenerate them: ')
    : el('span', '', 'No rejected rows. Mark rows with a (accept) or r (reject); rejected rows can be regenerated with: '),
    el('code', '', 'atelier retry ' + state.runId + ' --rejected --redo'));
  const errorTypes = [...new Set(state.rows.map((r) => r.errorType).filter(Boolean))].sort();
  const select = $('f-error');
  const have = [...select.options].slice(1).map((o) => o.value);
  if (have.join() !== errorTypes.join()) {
    const value = select.value;
    select.replaceChildren(el('option', '', 'any error class'), ...errorTypes.map((t) => el('option', '', t)));
    select.options[0].value = '';
    select.value = errorTypes.includes(value) ? value : '';
  }
  if (state.open !== null) openDetail(state.open, true);
}

function select(index) {
  state.selected = index;
  for (const [i, { tile }] of state.tiles) tile.classList.toggle('selected', i === index);
  const entry = state.tiles.get(index);
  if (entry) entry.tile.scrollIntoView({ block: 'nearest' });
}

function openDetail(index, refresh) {
  const row = state.rows.find((r) => r.index === index);
  if (!row) return;
  const key = JSON.stringify(row);
  const panel = $('detail');
  if (refresh && panel.dataset.key === key) return;
  panel.dataset.key = key;
  state.open = index;
  const body = el('div');
  body.append(el('h2', '', 'Row ' + row.index + ' (position ' + row.position + ')'), el('p', '', 'Esc closes · a accept · r reject · u unmark · ←/→ previous/next'));
  const turns = el('ol');
  row.turns.forEach((t) => turns.append(el('li', '', t)));
  body.append(el('h3', '', row.turns.length > 1 ? 'Instruction turns' : 'Instruction'), turns);
  if (row.enhanced) body.append(el('p', '', 'Enhanced: ' + row.enhanced));
  const images = el('div', 'images');
  for (let i = 0; i < row.inputs; i++) { const f = el('figure'); f.append(image(row, 'in' + i, false), el('figcaption', '', 'input ' + (i + 1))); images.append(f); }
  row.outputs.forEach((path, i) => { const f = el('figure'); f.append(image(row, 'out' + i, false), el('figcaption', '', 'output ' + (i + 1) + ': ' + path)); images.append(f); });
  body.append(images);
  if (row.history) {
    body.append(el('h3', '', 'Earlier outputs (this is generation ' + row.generation + ')'));
    const earlier = el('div', 'images');
    for (const h of row.history) {
      const f = el('figure');
      const img = image(row, 'h' + h.generation + '_0', true);
      f.append(img, el('figcaption', '', 'generation ' + h.generation + ': ' + h.reason));
      earlier.append(f);
    }
    body.append(earlier);
  }
  const facts = el('dl');
  const fact = (k, v) => { if (v !== undefined && v !== '') facts.append(el('dt', '', k), el('dd', '', String(v))); };
  fact('status', row.status); fact('generation', row.generation); fact('review', row.review); fact('error', row.error); fact('attempts', row.attempts);
  fact('latency', row.latencyMs !== undefined ? (row.latencyMs / 1000).toFixed(2) + ' s' : undefined);
  fact('cost (estimate)', row.costUsd !== undefined ? '$' + row.costUsd.toFixed(4) : undefined);
  fact('request id', row.requestId); fact('source', row.where);
  if (row.score) {
    const s = row.score;
    fact('judge score', s.overall.toFixed(2) + ' of 10 (' + s.model + ')');
    fact('instruction following', s.instructionFollowing); fact('preservation', s.preservation === null ? 'n/a' : s.preservation); fact('quality', s.quality);
    fact('judge says', s.reason);
  }
  body.append(facts);
  panel.replaceChildren(body);
  panel.hidden = false;
}

function closeDetail() { state.open = null; $('detail').hidden = true; }

async function mark(verdict) {
  const row = state.rows.find((r) => r.index === (state.open ?? state.selected));
  if (!row || row.status !== 'ok') return;
  const res = await fetch('/api/review/' + row.index, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ verdict }) });
  if (!res.ok) { $('status').textContent = 'could not mark row ' + row.index + ': ' + (await res.json()).error; return; }
  if (verdict) row.review = verdict; else delete row.review;
  $('status').textContent = 'row ' + row.index + ': ' + (verdict || 'unmarked');
  render();
}

function move(step) {
  const shown = state.rows.filter(visible);
  const at = shown.findIndex((r) => r.index === state.selected);
  const next = shown[Math.max(0, Math.min(shown.length - 1, at + step))];
  if (!next) return;
  select(next.index);
  if (state.open !== null) openDetail(next.index);
}

document.addEventListener('keydown', (e) => {
  if (e.target instanceof HTMLSelectElement || e.target instanceof HTMLInputElement || e.metaKey || e.ctrlKey || e.altKey) return;
  const columns = Math.max(1, getComputedStyle($('grid')).gridTemplateColumns.split(' ').length);
  const actions = {
    a: () => mark('accepted'), r: () => mark('rejected'), u: () => mark(null),
    ArrowRight: () => move(1), ArrowLeft: () => move(-1), j: () => move(1), k: () => move(-1),
    ArrowDown: () => move(state.open === null ? columns : 1), ArrowUp: () => move(state.open === null ? -columns : -1),
    Enter: () => state.selected !== null && openDetail(state.selected), Escape: closeDetail,
  };
  const action = actions[e.key];
  if (action) { e.preventDefault(); action(); }
});

async function poll() {
  try {
    const res = await fetch('/api/rows');
    const data = await res.json();
    state.runId = data.runId;
    $('title').textContent = 'Run ' + data.runId;
    $('source').textContent = data.inputPath + ' → ' + data.outputDir;
    const signature = JSON.stringify(data.rows);
    if (signature !== state.signature) { state.signature = signature; state.rows = data.rows; render(); }
    $('live').textContent = 'updated ' + new Date().toLocaleTimeString();
  } catch (err) {
    $('live').textContent = 'viewer server unreachable (' + err.message + ')';
  }
  setTimeout(poll, 2000);
}
for (const id of ['f-status', 'f-error', 'f-review', 'f-score']) $(id).addEventListener(id === 'f-score' ? 'input' : 'change', render);
poll();
`;

export function viewerPage(): string {
  return `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>Atelier run viewer</title><style>${STYLE}</style></head>
<body>
<header>
  <h1 id="title">Atelier run</h1>
  <div id="source"></div>
  <div id="counts"></div>
  <div id="filters">
    <label>status <select id="f-status"><option value="">any</option><option value="ok">ok</option><option value="failed">failed</option><option value="pending">pending</option></select></label>
    <label>error <select id="f-error"><option value="">any error class</option></select></label>
    <label>score below <input id="f-score" type="number" min="0" max="10" step="0.5" style="width:5em"></label>
    <label>review <select id="f-review"><option value="">any</option><option value="unmarked">unmarked</option><option value="accepted">accepted</option><option value="rejected">rejected</option></select></label>
    <span id="help">keys: ←/→/↑/↓ move · Enter details · a accept · r reject · u unmark · Esc close</span>
    <span id="live"></span> <span id="status" role="status"></span>
  </div>
  <div id="redo"></div>
</header>
<main id="grid"></main>
<section id="detail" hidden></section>
<script>${SCRIPT}</script>
</body>
</html>`;
}
