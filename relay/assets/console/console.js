// ponte console: a video wall. Layouts 1×1, 2×2, 3×3, 4×4 and 1+5; cameras
// dragged or clicked into tiles; layouts saved per account at the relay and
// shared by URL; tours; a wall mode for unattended displays (`?wall=1`, the
// bearer token in the URL fragment); keys; Italian and English.
//
// URL fragment: `grid=2x2&tiles=cam1,cam2,,cam4&tour3=cam5+cam6@10`
// (`&layout=NAME` opens a saved layout, `&token=...` in wall mode).
// `?probe=1` reads the capture-time SEI in the browser (tests, bench).

import { Tile, canH265 } from './tile.js';
import { t, apply, language, setLanguage } from './i18n.js';
import { apiHeaders } from './whep.js';
import { still, download } from './snapshot.js';
import { Failover, hostOf } from './failover.js';
import { Incidents } from './incidents.js';

const GRIDS = { '1x1': 1, '2x2': 4, '3x3': 9, '4x4': 16, '1+5': 6 };
const PTZ_SPEED = 500;
const PTZ_REPEAT_MS = 500;
const STRIP_POLL_MS = 2000;
const KINDS = { 'dome-ptz': 'PTZ', dome: 'dome', 'fixed-bi-optic': 'bi-optic', 'fixed-quad-optic': 'quad-optic', fixed: 'fixed' };

const query = new URLSearchParams(location.search);
const fragment = new URLSearchParams(location.hash.slice(1));
const wall = query.get('wall') === '1';
const token = wall ? fragment.get('token') || '' : '';
const $ = (id) => document.getElementById(id);
// The other relays of the site: the page moves to them when its own stops
// answering (failover.js).
const failover = new Failover({
  home: location.origin,
  peers: (document.body.dataset.peers || '').split(' ').filter(Boolean),
  wallToken: token,
  onMove: (from, to) => moved(from, to),
  onNone: () => relayBanner(t('noPeer')),
});

let site = document.body.dataset.site || '';
let viewer = null;
let cameras = [];
let byId = new Map();
let grid = '2x2';
let tiles = [];
let selected = -1;
let layouts = {};
let writable = true;
let ready = false;
let note = '';

// ---- the probe (capture-time SEI read in the browser) ----------------------

function makeProbe() {
  if (query.get('probe') !== '1' || typeof RTCRtpScriptTransform === 'undefined') return null;
  const worker = new Worker('/console/probe-worker.js');
  const maps = new Map(); // layer id → Map(rtp → captureMs)
  let next = 0;
  worker.onmessage = (ev) => {
    const m = maps.get(ev.data.id);
    if (!m) return;
    m.set(ev.data.rtp, ev.data.captureMs);
    if (m.size > 600) m.delete(m.keys().next().value);
  };
  return {
    forLayer(layer) {
      layer.probeId = ++next;
      maps.set(layer.probeId, new Map());
      return { attach: (receiver) => { receiver.transform = new RTCRtpScriptTransform(worker, { id: layer.probeId }); } };
    },
    capture: (layer, rtp) => maps.get(layer.probeId)?.get(rtp),
    drop: (layer) => maps.delete(layer.probeId),
  };
}
const probe = makeProbe();

// ---- tiles -----------------------------------------------------------------

const ctx = {
  get token() {
    return failover.token;
  },
  get base() {
    return failover.base;
  },
  url: (path) => failover.url(path),
  trouble: () => failover.trouble(),
  probe,
  camera: (id) => (id ? byId.get(id) : undefined),
  bigTile: (tile) => grid === '1x1' || (grid === '1+5' && tile.index === 0),
  onChange: () => {
    markOnWall();
    writeUrl();
    redrawStrip();
  },
  onLiveness: () => redrawStrip(),
  onUnauthorized: () => needLogin(''),
  say: (text) => say(text),
  snapshot: (tile) => snapshot(tile.index).catch((err) => say(err.message || String(err))),
  editTour: (tile) => editTour(tile),
  toggleFull: (tile) => (tile.full ? exitFull() : full(tile.index)),
  clear: (tile) => tile.setCamera(null),
  exportClip: (tile) => exportAround(tile).catch((err) => say(t('exportFailed', { why: err.message || String(err) }))),
};

