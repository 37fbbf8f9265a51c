// ponte master room console (issue 23): the cameras and what each site sees
// of them and why; sharing cameras with a site for a while; the sites' asks
// for a camera, approved or refused; the camera alarms and who saw them; the
// PTZ override. Read from the management port's API every second.
//
// The credential (HTTP Basic from the form, or a bearer token) is kept in
// this page's memory only, never in storage: a reload asks again. Rows are
// kept by id and updated in place, so the minutes typed into an ask or a
// button under the pointer survive the next read.

import { t, apply, language, setLanguage, define } from './i18n.js';
// The partner console's building blocks: one copy of each.
import { el, duration, clock, keyed } from './incidents.js';

const POLL_MS = 1000;
const PTZ_POLL_MS = 2000;
const ALARM_KEYS = {
  motion: 'alarmMotion',
  tampering: 'alarmTampering',
  video_loss: 'alarmVideoLoss',
  offline: 'alarmOffline',
  stalled: 'alarmStalled',
  recovered: 'alarmRecovered',
};
const BY_KEYS = { policy: 'byPolicy', share: 'byShare', approval: 'byApproval' };

define({
  it: {
    masterTitle: 'ponte — sala master', masterLoginTitle: 'Accedi alla sala master', orToken: 'oppure un token',
    needCredential: 'Utente e password, oppure un token.', camerasTitle: 'Telecamere e siti',
    colCamera: 'Telecamera', colZone: 'Zona', colState: 'Stato', byPolicy: 'policy', byShare: 'condivisa',
    byApproval: 'approvata', untilTime: 'fino alle {at}', grantedBy: 'da {who}', stateOnline: 'in linea',
    stateOffline: 'NON IN LINEA', stateIdle: 'inattiva', stateConnecting: 'in connessione',
    shareTitle: 'Condividi telecamere', shareSite: 'Sito', shareCameras: 'Telecamere', shareMinutes: 'Minuti',
    shareNote: 'Nota', shareGo: 'Condividi', shareNeedCameras: 'Scegli un sito e almeno una telecamera.',
    shareDone: 'Condivisione {id} offerta a {site}.', shareLine: '{site}: {cameras}', shareBy: 'da {by} alle {at}',
    originApproval: 'su richiesta', stateOffered: 'offerta, non ancora accettata', acceptedBy: 'accettata da {who} alle {at}',
    withdraw: 'Ritira', withdrawn: 'Condivisione {id} ritirata.', asksTitle: 'Richieste dei siti',
    askLine: '{site} · {operator} chiede {camera}', askExpires: 'scade tra {left}', minutes: 'minuti',
    grantCamera: 'Telecamera da concedere', approve: 'Approva', refuse: 'Rifiuta', refuseReason: 'Motivo del rifiuto',
    needReason: 'Scrivi il motivo del rifiuto: il sito lo vedrà.', approvedLine: 'approvata da {by} fino alle {until}',
    refusedLine: 'rifiutata da {by}: {reason}', expiredLine: 'scaduta senza risposta',
    alarmSites: 'siti: {list}', suppressedLine: 'Soppressi (limite di frequenza): {total} — {list}',
    suppressedNone: 'Nessun allarme soppresso.', ptzTitle: 'PTZ: comando della sala master', noDomes: 'Nessuna dome.',
    holderFree: 'libera', holderBy: 'comandata da {site}/{viewer} (priorità {priority})', stop: 'Stop',
    release: 'Rilascia', presetBtn: 'Preset {name}', notSteerable: 'ONVIF non configurato',
    ptzDone: '{camera}: {op} eseguito.',
  },
  en: {
    masterTitle: 'ponte — master room', masterLoginTitle: 'Log in to the master room', orToken: 'or a token',
    needCredential: 'User and password, or a token.', camerasTitle: 'Cameras and sites',
    colCamera: 'Camera', colZone: 'Zone', colState: 'State', byPolicy: 'policy', byShare: 'shared',
    byApproval: 'approved', untilTime: 'until {at}', grantedBy: 'by {who}', stateOnline: 'online',
    stateOffline: 'OFFLINE', stateIdle: 'idle', stateConnecting: 'connecting',
    shareTitle: 'Share cameras', shareSite: 'Site', shareCameras: 'Cameras', shareMinutes: 'Minutes',
    shareNote: 'Note', shareGo: 'Share', shareNeedCameras: 'Pick a site and at least one camera.',
    shareDone: 'Share {id} offered to {site}.', shareLine: '{site}: {cameras}', shareBy: 'by {by} at {at}',
    originApproval: 'on request', stateOffered: 'offered, not accepted yet', acceptedBy: 'accepted by {who} at {at}',
    withdraw: 'Withdraw', withdrawn: 'Share {id} withdrawn.', asksTitle: 'Requests from the sites',
    askLine: '{site} · {operator} asks for {camera}', askExpires: 'expires in {left}', minutes: 'minutes',
    grantCamera: 'Camera to grant', approve: 'Approve', refuse: 'Refuse', refuseReason: 'Reason for refusing',
    needReason: 'Write why you refuse: the site will read it.', approvedLine: 'approved by {by} until {until}',
    refusedLine: 'refused by {by}: {reason}', expiredLine: 'expired without an answer',
    alarmSites: 'sites: {list}', suppressedLine: 'Suppressed (rate limit): {total} — {list}',
    suppressedNone: 'No alarm suppressed.', ptzTitle: 'PTZ: master room override', noDomes: 'No domes.',
    holderFree: 'free', holderBy: 'steered by {site}/{viewer} (priority {priority})', stop: 'Stop',
    release: 'Release', presetBtn: 'Preset {name}', notSteerable: 'ONVIF not configured',
    ptzDone: '{camera}: {op} done.',
  },
});

