// The viewer's page: one HTML document, style and script inline, plain DOM (no framework, no build).
// Row text is set with textContent only: instructions and errors are data, never markup.
// The server filters, sorts and pages (web/rows.ts): the page holds one page of tiles (100 rows), so
// a run of 20,000 rows costs the browser what 100 do; thumbnails load lazily as tiles scroll in.

/** Reject reasons offered as presets (keys 1-4 reject the selected row with one); free text is kept as typed. */
export const REJECT_PRESETS = [
  'instruction not followed',
  'changed what it should not',
  'artifacts or low quality',
  'wrong subject or identity',
];

const STYLE = `
:root { color-scheme: light dark; --ok: #2a9d4b; --failed: #d1495b; --pending: #8d99ae; --accent: #3a86ff; --conflict: #e09f3e; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, sans-serif; }
header { position: sticky; top: 0; z-index: 2; padding: 10px 16px; background: Canvas; border-bottom: 1px solid #8884; }
header h1 { font-size: 16px; margin: 0 0 6px; }
#counts span { margin-right: 12px; }
#filters, #actions { display: flex; gap: 12px; flex-wrap: wrap; align-items: center; margin-top: 6px; }
#redo { margin-top: 6px; }
#redo code { user-select: all; background: #8882; padding: 2px 6px; border-radius: 4px; }
#help { color: #888; font-size: 12px; }
#grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(330px, 1fr)); gap: 12px; padding: 16px; }
#pager { display: flex; gap: 12px; align-items: center; padding: 0 16px 16px; }
.tile { border: 2px solid #8884; border-radius: 8px; padding: 8px; cursor: pointer; }
.tile.selected { border-color: var(--accent); box-shadow: 0 0 0 2px var(--accent); }
.tile.accepted { background: #2a9d4b22; }
.tile.rejected { background: #d1495b22; }
.tile.conflict { border-color: var(--conflict); }
.pair { display: flex; align-items: center; gap: 6px; height: 150px; }
.pair img, .pair .none { width: 150px; height: 150px; object-fit: contain; background: #8882; border-radius: 4px; }
.pair .unserved { color: var(--failed); font-size: 10px; overflow: hidden; padding: 4px; box-sizing: border-box; }
.pair .none { display: flex; align-items: center; justify-content: center; color: #888; font-size: 12px; text-align: center; }
.meta { margin-top: 6px; display: flex; gap: 6px; align-items: center; flex-wrap: wrap; }
.badge { font-size: 11px; padding: 1px 6px; border-radius: 8px; color: white; }
.badge.ok { background: var(--ok); } .badge.failed { background: var(--failed); } .badge.pending { background: var(--pending); }
.badge.accepted { background: var(--ok); } .badge.rejected { background: var(--failed); } .badge.conflict { background: var(--conflict); }
.text { margin-top: 4px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.score, .reason { font-size: 12px; color: #888; }
.error { color: var(--failed); font-size: 12px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
#detail { position: fixed; inset: 0; z-index: 3; background: Canvas; overflow: auto; padding: 16px 24px; }
#detail[hidden] { display: none; }
#detail .images img { max-width: 100%; border: 1px solid #8884; margin: 4px 0; }
#detail .images { display: flex; flex-wrap: wrap; gap: 16px; }
#detail .images figure { margin: 0; max-width: 48%; }
#detail dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; }
#detail dt { color: #888; }
.compare .tools { display: flex; gap: 8px; align-items: center; margin: 6px 0; }
.compare .tools button.on { outline: 2px solid var(--accent); }
.stage { position: relative; width: 100%; max-width: 900px; height: 60vh; overflow: hidden; background: #8882; cursor: grab; user-select: none; }
.stage .layer { position: absolute; inset: 0; overflow: hidden; }
.stage img { position: absolute; left: 0; top: 0; width: 100%; height: 100%; object-fit: contain; transform-origin: 0 0; pointer-events: none; }
.stage .split { position: absolute; top: 0; bottom: 0; width: 2px; margin-left: -1px; background: var(--accent); pointer-events: none; }
.compare input[type=range] { width: 100%; max-width: 900px; }
`;