// ---- recall: exports --------------------------------------------------------

// Exports `fromMs`..`toMs` of the tile's camera: the relay asks the master
// room for the clip and its signed manifest, and keeps both for this account.
async function exportClip(index, fromMs, toMs) {
  const tile = tiles[index];
  if (!tile || !tile.camera) throw new Error('no camera in this tile');
  say(t('exporting', { camera: tile.camera }));
  const resp = await fetch(ctx.url('/api/export'), {
    method: 'POST',
    headers: apiHeaders(ctx.token, { 'Content-Type': 'application/json' }),
    body: JSON.stringify({
      camera: tile.camera,
      quality: tile.replayQuality(),
      from_ms: Math.round(fromMs),
      to_ms: Math.round(toMs),
    }),
  });
  if (resp.status === 401) needLogin('');
  if (resp.status !== 201) throw new Error((await resp.text()).trim() || `HTTP ${resp.status}`);
  const out = await resp.json();
  say(`${t('exported', { file: out.file, sha: String(out.manifest.sha256 || '').slice(0, 16) })}${out.clip} · ${out.manifest_url}`);
  return out;
}

// The console's button: the 30 seconds before the picture on screen.
function exportAround(tile) {
  const end = tile.replayAt !== null && tile.captureMs ? tile.captureMs : Date.now();
  return exportClip(tile.index, end - 30000, end);
}

function setGrid(next, cams = null) {
  if (!GRIDS[next]) next = '2x2';
  const keep = cams || tiles.map((tile) => ({ camera: tile.camera, tour: tile.tour }));
  for (const tile of tiles) tile.destroy();
  grid = next;
  const wallEl = $('wall');
  wallEl.dataset.grid = grid;
  wallEl.classList.remove('has-full');
  tiles = [];
  for (let i = 0; i < GRIDS[grid]; i++) {
    const tile = new Tile(ctx, i);
    tiles.push(tile);
    wallEl.append(tile.el);
    wireTile(tile);
  }
  selected = -1;
  keep.slice(0, tiles.length).forEach((spec, i) => {
    if (!spec) return;
    if (spec.tour) tiles[i].setTour(spec.tour);
    else if (spec.camera) tiles[i].setCamera(spec.camera);
  });
  for (const b of document.querySelectorAll('#grids button')) b.setAttribute('aria-pressed', String(b.dataset.grid === grid));
  ctx.onChange();
}

function wireTile(tile) {
  tile.el.addEventListener('click', () => select(tile.index));
  tile.el.addEventListener('dblclick', () => (tile.full ? exitFull() : full(tile.index)));
  tile.el.addEventListener('dragover', (ev) => {
    if (wall) return;
    ev.preventDefault();
    tile.el.classList.add('drop');
  });
  tile.el.addEventListener('dragleave', () => tile.el.classList.remove('drop'));
  tile.el.addEventListener('drop', (ev) => {
    ev.preventDefault();
    tile.el.classList.remove('drop');
    const id = ev.dataTransfer.getData('text/x-ponte-camera');
    if (id && byId.has(id)) tile.setCamera(id);
  });
}

function select(index) {
  if (index >= tiles.length) return;
  selected = index;
  tiles.forEach((tile, i) => tile.setFocus({ selected: i === index }));
  if (index >= 0) tiles[index].el.focus({ preventScroll: true });
  ptzRelease(true);
}

function full(index) {
  if (index < 0 || index >= tiles.length) return;
  select(index);
  $('wall').classList.add('has-full');
  tiles.forEach((tile, i) => tile.setFocus({ full: i === index }));
}

function exitFull() {
  $('wall').classList.remove('has-full');
  tiles.forEach((tile) => tile.setFocus({ full: false }));
}