const $ = (id) => document.getElementById(id);

// ---- the credential, in memory only ------------------------------------------

let authorization = null;
let operator = null;
let last = null;
let skew = 0;
let ready = false;
let inflight = false;

function basic(user, pass) {
  const bytes = new TextEncoder().encode(`${user}:${pass}`);
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return `Basic ${btoa(bin)}`;
}

function needLogin(text) {
  authorization = null;
  ready = false;
  document.body.classList.add('needs-login');
  $('login').hidden = false;
  $('login-error').textContent = text || '';
  $('logout').hidden = true;
  $('who').textContent = '';
  $('login-user').focus();
}

async function login(ev) {
  ev.preventDefault();
  const user = $('login-user').value.trim();
  const pass = $('login-pass').value;
  const token = $('login-token').value.trim();
  if (!token && !(user && pass)) {
    $('login-error').textContent = t('needCredential');
    return;
  }
  authorization = token ? `Bearer ${token}` : basic(user, pass);
  $('login-error').textContent = t('loading');
  const ok = await poll();
  if (ok) {
    $('login-form').reset();
    $('login-error').textContent = '';
    pollPtz();
  }
}

function logout() {
  needLogin('');
  last = null;
}

// A call to the management API with the credential. `credentials: 'omit'`:
// the browser neither adds its own nor answers the agent's Basic challenge
// with its dialog (Fetch standard: only requests that include credentials
// prompt), so a refused credential brings back this page's form.
async function api(path, { method = 'GET', body } = {}) {
  const headers = { Authorization: authorization || '' };
  if (method !== 'GET') headers['Content-Type'] = 'application/json';
  const resp = await fetch(path, {
    method,
    headers,
    cache: 'no-store',
    credentials: 'omit',
    body: method === 'GET' ? undefined : JSON.stringify(body || {}),
  });
  if (resp.status === 401) {
    const why = (await resp.text().catch(() => '')).trim();
    needLogin(errorText(why) || 'HTTP 401');
    throw new Error(errorText(why) || 'HTTP 401');
  }
  return resp;
}

// The API's error: its JSON `error` (or PTZ `reason`), else its text.
function errorText(text) {
  try {
    const body = JSON.parse(text);
    if (body && (body.error || body.reason)) return String(body.error || body.reason);
  } catch (err) {
    // Not JSON: the text itself.
  }
  return text;
}