const SCRIPT = `
const PRESETS = ${JSON.stringify(REJECT_PRESETS)};
const PAGE = 100;
const FIELDS = ['status', 'error', 'review', 'scoreBelow', 'q', 'sort', 'conflictBelow', 'offset'];
const state = { data: null, rows: [], runId: '', selected: null, open: null, tiles: new Map(), signature: '', seq: 0, after: null,
  compare: { mode: 'split', split: 50, zoom: 1, x: 0, y: 0, row: null, before: null, after: null } };
const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; };

// What the controls ask for; kept in the address (#...), so a reload or a shared link shows the same rows.
function query() {
  const [sort, order] = $('f-sort').value.split(':');
  return { status: $('f-status').value, error: $('f-error').value, review: $('f-review').value, scoreBelow: $('f-score').value,
    q: $('f-q').value.trim(), sort, order, conflictBelow: $('f-conflict').value, offset: state.offset || 0, limit: PAGE };
}
function filterOf(q) { return { status: q.status, error: q.error, review: q.review, scoreBelow: q.scoreBelow, q: q.q, conflictBelow: q.conflictBelow }; }
function queryString(q) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) if (v !== '' && v !== undefined && v !== null) p.set(k, String(v));
  return p.toString();
}
function restore() {
  const p = new URLSearchParams(location.hash.slice(1));
  const set = (id, v) => { if (v !== null) $(id).value = v; };
  set('f-status', p.get('status')); set('f-review', p.get('review')); set('f-score', p.get('scoreBelow')); set('f-q', p.get('q'));
  set('f-conflict', p.get('conflictBelow'));
  if (p.get('sort')) $('f-sort').value = p.get('sort') + ':' + (p.get('order') || 'asc');
  state.wantError = p.get('error') || '';
  state.offset = Number(p.get('offset')) || 0;
}

function image(row, slot, thumb, lazy) {
  const img = el('img');
  if (lazy !== false) img.loading = 'lazy';
  img.alt = 'row ' + row.index + ' ' + slot;
  img.draggable = false;
  img.src = '/' + (thumb ? 'thumb' : 'image') + '/' + row.index + '/' + slot + '?v=' + encodeURIComponent(row.outputs.join('|') + (row.attempts || ''));
  // An image the server refuses (an output swapped after the run, an input that is no image) is
  // replaced by the server's reason, so a refused output never looks like a slow one.
  img.addEventListener('error', () => {
    fetch(img.src).then((res) => res.json()).then((body) => body.error, () => 'not served').then((text) => {
      const note = el('div', 'none unserved', text);
      note.title = text;
      img.replaceWith(note);
    });
  }, { once: true });
  return img;
}

function tileFor(row) {
  const tile = el('div', 'tile');
  tile.dataset.index = row.index;
  const pair = el('div', 'pair');
  pair.append(row.inputs > 0 ? image(row, 'in0', true) : el('div', 'none', 'text to image'), el('span', '', '→'));
  pair.append(row.outputs.length > 0 ? image(row, 'out' + (row.outputs.length - 1), true) : row.outputsChanged ? el('div', 'none unserved', 'output replaced or missing since the run: not shown (a re-run makes it again)') : el('div', 'none', row.status === 'failed' ? 'failed' : 'not done yet'));
  const meta = el('div', 'meta');
  meta.append(el('b', '', '#' + row.index), el('span', 'badge ' + row.status, row.status));
  if (row.review) meta.append(el('span', 'badge ' + row.review, row.review));
  if (row.conflict) { const b = el('span', 'badge conflict', 'conflict'); b.title = 'accepted, but the judge scored it ' + row.score.overall.toFixed(1); meta.append(b); }
  if (row.generation) meta.append(el('span', '', 'gen ' + row.generation));
  if (row.score) meta.append(el('span', 'score', 'score ' + row.score.overall.toFixed(1)));
  if (row.costUsd !== undefined) meta.append(el('span', 'cost', '$' + row.costUsd.toFixed(4)));
  if (row.latencyMs !== undefined) meta.append(el('span', 'latency', (row.latencyMs / 1000).toFixed(1) + ' s'));
  tile.append(pair, meta, el('div', 'text', row.turns.join(' → ')));
  if (row.reviewReason) tile.append(el('div', 'reason', 'rejected: ' + row.reviewReason));
  if (row.error) tile.append(el('div', 'error', row.error));
  tile.className = 'tile' + (row.review ? ' ' + row.review : '') + (row.conflict ? ' conflict' : '') + (state.selected === row.index ? ' selected' : '');
  tile.addEventListener('click', () => { select(row.index); openDetail(row.index); });
  return tile;
}

function render() {
  const grid = $('grid');
  const shown = state.rows;
  const next = [];
  const keep = new Map();
  for (const row of shown) {
    const key = JSON.stringify(row);
    let entry = state.tiles.get(row.index);
    if (!entry || entry.key !== key) entry = { key, tile: tileFor(row) };
    keep.set(row.index, entry);
    entry.tile.classList.toggle('selected', state.selected === row.index);
    next.push(entry.tile);
  }
  state.tiles = keep;
  // Re-attach only when the set or order of tiles changed: images already shown are kept.
  const current = [...grid.children];
  if (current.length !== next.length || current.some((t, i) => t !== next[i])) grid.replaceChildren(...next);
  if (state.after === 'last' && shown.length) { state.selected = shown[shown.length - 1].index; state.after = null; render(); return; }
  if (state.after === 'first' && shown.length) { state.selected = shown[0].index; state.after = null; render(); return; }
  if (state.selected !== null && !shown.some((r) => r.index === state.selected)) {
    // The selected row left this page (marked under an "unmarked" filter, say): the one now at its place.
    const at = Math.min(state.selectedAt ?? 0, shown.length - 1);
    state.selected = at >= 0 ? shown[at].index : null;
    if (state.selected !== null) { render(); return; }
  }
  if (state.selected === null && shown[0]) { state.selected = shown[0].index; render(); return; }
  state.selectedAt = shown.findIndex((r) => r.index === state.selected);
  const d = state.data;
  const c = d.counts;
  $('counts').replaceChildren(...[
    ['rows', c.rows], ['ok', c.ok], ['failed', c.failed], ['pending', c.pending], ['accepted', c.accepted], ['rejected', c.rejected],
    ['conflicts', c.conflicts], ['shown', d.matched],
  ].map(([k, v]) => { const s = el('span', '', k + ': ' + v); s.id = 'count-' + k; return s; }));
  $('page-info').textContent = (d.matched === 0 ? 'no rows' : (d.offset + 1) + '–' + (d.offset + shown.length) + ' of ' + d.matched) +
    (d.complete ? '' : ' · reading the run: ' + c.rows + ' of ' + d.totalRows + ' rows so far');
  // Marking everything a filter shows waits for the whole run to be read.
  $('bulk-accept').disabled = $('bulk-reject').disabled = !d.complete || d.matched === 0;
  $('prev').disabled = d.offset === 0;
  $('next').disabled = d.offset + shown.length >= d.matched;
  $('bulk-accept').textContent = 'Accept all ' + d.matched + ' shown';
  $('bulk-reject').textContent = 'Reject all ' + d.matched + ' shown';
  $('redo').replaceChildren(c.rejected
    ? el('span', '', c.rejected + ' rejected row(s). To regenerate them: ')
    : el('span', '', 'No rejected rows. Mark rows with a (accept) or r (reject); rejected rows can be regenerated with: '),
    el('code', '', 'atelier retry ' + state.runId + ' --rejected --redo'));
  const select = $('f-error');
  const have = [...select.options].slice(1).map((o) => o.value);
  if (have.join() !== d.errorTypes.join()) {
    const value = state.wantError !== undefined ? state.wantError : select.value;
    select.replaceChildren(el('option', '', 'any error class'), ...d.errorTypes.map((t) => el('option', '', t)));
    select.options[0].value = '';
    select.value = d.errorTypes.includes(value) ? value : '';
  }
  state.wantError = undefined;
  if (state.open !== null) openDetail(state.open, true);
}

function select(index) {
  state.selected = index;
  state.selectedAt = state.rows.findIndex((r) => r.index === index);
  for (const [i, { tile }] of state.tiles) tile.classList.toggle('selected', i === index);
  const entry = state.tiles.get(index);
  if (entry) entry.tile.scrollIntoView({ block: 'nearest' });
}

// Compare: two of the row's images in one frame (the first input and the last output unless the
// person picks others: any input, any output or turn, an earlier generation's output), as a split
// with a slider or one over the other (o flips); zoom (wheel, +/-, 0 fits) and drag apply to both,
// so the same spot is compared.
function applyCompare() {
  const stage = $('stage');
  if (!stage) return;
  const c = state.compare;
  const split = c.mode === 'split' ? c.split : c.mode === 'before' ? 100 : 0;
  stage.querySelector('.layer.after').style.clipPath = 'inset(0 0 0 ' + split + '%)';
  const line = stage.querySelector('.split');
  line.hidden = c.mode !== 'split';
  line.style.left = split + '%';
  for (const img of stage.querySelectorAll('img')) img.style.transform = 'translate(' + c.x + 'px, ' + c.y + 'px) scale(' + c.zoom + ')';
  $('zoom-level').textContent = c.zoom + '×';
  for (const b of document.querySelectorAll('.compare [data-mode]')) b.classList.toggle('on', b.dataset.mode === c.mode);
  $('split').value = String(c.split);
}
function zoomTo(zoom, cx, cy) {
  const c = state.compare;
  const next = Math.max(1, Math.min(16, zoom));
  const stage = $('stage');
  if (cx === undefined) { cx = stage.clientWidth / 2; cy = stage.clientHeight / 2; }
  // Keep the point under (cx, cy) where it is.
  c.x = next === 1 ? 0 : cx - (cx - c.x) * (next / c.zoom);
  c.y = next === 1 ? 0 : cy - (cy - c.y) * (next / c.zoom);
  c.zoom = next;
  applyCompare();
}
function setMode(mode) { state.compare.mode = mode; applyCompare(); }
// The images a row can compare, as [slot, label]: its inputs, its outputs (a turn's, in a
// multi-turn row), the first output of each earlier generation.
function compareSlots(row) {
  const slots = [];
  for (let i = 0; i < row.inputs; i++) slots.push(['in' + i, 'input ' + (i + 1)]);
  const turns = row.turns.length > 1 && row.outputs.length === row.turns.length;
  row.outputs.forEach((_, i) => slots.push(['out' + i, turns ? 'turn ' + (i + 1) + ' output' : 'output ' + (i + 1)]));
  for (const h of row.history || []) slots.push(['h' + h.generation + '_0', 'generation ' + h.generation + ' output']);
  return slots;
}
function compareFor(row) {
  const c = state.compare;
  const slots = compareSlots(row);
  const has = (slot) => slots.some(([s]) => s === slot);
  // A pick holds while the same row is open (the page's polls redraw it) and names one of its images.
  if (c.row !== row.index || !has(c.before) || !has(c.after)) {
    c.row = row.index; c.before = 'in0'; c.after = 'out' + (row.outputs.length - 1);
  }
  const box = el('div', 'compare');
  const tools = el('div', 'tools');
  tools.append(el('b', '', 'Compare'));
  const layers = {};
  if (slots.length > 2) {
    for (const side of ['before', 'after']) {
      const pick = el('select'); pick.id = 'compare-' + side; pick.title = side === 'before' ? 'the left / under image' : 'the right / over image';
      for (const [slot, label] of slots) { const o = el('option', '', label); o.value = slot; pick.append(o); }
      pick.value = c[side];
      pick.addEventListener('change', () => {
        c[side] = pick.value;
        layers[side].replaceChildren(image(row, pick.value, false, false));
        applyCompare();
      });
      tools.append(pick);
      if (side === 'before') tools.append(el('span', '', 'vs'));
    }
  }
  for (const [mode, label] of [['split', 'split'], ['before', 'before'], ['after', 'after']]) {
    const b = el('button', '', label); b.dataset.mode = mode; b.addEventListener('click', () => setMode(mode)); tools.append(b);
  }
  const out = el('button', '', '−'); out.id = 'zoom-out'; out.addEventListener('click', () => zoomTo(state.compare.zoom / 2));
  const zin = el('button', '', '+'); zin.id = 'zoom-in'; zin.addEventListener('click', () => zoomTo(state.compare.zoom * 2));
  const fit = el('button', '', 'fit'); fit.id = 'zoom-fit'; fit.addEventListener('click', () => zoomTo(1));
  const level = el('span', '', '1×'); level.id = 'zoom-level';
  tools.append(el('span', '', '· zoom'), out, level, zin, fit, el('span', 'score', 'o flips before/after · wheel or +/− zooms · drag pans'));
  const stage = el('div', 'stage'); stage.id = 'stage';
  const before = el('div', 'layer before'); before.append(image(row, c.before, false, false));
  const after = el('div', 'layer after'); after.append(image(row, c.after, false, false));
  layers.before = before; layers.after = after;
  stage.append(before, after, el('div', 'split'));
  stage.addEventListener('wheel', (e) => {
    e.preventDefault();
    const r = stage.getBoundingClientRect();
    zoomTo(state.compare.zoom * (e.deltaY < 0 ? 1.25 : 0.8), e.clientX - r.left, e.clientY - r.top);
  }, { passive: false });
  stage.addEventListener('pointerdown', (e) => {
    const start = { x: e.clientX, y: e.clientY, cx: state.compare.x, cy: state.compare.y };
    stage.setPointerCapture(e.pointerId);
    const moveTo = (m) => { state.compare.x = start.cx + m.clientX - start.x; state.compare.y = start.cy + m.clientY - start.y; applyCompare(); };
    stage.addEventListener('pointermove', moveTo);
    stage.addEventListener('pointerup', () => stage.removeEventListener('pointermove', moveTo), { once: true });
  });
  const slider = el('input'); slider.type = 'range'; slider.min = '0'; slider.max = '100'; slider.id = 'split';
  slider.addEventListener('input', () => { state.compare.split = Number(slider.value); state.compare.mode = 'split'; applyCompare(); });
  box.append(tools, stage, slider);
  return box;
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
  body.append(el('h2', '', 'Row ' + row.index + ' (position ' + row.position + ')'),
    el('p', '', 'Esc closes · a accept · r reject (with the reason above) · 1–4 reject with a preset reason · u unmark · ←/→ previous/next · o before/after · +/−/0 zoom'));
  const turns = el('ol');
  row.turns.forEach((t) => turns.append(el('li', '', t)));
  body.append(el('h3', '', row.turns.length > 1 ? 'Instruction turns' : 'Instruction'), turns);
  if (row.enhanced) body.append(el('p', '', 'Enhanced: ' + row.enhanced));
  if (row.inputs > 0 && row.outputs.length > 0) { body.append(compareFor(row)); }
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
  fact('status', row.status); fact('generation', row.generation); fact('review', row.review); fact('reject reason', row.reviewReason);
  if (row.conflict) fact('conflict', 'accepted, but the judge scored it ' + row.score.overall.toFixed(2) + ' (below ' + $('f-conflict').value + ')');
  fact('error', row.error); fact('attempts', row.attempts);
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
  applyCompare();
}

function closeDetail() { state.open = null; $('detail').hidden = true; }

async function post(path, body) {
  const res = await fetch(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const answer = await res.json();
  if (!res.ok) throw new Error(answer.error);
  return answer;
}

async function mark(verdict, reason) {
  const row = state.rows.find((r) => r.index === (state.open ?? state.selected));
  if (!row || row.status !== 'ok') return;
  const body = { verdict };
  if (verdict === 'rejected') { const r = reason !== undefined ? reason : $('reason').value.trim(); if (r) body.reason = r; }
  try { await post('/api/review/' + row.index, body); }
  catch (err) { $('status').textContent = 'could not mark row ' + row.index + ': ' + err.message; return; }
  $('status').textContent = 'row ' + row.index + ': ' + (verdict || 'unmarked') + (body.reason ? ' (' + body.reason + ')' : '');
  await load();
}

// Every row the filter shows, all pages, in one request: the server picks them again and refuses if
// the count moved (the run went on), so only rows the person saw are marked.
async function bulk(verdict) {
  const q = query();
  const n = state.data ? state.data.matched : 0;
  if (!n) return;
  const reason = verdict === 'rejected' ? $('reason').value.trim() : '';
  if (!confirm((verdict === 'accepted' ? 'Accept' : 'Reject') + ' all ' + n + ' row(s) this filter shows' + (reason ? ' (reason: ' + reason + ')' : '') + '? Rows without an output are skipped.')) return;
  const body = { verdict, filter: filterOf(q), expect: n };
  if (reason) body.reason = reason;
  try {
    const done = await post('/api/review', body);
    $('status').textContent = verdict + ' ' + done.marked + ' row(s)' + (done.skipped ? ', ' + done.skipped + ' without an output skipped' : '');
  } catch (err) { $('status').textContent = 'bulk ' + verdict + ' refused: ' + err.message; }
  await load();
}

function move(step) {
  const shown = state.rows;
  const at = shown.findIndex((r) => r.index === state.selected);
  const to = at + step;
  const d = state.data;
  if (to >= shown.length && d && d.offset + shown.length < d.matched) { page(1, 'first'); return; }
  if (to < 0 && d && d.offset > 0) { page(-1, 'last'); return; }
  const next = shown[Math.max(0, Math.min(shown.length - 1, to))];
  if (!next) return;
  select(next.index);
  if (state.open !== null) openDetail(next.index);
}

function page(step, after) {
  const d = state.data;
  if (!d) return;
  // From the page last asked for (a second click before the first page arrives goes one further).
  const offset = (state.offset ?? d.offset) + step * PAGE;
  if (offset < 0 || offset >= d.matched) return;
  state.offset = offset;
  state.after = after || 'first';
  load().then(() => window.scrollTo(0, 0));
}

document.addEventListener('keydown', (e) => {
  if (e.target instanceof HTMLSelectElement || e.target instanceof HTMLInputElement || e.metaKey || e.ctrlKey || e.altKey) return;
  const columns = Math.max(1, getComputedStyle($('grid')).gridTemplateColumns.split(' ').length);
  const detail = state.open !== null;
  const actions = {
    a: () => mark('accepted'), r: () => mark('rejected'), u: () => mark(null),
    ArrowRight: () => move(1), ArrowLeft: () => move(-1), j: () => move(1), k: () => move(-1),
    ArrowDown: () => move(detail ? 1 : columns), ArrowUp: () => move(detail ? -1 : -columns),
    PageDown: () => page(1), PageUp: () => page(-1),
    Enter: () => state.selected !== null && openDetail(state.selected), Escape: closeDetail,
    o: () => detail && setMode(state.compare.mode === 'before' ? 'after' : 'before'), s: () => detail && setMode('split'),
    '+': () => detail && zoomTo(state.compare.zoom * 2), '=': () => detail && zoomTo(state.compare.zoom * 2),
    '-': () => detail && zoomTo(state.compare.zoom / 2), '0': () => detail && zoomTo(1),
  };
  PRESETS.forEach((p, i) => { actions[String(i + 1)] = () => mark('rejected', p); });
  const action = actions[e.key];
  if (action) { e.preventDefault(); action(); }
});

// One request at a time answers: a slower earlier one (an older filter) is dropped.
async function load() {
  const q = query();
  const seq = ++state.seq;
  const hash = queryString({ ...q, limit: '', order: q.sort === 'index' && q.order === 'asc' ? '' : q.order, sort: q.sort === 'index' ? '' : q.sort, offset: q.offset || '' });
  if (location.hash.slice(1) !== hash) history.replaceState(null, '', hash ? '#' + hash : location.pathname);
  try {
    const res = await fetch('/api/rows?' + queryString(q));
    const data = await res.json();
    if (seq !== state.seq) return;
    if (!res.ok) { $('live').textContent = data.error; return; }
    state.runId = data.runId;
    $('title').textContent = 'Run ' + data.runId;
    $('source').textContent = data.inputPath + ' → ' + data.outputDir;
    const signature = JSON.stringify(data);
    if (signature !== state.signature) { state.signature = signature; state.data = data; state.rows = data.rows; state.offset = data.offset; render(); }
    $('live').textContent = 'updated ' + new Date().toLocaleTimeString();
  } catch (err) {
    if (seq === state.seq) $('live').textContent = 'viewer server unreachable (' + err.message + ')';
  }
}

// A new filter or order starts at its first row; a row leaving the page for another reason (marked
// under an "unmarked" filter) hands the selection to the row now in its place.
function refilter() { state.offset = 0; state.selected = null; load(); }
async function poll() { await load(); setTimeout(poll, state.data && !state.data.complete ? 500 : 2000); }
let typing;
$('f-q').addEventListener('input', () => { clearTimeout(typing); typing = setTimeout(refilter, 200); });
for (const id of ['f-status', 'f-error', 'f-review', 'f-sort']) $(id).addEventListener('change', refilter);
for (const id of ['f-score', 'f-conflict']) $(id).addEventListener('input', refilter);
$('prev').addEventListener('click', () => page(-1));
$('next').addEventListener('click', () => page(1));
$('bulk-accept').addEventListener('click', () => bulk('accepted'));
$('bulk-reject').addEventListener('click', () => bulk('rejected'));
restore();
poll();
`;