// Puts a camera into the selected tile, else the first empty one, else the first.
function place(id) {
  let tile = tiles[selected];
  if (!tile) tile = tiles.find((x) => !x.camera && !x.tour) || tiles[0];
  tile.setCamera(id);
}

// Puts cameras the master room just gave (a share accepted, an ask
// approved) on the wall: empty tiles first; else a grid big enough for what
// is on the wall and them; else (4×4 full) over the last tiles.
function placeMany(ids) {
  // A tile already showing the camera plays it again if it had ended (a
  // share that ended, then a new one of the same camera).
  for (const tile of tiles) if (tile.camera && ids.includes(tile.camera)) tile.setCamera(tile.camera);
  const want = [...new Set(ids)].filter((id) => id && !tiles.some((tile) => tile.camera === id));
  if (!want.length) return;
  const isFree = (tile) => !tile.camera && !tile.tour;
  if (tiles.filter(isFree).length < want.length) {
    const used = tiles.filter((tile) => !isFree(tile)).length;
    const bigger = ['2x2', '3x3', '4x4'].find((g) => GRIDS[g] > tiles.length && GRIDS[g] >= used + want.length)
      || (GRIDS['4x4'] > tiles.length ? '4x4' : null);
    if (bigger) setGrid(bigger, tiles.map((tile) => ({ camera: tile.camera, tour: tile.tour })));
  }
  const free = tiles.filter(isFree);
  const last = tiles.filter((tile) => !isFree(tile)).reverse();
  for (const id of want) {
    const tile = free.shift() || last.shift();
    if (tile) tile.setCamera(id);
  }
}

// ---- the camera list --------------------------------------------------------

function label(cam) {
  const lenses = cameras.filter((c) => c.device === cam.device).length;
  return lenses > 1 ? `${cam.name} (${cam.lens})` : cam.name;
}

function drawList() {
  const needle = $('search').value.trim().toLowerCase();
  const root = $('cameras');
  root.textContent = '';
  const zones = new Map();
  for (const cam of cameras) {
    const hay = [cam.name, cam.zone, cam.id, cam.kind, ...(cam.tags || [])].join(' ').toLowerCase();
    if (needle && !hay.includes(needle)) continue;
    if (!zones.has(cam.zone)) zones.set(cam.zone, []);
    zones.get(cam.zone).push(cam);
  }
  if (!zones.size) {
    root.textContent = t('noneFound');
    return;
  }
  for (const zone of [...zones.keys()].sort((a, b) => a.localeCompare(b))) {
    const list = document.createElement('ul');
    for (const cam of zones.get(zone)) {
      const li = document.createElement('li');
      li.draggable = !wall;
      li.tabIndex = 0;
      li.dataset.camera = cam.id;
      li.append(cam.label);
      const meta = document.createElement('span');
      meta.className = 'meta';
      meta.textContent = [KINDS[cam.kind] || cam.kind, cam.codec === 'h265' ? 'H.265' : ''].filter(Boolean).join(' · ');
      li.append(meta);
      li.title = cam.id;
      li.addEventListener('dragstart', (ev) => ev.dataTransfer.setData('text/x-ponte-camera', cam.id));
      li.addEventListener('click', () => place(cam.id));
      li.addEventListener('keydown', (ev) => {
        if (ev.key === 'Enter') place(cam.id);
      });
      list.append(li);
    }
    const h = document.createElement('h3');
    h.textContent = zone;
    root.append(h, list);
  }
  markOnWall();
}

function markOnWall() {
  const on = new Set(tiles.map((tile) => tile.camera).filter(Boolean));
  for (const li of document.querySelectorAll('#cameras li')) li.classList.toggle('on-wall', on.has(li.dataset.camera));
}

// ---- login and catalog ------------------------------------------------------