async function post(path, body) {
  const resp = await api(path, { method: 'POST', body });
  const text = (await resp.text()).trim();
  if (!resp.ok) throw new Error(errorText(text) || `HTTP ${resp.status}`);
  return text ? JSON.parse(text) : null;
}

let noteTimer = null;
function say(text, ok = false) {
  const n = $('note');
  n.textContent = text || '';
  n.hidden = !text;
  n.classList.toggle('ok', ok);
  clearTimeout(noteTimer);
  if (text) noteTimer = setTimeout(() => say(''), ok ? 5000 : 15000);
}

// A button that runs `action`; its failure is said to the operator.
function button(key, attr, action) {
  const b = el('button', { type: 'button', textContent: t(key) });
  b.dataset.i18n = key;
  if (attr) b.setAttribute(attr, '');
  b.addEventListener('click', () => {
    b.disabled = true;
    Promise.resolve()
      .then(action)
      .catch((err) => say(err.message || String(err)))
      .finally(() => {
        b.disabled = false;
      });
  });
  return b;
}

// ---- reading -----------------------------------------------------------------

async function poll() {
  if (!authorization || inflight) return false;
  inflight = true;
  try {
    const resp = await api('/api/incidents');
    if (!resp.ok) {
      say(errorText((await resp.text()).trim()) || `HTTP ${resp.status}`);
      return false;
    }
    last = await resp.json();
    skew = Date.now() - (last.now_ms || Date.now());
    operator = last.operator || null;
    if (!ready) {
      ready = true;
      document.body.classList.remove('needs-login');
      $('login').hidden = true;
      $('logout').hidden = false;
    }
    $('who').textContent = operator || '';
    draw();
    return true;
  } catch (err) {
    if (authorization) say(err.message || String(err));
    return false;
  } finally {
    inflight = false;
  }
}

const left = (ms) => duration(ms - (Date.now() - skew));

// ---- drawing -----------------------------------------------------------------

function draw() {
  if (!last) return;
  drawCameras();
  drawShareForm();
  drawShares();
  drawAsks();
  drawAlarms();
}

function stateText(state) {
  const key = { online: 'stateOnline', offline: 'stateOffline', idle: 'stateIdle', connecting: 'stateConnecting' }[state];
  return key ? t(key) : state || '';
}

let headSites = '';
function drawCameras() {
  const sites = last.sites || [];
  const names = sites.map((s) => s.id).join('\n');
  if (names !== headSites) {
    headSites = names;
    const head = $('cameras-head');
    head.textContent = '';
    head.append(el('th', { textContent: t('colCamera') }), el('th', { textContent: t('colZone') }), el('th', { textContent: t('colState') }));
    for (const s of sites) head.append(el('th', { textContent: s.id }));
    cameraRows.clear();
    $('cameras-body').textContent = '';
  }
  const grants = new Map(sites.map((s) => [s.id, new Map((s.cameras || []).map((c) => [c.id, c]))]));
  keyed(
    $('cameras-body'),
    cameraRows,
    last.cameras || [],
    (c) => c.id,
    (c) => {
      const row = { name: el('td'), zone: el('td'), state: el('td'), sites: sites.map(() => el('td')) };
      row.el = el('tr', {}, row.name, row.zone, row.state, ...row.sites);
      row.el.dataset.camera = c.id;
      return row;
    },
    (row, c) => {
      row.name.textContent = c.name && c.name !== c.id ? `${c.name} (${c.id})` : c.id;
      row.name.title = c.kind || '';
      row.zone.textContent = c.zone || '';
      row.state.textContent = stateText(c.state);
      row.state.className = `state-${c.state}`;
      sites.forEach((s, i) => {
        const g = grants.get(s.id).get(c.id);
        const td = row.sites[i];
        td.dataset.site = s.id;
        td.dataset.by = g ? g.by : '';
        const parts = g ? [t(BY_KEYS[g.by] || g.by)] : ['—'];
        if (g && g.until_ms) parts.push(`${t('untilTime', { at: clock(g.until_ms) })} (${left(g.until_ms)})`);
        if (g && g.granted_by) parts.push(t('grantedBy', { who: g.granted_by }));
        td.textContent = parts.join(' · ');
      });
    },
  );
}
const cameraRows = new Map();