export function viewerPage(): string {
  const presets = REJECT_PRESETS.map((p) => `<option value="${p}"></option>`).join('');
  return `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>Atelier run viewer</title><style>${STYLE}</style></head>
<body>
<header>
  <h1 id="title">Atelier run</h1>
  <div id="source"></div>
  <div id="counts"></div>
  <div id="filters">
    <label>search <input id="f-q" type="search" placeholder="words in the instruction" style="width:16em"></label>
    <label>status <select id="f-status"><option value="">any</option><option value="ok">ok</option><option value="failed">failed</option><option value="pending">pending</option></select></label>
    <label>error <select id="f-error"><option value="">any error class</option></select></label>
    <label>score below <input id="f-score" type="number" min="0" max="10" step="0.5" style="width:5em"></label>
    <label>review <select id="f-review"><option value="">any</option><option value="unmarked">unmarked</option><option value="accepted">accepted</option><option value="rejected">rejected</option><option value="conflict">accepted, judge scored low</option></select></label>
    <label title="an accepted row the judge scored below this (0-10) is flagged as a conflict">conflict below <input id="f-conflict" type="number" min="0" max="10" step="0.5" value="5" style="width:5em"></label>
    <label>sort <select id="f-sort"><option value="index:asc">plan order</option><option value="score:desc">score, high first</option><option value="score:asc">score, low first</option><option value="cost:desc">cost, high first</option><option value="cost:asc">cost, low first</option><option value="latency:desc">latency, slow first</option><option value="latency:asc">latency, fast first</option></select></label>
  </div>
  <div id="actions">
    <label>reject reason <input id="reason" list="reasons" placeholder="optional; r and bulk reject use it" style="width:18em"></label><datalist id="reasons">${presets}</datalist>
    <button id="bulk-accept">Accept all shown</button> <button id="bulk-reject">Reject all shown</button>
    <span id="help">keys: ←/→/↑/↓ move · PgUp/PgDn page · Enter details · a accept · r reject · 1–4 reject with a preset · u unmark · Esc close</span>
    <span id="live"></span> <span id="status" role="status"></span>
  </div>
  <div id="redo"></div>
</header>
<main id="grid"></main>
<nav id="pager"><button id="prev">← previous</button><span id="page-info"></span><button id="next">next →</button></nav>
<section id="detail" hidden></section>
<script>${SCRIPT}</script>
</body>
</html>`;
}