function needLogin(text) {
  if (wall) {
    say(`401: ${text || 'the wall token was refused'}`);
    return;
  }
  // At another relay of the site (its pair token refused: expired, or the
  // account changed there) the form would post to this page's own relay,
  // which is down: the page goes to that relay's console instead, the wall
  // in its address, and the operator logs in there.
  if (failover.current !== failover.home) {
    location.assign(`${failover.current}/console#${encodeLayout(current())}`);
    return;
  }
  // Every tile says 401 once its session is gone: ask once, stop them once.
  if (!$('login').hidden) return;
  for (const tile of tiles) tile.stopLayers();
  document.body.classList.add('needs-login');
  loginPrompts += 1;
  $('login').hidden = false;
  $('login-error').textContent = text || '';
  $('login-user').focus();
}

async function login(ev) {
  ev.preventDefault();
  $('login-error').textContent = t('loading');
  try {
    const resp = await fetch('/login', { method: 'POST', body: new URLSearchParams(new FormData($('login-form'))) });
    if (!resp.ok) throw new Error((await resp.text()).trim() || `HTTP ${resp.status}`);
    $('login-form').reset();
    $('login-error').textContent = '';
    await start();
  } catch (err) {
    $('login-error').textContent = err.message || String(err);
  }
}

async function logout() {
  for (const tile of tiles) tile.stopLayers();
  await fetch('/logout', { method: 'POST' }).catch(() => {});
  location.reload();
}

async function loadCatalog() {
  const resp = await fetch(ctx.url('/api/catalog'), { cache: 'no-store', headers: apiHeaders(ctx.token) });
  if (resp.status === 401) {
    needLogin('');
    return false;
  }
  if (!resp.ok) throw new Error((await resp.text()).trim() || `HTTP ${resp.status}`);
  const body = await resp.json();
  site = body.site || site;
  viewer = body.viewer || null;
  cameras = body.cameras || [];
  for (const cam of cameras) cam.label = label(cam);
  byId = new Map(cameras.map((c) => [c.id, c]));
  document.body.classList.remove('needs-login');
  $('login').hidden = true;
  $('who').textContent = viewer ? t('loggedInAs', { who: viewer }) : '';
  $('logout').hidden = !viewer || wall;
  drawList();
  return true;
}

async function loadLayouts() {
  const resp = await fetch(ctx.url('/api/layouts'), { cache: 'no-store', headers: apiHeaders(ctx.token) });
  if (!resp.ok) return;
  const body = await resp.json();
  layouts = body.layouts || {};
  writable = body.writable && !wall;
  const pick = $('layout-pick');
  pick.textContent = '';
  pick.append(new Option(t('pickLayout'), ''));
  for (const name of Object.keys(layouts)) pick.append(new Option(name, name));
}

// ---- layouts: saved at the relay, shared by URL -----------------------------

function current() {
  return {
    grid,
    tiles: tiles.map((tile) =>
      tile.tour ? { tour: { cameras: tile.tour.cameras, every_secs: tile.tour.every_secs } } : tile.camera ? { camera: tile.camera } : {},
    ),
  };
}

function applyLayout(layout) {
  const specs = (layout.tiles || []).map((x) => ({ camera: x.camera || null, tour: x.tour || null }));
  setGrid(layout.grid, specs);
}

async function saveLayout(name) {
  name = (name || '').trim();
  if (!name) return say(t('needName'));
  const resp = await fetch(ctx.url(`/api/layouts/${encodeURIComponent(name)}`), {
    method: 'PUT',
    headers: apiHeaders(ctx.token, { 'Content-Type': 'application/json' }),
    body: JSON.stringify(current()),
  });
  if (!resp.ok) return say((await resp.text()).trim());
  await loadLayouts();
  $('layout-pick').value = name;
  say(t('saved', { name }));
  return true;
}

async function deleteLayout(name) {
  if (!name) return;
  const resp = await fetch(ctx.url(`/api/layouts/${encodeURIComponent(name)}`), { method: 'DELETE', headers: apiHeaders(ctx.token) });
  if (!resp.ok) return say((await resp.text()).trim());
  await loadLayouts();
  say(t('deleted', { name }));
}