const shareChecks = new Map();
function drawShareForm() {
  const select = $('share-site');
  const sites = (last.sites || []).map((s) => s.id);
  const have = [...select.options].map((o) => o.value);
  if (have.join('\n') !== sites.join('\n')) {
    const keep = select.value;
    select.textContent = '';
    for (const id of sites) select.append(new Option(id, id));
    if (sites.includes(keep)) select.value = keep;
  }
  keyed(
    $('share-cameras'),
    shareChecks,
    last.cameras || [],
    (c) => c.id,
    (c) => {
      const box = el('input', { type: 'checkbox', value: c.id });
      box.dataset.shareCamera = c.id;
      const text = el('span');
      const row = { box, text, el: el('label', {}, box, ' ', text) };
      return row;
    },
    (row, c) => {
      row.text.textContent = `${c.name || c.id}${c.zone ? ` (${c.zone})` : ''}`;
      row.el.title = c.id;
    },
  );
  // The legend stays first.
  const legend = $('share-cameras').querySelector('legend');
  if (legend && legend !== $('share-cameras').firstElementChild) $('share-cameras').prepend(legend);
}

async function share(ev) {
  ev.preventDefault();
  const site = $('share-site').value;
  const cameras = [...document.querySelectorAll('input[data-share-camera]:checked')].map((c) => c.dataset.shareCamera);
  if (!site || !cameras.length) {
    say(t('shareNeedCameras'));
    return;
  }
  const minutes = Math.max(1, Math.round(Number($('share-minutes').value) || 0));
  $('share-go').disabled = true;
  try {
    const out = await post('/api/incidents/shares', { site, cameras, minutes, note: $('share-note').value.trim() });
    for (const c of document.querySelectorAll('input[data-share-camera]')) c.checked = false;
    $('share-note').value = '';
    say(t('shareDone', { id: out ? out.id : '', site }), true);
    poll();
  } catch (err) {
    say(err.message || String(err));
  } finally {
    $('share-go').disabled = false;
  }
}

function shareState(s) {
  if (s.ended) return 'ended';
  return s.accepted_by ? 'accepted' : 'offered';
}

const shareRows = new Map();
function drawShares() {
  const shares = [...(last.shares || [])].sort((a, b) => Number(!!a.ended) - Number(!!b.ended) || b.id - a.id);
  keyed(
    $('share-list'),
    shareRows,
    shares,
    (s) => s.id,
    (s) => {
      const row = {
        what: el('div', { className: 'what' }),
        note: el('div', { className: 'note' }),
        when: el('div', { className: 'when' }),
        accepted: el('div', { className: 'accepted' }),
        withdraw: button('withdraw', 'data-withdraw', async () => {
          await post(`/api/incidents/shares/${encodeURIComponent(row.share.id)}/withdraw`);
          say(t('withdrawn', { id: row.share.id }), true);
          poll();
        }),
      };
      row.el = el('div', { className: 'card share' }, row.what, row.note, row.when, row.accepted, row.withdraw);
      row.el.dataset.share = String(s.id);
      return row;
    },
    (row, s) => {
      row.share = s;
      const state = shareState(s);
      row.el.dataset.state = state;
      row.what.textContent = `#${s.id} ${t('shareLine', { site: s.site, cameras: (s.cameras || []).join(', ') })}`;
      row.note.textContent = s.note || '';
      row.note.hidden = !s.note;
      const when = [t('shareBy', { by: s.by || '?', at: s.from_ms ? clock(s.from_ms) : '' })];
      if (s.origin === 'approval') when.push(t('originApproval'));
      if (s.ended) when.push(s.ended.reason ? t('shareEnded', { why: s.ended.reason }) : t('shareEndedNoReason'));
      else if (s.until_ms) when.push(t('timeLeft', { left: left(s.until_ms) }));
      row.when.textContent = when.join(' · ');
      row.accepted.textContent = s.accepted_by
        ? t('acceptedBy', { who: s.accepted_by, at: s.accepted_ms ? clock(s.accepted_ms) : '' })
        : s.ended
          ? ''
          : t('stateOffered');
      row.withdraw.hidden = !!s.ended;
    },
  );
  $('share-none').hidden = shares.length > 0;
}

function askState(a) {
  if (a.answer) return a.answer.approved ? 'approved' : 'refused';
  return a.expires_ms && a.expires_ms <= (last.now_ms || 0) ? 'expired' : 'pending';
}

const askRows = new Map();
function drawAsks() {
  const asks = [...(last.asks || [])].sort(
    (a, b) => Number(askState(a) !== 'pending') - Number(askState(b) !== 'pending') || (b.asked_ms || 0) - (a.asked_ms || 0),
  );
  keyed($('ask-list'), askRows, asks, (a) => a.id, askRow, updateAsk);
  $('ask-none').hidden = asks.length > 0;
}

function askRow(a) {
  const minutes = el('input', { type: 'number', min: 1, max: 1440, value: 15, title: t('minutes') });
  minutes.dataset.minutes = '';
  const camera = el('select', { title: t('grantCamera') });
  camera.dataset.camera = '';
  const reason = el('input', { maxLength: 500, placeholder: t('refuseReason') });
  reason.dataset.reason = '';
  reason.dataset.i18nPlaceholder = 'refuseReason';
  const row = {
    what: el('div', { className: 'what' }),
    reason: el('div', { className: 'reason' }),
    when: el('div', { className: 'when' }),
    answer: el('div', { className: 'answer' }),
    minutes,
    camera,
    reasonIn: reason,
    approve: button('approve', 'data-approve', async () => {
      const body = { minutes: Math.max(1, Math.round(Number(minutes.value) || 0)) };
      if (camera.value && camera.value !== row.ask.camera) body.camera = camera.value;
      await post(`/api/incidents/asks/${encodeURIComponent(row.ask.id)}/approve`, body);
      poll();
    }),
    refuse: button('refuse', 'data-refuse', async () => {
      const why = reason.value.trim();
      if (!why) {
        say(t('needReason'));
        reason.focus();
        return;
      }
      await post(`/api/incidents/asks/${encodeURIComponent(row.ask.id)}/refuse`, { reason: why });
      poll();
    }),
  };
  row.cameras = '';
  const unit = el('span', { textContent: t('minutes'), className: 'unit' });
  unit.dataset.i18n = 'minutes';
  row.controls = el(
    'div',
    { className: 'controls' },
    el('div', { className: 'line' }, camera, minutes, unit, row.approve),
    el('div', { className: 'line' }, reason, row.refuse),
  );
  row.el = el('div', { className: 'card ask' }, row.what, row.reason, row.when, row.controls, row.answer);
  row.el.dataset.ask = String(a.id);
  return row;
}