function encodeLayout(layout) {
  const p = new URLSearchParams();
  p.set('grid', layout.grid);
  p.set('tiles', layout.tiles.map((x) => x.camera || '').join(','));
  layout.tiles.forEach((x, i) => {
    if (x.tour) p.set(`tour${i + 1}`, `${x.tour.cameras.join('+')}@${x.tour.every_secs}`);
  });
  return p;
}

function decodeLayout(p) {
  if (!p.get('grid')) return null;
  const cams = (p.get('tiles') || '').split(',');
  const n = GRIDS[p.get('grid')] || 4;
  const layout = { grid: p.get('grid'), tiles: [] };
  for (let i = 0; i < n; i++) {
    const tour = p.get(`tour${i + 1}`);
    if (tour) {
      const [list, secs] = tour.split('@');
      const every = Math.min(3600, Math.max(3, Math.round(Number(secs)) || 10));
      layout.tiles.push({ tour: { cameras: list.split('+').filter(Boolean).slice(0, 32), every_secs: every } });
    } else layout.tiles.push(cams[i] ? { camera: cams[i] } : {});
  }
  return layout;
}

function writeUrl() {
  if (!ready) return;
  const p = encodeLayout(current());
  if (wall && token) p.set('token', token);
  history.replaceState(null, '', `${location.pathname}${location.search}#${p}`);
}

function shareUrl() {
  const p = encodeLayout(current());
  return `${location.origin}/console#${p}`;
}

// ---- tours ------------------------------------------------------------------

function editTour(tile) {
  const box = $('tour-cameras');
  box.textContent = '';
  const inTour = new Set(tile.tour ? tile.tour.cameras : tile.camera ? [tile.camera] : []);
  for (const cam of cameras) {
    const l = document.createElement('label');
    const c = document.createElement('input');
    c.type = 'checkbox';
    c.value = cam.id;
    c.checked = inTour.has(cam.id);
    l.append(c, ` ${cam.label} (${cam.zone})`);
    box.append(l);
  }
  const dialog = $('tour');
  dialog.onclose = () => {
    if (dialog.returnValue !== 'ok') return;
    const chosen = [...box.querySelectorAll('input:checked')].map((c) => c.value);
    const secs = Math.min(3600, Math.max(3, Number($('tour-secs').value) || 10));
    tile.setTour(chosen.length ? { cameras: chosen, every_secs: secs } : null);
    ctx.onChange();
  };
  dialog.showModal();
}

// ---- snapshot ---------------------------------------------------------------

async function snapshot(index) {
  const tile = tiles[index];
  if (!tile || !tile.layer) throw new Error('no picture in this tile');
  const cam = byId.get(tile.camera);
  // The capture time of the picture on screen (not now minus its age at
  // the last frame: a frozen picture would be stamped too late).
  const captureMs = tile.captureMs ?? NaN;
  const shot = await still(tile.layer.video, {
    name: cam ? cam.label : tile.camera,
    camera: tile.camera,
    captureMs,
    operator: viewer,
    site,
  });
  const stamp = new Date(Number.isFinite(captureMs) ? captureMs : Date.now()).toISOString().replace(/[:.]/g, '-');
  const file = `${tile.camera}-${stamp}.png`;
  // Audited first: no audit line, no file.
  const audited = await fetch(ctx.url('/api/snapshot'), {
    method: 'POST',
    headers: apiHeaders(ctx.token, { 'Content-Type': 'application/json' }),
    body: JSON.stringify({ camera: tile.camera, capture_ms: Number.isFinite(captureMs) ? captureMs : null, file }),
  });
  if (!audited.ok) throw new Error((await audited.text()).trim() || `snapshot: HTTP ${audited.status}`);
  download(shot.blob, file);
  say(t('snapshotSaved', { file }));
  return { ...shot, file };
}

// ---- PTZ from the keyboard --------------------------------------------------

let ptzHeld = null;
let ptzTimer = null;
let ptzChain = Promise.resolve();
let ptzInflight = 0;

function ptzCamera() {
  const tile = tiles[selected];
  const cam = tile && byId.get(tile.camera);
  return cam && cam.ptz ? cam.id : null;
}