function updateAsk(row, a) {
  row.ask = a;
  const state = askState(a);
  row.el.dataset.state = state;
  row.what.textContent = `#${a.id} ${t('askLine', { site: a.site, operator: a.operator || '?', camera: a.camera })}`;
  row.reason.textContent = a.reason || '';
  row.when.textContent = [a.asked_ms ? clock(a.asked_ms) : '', state === 'pending' && a.expires_ms ? t('askExpires', { left: left(a.expires_ms) }) : '']
    .filter(Boolean)
    .join(' · ');
  row.controls.hidden = state !== 'pending';
  // The camera to grant: the one asked for when the master knows that id,
  // else the operator picks the camera the site meant.
  const ids = (last.cameras || []).map((c) => c.id);
  const list = ids.join('\n');
  if (row.cameras !== list) {
    const keep = row.camera.value;
    row.camera.textContent = '';
    if (!ids.includes(a.camera)) row.camera.append(new Option(`${a.camera} ?`, a.camera));
    for (const c of last.cameras || []) row.camera.append(new Option(c.name && c.name !== c.id ? `${c.id} — ${c.name}` : c.id, c.id));
    row.camera.value = keep && [...row.camera.options].some((o) => o.value === keep) ? keep : a.camera;
    row.cameras = list;
  }
  const ans = a.answer;
  if (state === 'approved') {
    row.answer.textContent = t('approvedLine', { by: ans.by, until: ans.until_ms ? clock(ans.until_ms) : '—' });
  } else if (state === 'refused') {
    row.answer.textContent = t('refusedLine', { by: ans.by, reason: ans.reason || '' });
  } else if (state === 'expired') {
    row.answer.textContent = t('expiredLine');
  } else row.answer.textContent = '';
  row.answer.hidden = !row.answer.textContent;
}

const alarmRows = new Map();
function drawAlarms() {
  const alarms = [...(last.alarms || [])].sort((a, b) => (b.at_ms || 0) - (a.at_ms || 0) || b.id - a.id);
  keyed($('alarm-list'), alarmRows, alarms, (a) => a.id, alarmRow, updateAlarm);
  $('alarm-none').hidden = alarms.length > 0;
  const open = alarms.filter((a) => !(a.acks || []).length).length;
  $('alarm-count').textContent = open ? String(open) : '';
  $('alarm-count').hidden = !open;
  const sup = last.suppressed || [];
  $('suppressed').textContent = last.suppressed_total
    ? t('suppressedLine', {
        total: last.suppressed_total,
        list: sup.map((s) => `${s.camera} ${ALARM_KEYS[s.kind] ? t(ALARM_KEYS[s.kind]) : s.kind} ×${s.count}`).join(', '),
      })
    : t('suppressedNone');
}

function alarmRow(a) {
  const row = {
    head: el('div', { className: 'head' }),
    detail: el('div', { className: 'detail' }),
    sites: el('div', { className: 'when' }),
    acks: el('div', { className: 'acks' }),
    ack: button('ack', 'data-ack', async () => {
      await post(`/api/incidents/alarms/${encodeURIComponent(row.alarm.id)}/ack`);
      poll();
    }),
    thumb: null,
    blob: null,
  };
  row.drop = () => row.blob && URL.revokeObjectURL(row.blob);
  row.el = el('div', { className: 'card alarm' }, row.head, row.detail, row.sites, row.acks, row.ack);
  row.el.dataset.alarm = String(a.id);
  return row;
}

// The thumbnail is behind the credential, which an <img> would not send:
// read with it, shown from a blob: URL.
async function loadThumb(row, id) {
  try {
    const resp = await api(`/api/incidents/alarms/${encodeURIComponent(id)}/thumbnail`);
    if (!resp.ok) return;
    row.blob = URL.createObjectURL(await resp.blob());
    row.thumb.src = row.blob;
  } catch (err) {
    // No picture: the alarm still says what happened.
  }
}

function updateAlarm(row, a) {
  row.alarm = a;
  const acks = a.acks || [];
  row.el.dataset.acked = String(acks.length > 0);
  row.el.dataset.kind = a.kind;
  const kind = ALARM_KEYS[a.kind] ? t(ALARM_KEYS[a.kind]) : a.kind;
  const more = a.suppressed ? ` ${t('suppressedN', { n: a.suppressed })}` : '';
  row.head.textContent = `${kind} · ${a.camera} · ${a.at_ms ? clock(a.at_ms) : ''}${more}`;
  row.detail.textContent = a.detail || '';
  row.detail.hidden = !a.detail;
  row.sites.textContent = (a.sites || []).length ? t('alarmSites', { list: a.sites.join(', ') }) : '';
  if (a.has_thumbnail && !row.thumb) {
    row.thumb = el('img', { className: 'thumb', alt: a.camera });
    row.el.insertBefore(row.thumb, row.acks);
    loadThumb(row, a.id);
  }
  row.acks.textContent = acks.length
    ? t('ackedBy', { list: acks.map((k) => `${k.site} (${k.operator}, ${clock(k.at_ms)})`).join(', ') })
    : t('notAcked');
  row.ack.hidden = acks.some((k) => k.site === 'master' && k.operator === operator);
}

// ---- PTZ override ------------------------------------------------------------

const domeRows = new Map();
let ptzInflight = false;

async function pollPtz() {
  if (!authorization || ptzInflight) return;
  ptzInflight = true;
  try {
    const resp = await api('/api/ptz');
    if (!resp.ok) return;
    const domes = await resp.json();
    keyed($('ptz-list'), domeRows, domes, (d) => d.camera, domeRow, updateDome);
    $('ptz-none').hidden = domes.length > 0;
  } catch (err) {
    // Said by the main read.
  } finally {
    ptzInflight = false;
  }
}

async function ptz(camera, cmd) {
  const resp = await api(`/api/ptz/${encodeURIComponent(camera)}`, { method: 'POST', body: cmd });
  const body = await resp.json().catch(() => null);
  if (!body || body.result !== 'done') throw new Error(`${camera}: ${(body && body.reason) || `HTTP ${resp.status}`}`);
  pollPtz();
  return body;
}

function domeRow(d) {
  const row = {
    name: el('div', { className: 'what' }),
    holder: el('div', { className: 'holder' }),
    presets: el('div', { className: 'line presets' }),
    loaded: false,
  };
  row.el = el(
    'div',
    { className: 'card dome' },
    row.name,
    row.holder,
    el(
      'div',
      { className: 'line' },
      button('stop', 'data-ptz-stop', () => ptz(row.dome.camera, { op: 'stop' })),
      button('release', 'data-ptz-release', () => ptz(row.dome.camera, { op: 'release' })),
    ),
    row.presets,
  );
  row.el.dataset.ptz = d.camera;
  return row;
}

async function loadPresets(row, camera) {
  row.loaded = true;
  try {
    const resp = await api(`/api/ptz/${encodeURIComponent(camera)}`);
    if (!resp.ok) return;
    const body = await resp.json();
    row.presets.textContent = '';
    for (const p of body.presets || []) {
      const b = el('button', { type: 'button', textContent: t('presetBtn', { name: p.name || p.token }) });
      b.dataset.preset = p.token;
      b.addEventListener('click', () => ptz(camera, { op: 'goto_preset', preset: p.token }).catch((err) => say(err.message)));
      row.presets.append(b);
    }
  } catch (err) {
    row.loaded = false;
  }
}

function updateDome(row, d) {
  row.dome = d;
  row.name.textContent = `${d.name || d.camera} (${d.camera})${d.zone ? ` · ${d.zone}` : ''}${d.steerable ? '' : ` · ${t('notSteerable')}`}`;
  const h = d.holder;
  row.holder.textContent = h ? t('holderBy', { site: h.site, viewer: h.viewer, priority: h.priority }) : t('holderFree');
  row.holder.classList.toggle('held', !!h);
  if (d.steerable && !row.loaded) loadPresets(row, d.camera);
}

// ---- start -------------------------------------------------------------------

function relabel() {
  apply(document);
  headSites = null;
  for (const row of askRows.values()) row.cameras = '';
  draw();
  for (const row of domeRows.values()) updateDome(row, row.dome);
}

function wire() {
  document.documentElement.lang = language();
  apply(document);
  $('lang').addEventListener('click', () => {
    setLanguage(language() === 'it' ? 'en' : 'it');
    relabel();
  });
  $('login-form').addEventListener('submit', login);
  $('logout').addEventListener('click', logout);
  $('share-form').addEventListener('submit', share);
  setInterval(poll, POLL_MS);
  setInterval(pollPtz, PTZ_POLL_MS);
  needLogin('');
}

// The test interface.
window.ponteMaster = {
  get ready() {
    return ready;
  },
  state: () => last,
};

wire();