async function ptzPost(camera, cmd) {
  const resp = await fetch(ctx.url(`/api/ptz/${encodeURIComponent(camera)}`), {
    method: 'POST',
    headers: apiHeaders(ctx.token, { 'Content-Type': 'application/json' }),
    body: JSON.stringify(cmd),
  });
  const body = await resp.json().catch(() => null);
  return { ok: !!body && body.result === 'done', why: (body && body.reason) || `PTZ: HTTP ${resp.status}` };
}

// Commands go out one after another (a stop is never overtaken by a move
// still on its way); a stop that fails is tried once more.
function ptzSend(camera, cmd) {
  ptzInflight += 1;
  ptzChain = ptzChain.then(async () => {
    try {
      let result = await ptzPost(camera, cmd).catch((err) => ({ ok: false, why: `PTZ: ${err.message || err}` }));
      if (!result.ok && cmd.op === 'stop') {
        result = await ptzPost(camera, cmd).catch((err) => ({ ok: false, why: `PTZ: ${err.message || err}` }));
      }
      if (!result.ok) {
        say(result.why);
        if (cmd.op === 'move') ptzRelease(false);
      }
    } finally {
      ptzInflight -= 1;
    }
  });
  return ptzChain;
}

// `code` is the physical key (`ev.code`): its key-up ends the hold even if
// Shift changed the character in between (`+` down, `=` up).
function ptzPress(code, velocity) {
  const camera = ptzCamera();
  if (!camera || (ptzHeld && ptzHeld.code === code)) return;
  ptzRelease(true);
  const cmd = { op: 'move', ...velocity };
  ptzHeld = { code, camera };
  ptzSend(camera, cmd);
  // Renewed while held (the agent stops a move not renewed within 1.5 s);
  // a renewal still on its way is enough.
  ptzTimer = setInterval(() => ptzHeld && ptzInflight === 0 && ptzSend(camera, cmd), PTZ_REPEAT_MS);
}

function ptzRelease(send) {
  if (!ptzHeld) return;
  const { camera } = ptzHeld;
  ptzHeld = null;
  clearInterval(ptzTimer);
  if (send) ptzSend(camera, { op: 'stop' });
}

const PTZ_KEYS = {
  ArrowLeft: { pan: -PTZ_SPEED, tilt: 0, zoom: 0 },
  ArrowRight: { pan: PTZ_SPEED, tilt: 0, zoom: 0 },
  ArrowUp: { pan: 0, tilt: PTZ_SPEED, zoom: 0 },
  ArrowDown: { pan: 0, tilt: -PTZ_SPEED, zoom: 0 },
  '+': { pan: 0, tilt: 0, zoom: PTZ_SPEED },
  '=': { pan: 0, tilt: 0, zoom: PTZ_SPEED },
  '-': { pan: 0, tilt: 0, zoom: -PTZ_SPEED },
};

function onKey(ev) {
  if (ev.target.closest('input, select, textarea, dialog')) return;
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (/^[1-9]$/.test(ev.key)) {
    select(Number(ev.key) - 1);
  } else if (ev.key === 'Enter' && selected >= 0) {
    full(selected);
  } else if (ev.key === 'Escape') {
    if ($('wall').classList.contains('has-full')) exitFull();
    else select(-1);
  } else if (ev.key === '?') {
    $('help').showModal();
  } else if (PTZ_KEYS[ev.key]) {
    if (!ptzCamera()) return;
    ev.preventDefault();
    if (!ev.repeat) ptzPress(ev.code, PTZ_KEYS[ev.key]);
  } else return;
  ev.preventDefault();
}

function onKeyUp(ev) {
  if (ptzHeld && ptzHeld.code === ev.code) ptzRelease(true);
}

// ---- status strip -----------------------------------------------------------

let strip = { links: [] };

async function pollStrip() {
  try {
    const resp = await fetch(ctx.url('/api/strip'), { cache: 'no-store', headers: apiHeaders(ctx.token) });
    if (resp.ok) strip = await resp.json();
  } catch (err) {
    strip = { links: [], unreachable: true };
  }
  redrawStrip();
}

function redrawStrip() {
  const link = $('strip-link');
  const links = strip.links || [];
  const down = links.filter((l) => l.state !== 'up');
  if (!links.length) {
    link.textContent = t('noLink');
    link.className = 'down';
  } else if (down.length) {
    link.textContent = down.map((l) => t('linkDown', { peer: l.peer })).join(' · ');
    link.className = 'down';
  } else {
    const rtt = Math.max(...links.map((l) => l.rtt_ms || 0));
    link.textContent = t('linkUp', { rtt: rtt.toFixed(1) });
    link.className = 'up';
  }
  const bps = links.reduce((n, l) => n + (l.recv_bps || 0), 0);
  const budget = links.map((l) => l.budget_bps).find((b) => b);
  $('strip-rate').textContent = budget
    ? t('budget', { mbps: (bps / 1e6).toFixed(1), budget: (budget / 1e6).toFixed(1) })
    : t('rate', { mbps: (bps / 1e6).toFixed(1) });
  const paused = tiles.filter((tile) => tile.notLive).map((tile) => `${tile.index + 1} ${tile.camera}: ${tile.reason}`);
  $('strip-paused').textContent = paused.length ? t('pausedTiles', { list: paused.join(' · ') }) : '';
  $('strip-note').textContent = note;
}

let noteTimer = null;
function say(text) {
  note = text || '';
  redrawStrip();
  clearTimeout(noteTimer);
  noteTimer = setTimeout(() => {
    note = '';
    redrawStrip();
  }, 8000);
}

// ---- incidents: shares, asks, alarms (incidents.js) --------------------------

const incidents = new Incidents({
  url: (path) => ctx.url(path),
  headers: (extra = {}) => apiHeaders(ctx.token, extra),
  active: () => ready && !wall && !document.body.classList.contains('needs-login'),
  viewer: () => viewer,
  site: () => site,
  say: (text) => say(text),
  onUnauthorized: () => needLogin(''),
  reloadCatalog: () => loadCatalog(),
  hasCamera: (id) => byId.has(id),
  place: (ids) => placeMany(ids),
  tilesOf: (ids) => tiles.filter((tile) => tile.camera && ids.includes(tile.camera)),
});

// ---- start ------------------------------------------------------------------

function drawHelp() {
  const dl = $('help-keys');
  dl.textContent = '';
  for (const [k, v] of t('keys')) {
    const dt = document.createElement('dt');
    dt.textContent = k;
    const dd = document.createElement('dd');
    dd.textContent = v;
    dl.append(dt, dd);
  }
}

function relabel() {
  apply(document);
  drawHelp();
  drawList();
  for (const tile of tiles) {
    apply(tile.el);
    tile.redraw();
  }
  incidents.draw();
  redrawStrip();
}

async function start() {
  if (!(await loadCatalog())) return;
  await loadLayouts();
  // The fragment as it is now (a login again mid-shift keeps the wall).
  const now = new URLSearchParams(location.hash.slice(1));
  const named = now.get('layout');
  const fromUrl = decodeLayout(now);
  if (named && layouts[named]) applyLayout(layouts[named]);
  else if (fromUrl) applyLayout(fromUrl);
  else setGrid(grid);
  ready = true;
  writeUrl();
  pollStrip();
  // A token for the other relays of the site, while this one answers.
  await failover.refreshToken();
  failover.start();
}

// ---- the relay pair: moving to another relay of the site ---------------------

let loginPrompts = 0;

function relayBanner(text) {
  const el = $('relay-banner');
  el.textContent = text || '';
  el.hidden = !text;
}

// The page moved from one relay to another: every tile plays again there,
// the wall as it was; the catalog and that relay's own saved layouts are
// read again in the background.
function moved(from, to) {
  for (const tile of tiles) tile.reopen();
  relayBanner(to === failover.home ? t('backHome', { relay: hostOf(to) }) : t('failedOver', { peer: hostOf(to) }));
  loadCatalog().catch(() => {});
  loadLayouts().catch(() => {});
  pollStrip();
}

function wire() {
  document.documentElement.lang = language();
  if (wall) document.body.classList.add('wall');
  apply(document);
  drawHelp();
  $('lang').addEventListener('click', () => {
    setLanguage(language() === 'it' ? 'en' : 'it');
    relabel();
  });
  $('help-open').addEventListener('click', () => $('help').showModal());
  $('login-form').addEventListener('submit', login);
  $('logout').addEventListener('click', logout);
  $('search').addEventListener('input', drawList);
  for (const b of document.querySelectorAll('#grids button')) b.addEventListener('click', () => setGrid(b.dataset.grid));
  $('layout-pick').addEventListener('change', () => {
    const name = $('layout-pick').value;
    if (name && layouts[name]) {
      applyLayout(layouts[name]);
      $('layout-name').value = name;
    }
  });
  $('layout-save').addEventListener('click', () => saveLayout($('layout-name').value || $('layout-pick').value));
  $('layout-delete').addEventListener('click', () => deleteLayout($('layout-pick').value));
  $('layout-share').addEventListener('click', async () => {
    const url = shareUrl();
    try {
      await navigator.clipboard.writeText(url);
      say(t('linkCopied'));
    } catch (err) {
      say(t('linkReady', { url }));
    }
  });
  document.addEventListener('keydown', onKey);
  document.addEventListener('keyup', onKeyUp);
  window.addEventListener('blur', () => ptzRelease(true));
  document.addEventListener('visibilitychange', () => document.hidden && ptzRelease(true));
  window.addEventListener('pagehide', () => tiles.forEach((tile) => tile.stopLayers()));
  setInterval(() => {
    const now = performance.now();
    for (const tile of tiles) tile.tick(now);
  }, 100);
  setInterval(pollStrip, STRIP_POLL_MS);
  if (!wall) incidents.start();
  document.body.classList.remove('loading');
  start().catch((err) => say(err.message || String(err)));
}

// The test interface (tests and the bench drive the console through it).
window.ponteConsole = {
  get ready() {
    return ready;
  },
  get viewer() {
    return viewer;
  },
  canH265,
  probe: !!probe,
  cameras: () => cameras.map((c) => c.id),
  setLayout: (g, cams) => setGrid(g, (cams || []).map((camera) => ({ camera }))),
  layout: () => current(),
  tiles: () => tiles.map((tile) => tile.info()),
  decoded: () => Promise.all(tiles.map((tile) => tile.decoded())),
  samples: (i) => (tiles[i] ? tiles[i].samples : []),
  select,
  full,
  exitFull,
  snapshot: async (i) => {
    const shot = await snapshot(i);
    const bytes = new Uint8Array(await shot.blob.arrayBuffer());
    let bin = '';
    for (let k = 0; k < bytes.length; k += 0x8000) bin += String.fromCharCode(...bytes.subarray(k, k + 0x8000));
    return { file: shot.file, text: shot.text, width: shot.width, height: shot.height, pngBase64: btoa(bin) };
  },
  saveLayout,
  playFrom: (i, atMs) => tiles[i] && tiles[i].playFrom(atMs),
  rewind: (i, ms) => tiles[i] && tiles[i].rewind(ms),
  live: (i) => tiles[i] && tiles[i].goLive(),
  recordings: (i) => (tiles[i] ? tiles[i].loadRanges() : null),
  exportClip,
  loadLayouts: async () => {
    await loadLayouts();
    return layouts;
  },
  shareUrl,
  strip: () => ({ link: $('strip-link').textContent, rate: $('strip-rate').textContent, paused: $('strip-paused').textContent }),
  // The relay pair: where the page plays from, its moves, the banner, and
  // how often the login form was shown.
  relay: () => ({ ...failover.info(), banner: $('relay-banner').hidden ? '' : $('relay-banner').textContent, loginPrompts }),
  // Issue 23: the last `GET /api/incidents` the panel read.
  incidents: () => incidents.last,
};

wire();
