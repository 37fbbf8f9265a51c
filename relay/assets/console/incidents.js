// Working together on an incident (issue 23), the partner site's side: the
// cameras the master room shares (accept → onto the wall), asking the master
// room for a camera outside the site's grant, and the camera alarms of the
// cameras this site may see, acknowledged here and seen everywhere.
//
// The panel is drawn from `GET /api/incidents`, read every 500 ms: a share
// that ends is seen (and its tiles asked about their session) within that,
// so the tile says why within a second. Rows are kept by id and updated in
// place, so a button is never replaced under the operator's pointer.

import { t } from './i18n.js';

const POLL_MS = 500;
// After an accept or an approval the camera enters the site's catalog; the
// page waits for it this long before putting it on the wall anyway.
const CATALOG_WAIT_MS = 3000;
const CATALOG_RETRY_MS = 250;
const ALARM_KEYS = {
  motion: 'alarmMotion',
  tampering: 'alarmTampering',
  video_loss: 'alarmVideoLoss',
  offline: 'alarmOffline',
  stalled: 'alarmStalled',
  recovered: 'alarmRecovered',
};

const $ = (id) => document.getElementById(id);

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  node.append(...children);
  return node;
}

// `ms` as m:ss (or h:mm:ss).
export function duration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

export function clock(ms) {
  return new Date(ms).toLocaleTimeString();
}

// The relay's error for a refused request: its JSON `error`, else its text.
export async function errorOf(resp) {
  const text = (await resp.text().catch(() => '')).trim();
  try {
    const body = JSON.parse(text);
    if (body && body.error) return String(body.error);
  } catch (err) {
    // Not JSON: the text itself.
  }
  return text || `HTTP ${resp.status}`;
}

// Keeps `container`'s children as one element per item, by key: new ones
// built, gone ones removed, the rest updated in place and in order.
export function keyed(container, rows, items, keyOf, build, update) {
  const seen = new Set();
  items.forEach((item, i) => {
    const key = String(keyOf(item));
    seen.add(key);
    let row = rows.get(key);
    if (!row) {
      row = build(item);
      rows.set(key, row);
    }
    update(row, item);
    // Moved only when out of place (a moved button loses a click in flight).
    if (container.children[i] !== row.el) container.insertBefore(row.el, container.children[i] || null);
  });
  for (const [key, row] of rows) {
    if (seen.has(key)) continue;
    row.el.remove();
    if (row.drop) row.drop();
    rows.delete(key);
  }
}

export class Incidents {
  // page: { url(path), headers(extra), active(), viewer(), say(text), onUnauthorized(),
  //         reloadCatalog(), hasCamera(id), place(ids), tilesOf(ids) → [Tile] }
  constructor(page) {
    this.page = page;
    this.last = null;
    this.skew = 0;
    this.inflight = false;
    this.timer = null;
    this.shareRows = new Map();
    this.askRows = new Map();
    this.alarmRows = new Map();
    // What this page has seen and done, so it acts once per change.
    this.shareStates = new Map();
    this.askStates = new Map();
    this.myAsks = new Set();
    this.first = true;
  }

  start() {
    $('ask-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.ask().catch((err) => this.error(err.message || String(err)));
    });
    this.timer = setInterval(() => this.poll(), POLL_MS);
    this.poll();
  }

  error(text) {
    const box = $('incident-error');
    box.textContent = text || '';
    box.hidden = !text;
    if (text) this.page.say(text);
  }

  async post(path, body = {}) {
    const resp = await fetch(this.page.url(path), {
      method: 'POST',
      headers: this.page.headers({ 'Content-Type': 'application/json' }),
      body: JSON.stringify(body),
    });
    if (resp.status === 401) this.page.onUnauthorized();
    if (!resp.ok) throw new Error(await errorOf(resp));
    this.error('');
    const text = await resp.text();
    return text ? JSON.parse(text) : null;
  }

  async poll() {
    if (this.inflight || !this.page.active()) return;
    this.inflight = true;
    try {
      const resp = await fetch(this.page.url('/api/incidents'), { cache: 'no-store', headers: this.page.headers() });
      if (resp.status === 401) {
        this.page.onUnauthorized();
        return;
      }
      if (!resp.ok) return;
      const body = await resp.json();
      this.last = body;
      this.skew = Date.now() - (body.now_ms || Date.now());
      this.react(body);
      this.draw();
    } catch (err) {
      // The relay does not answer: the strip and the tiles say it.
    } finally {
      this.inflight = false;
    }
  }

  // Time left until `ms` (the relay's clock), as shown.
  left(ms) {
    return duration(ms - (Date.now() - this.skew));
  }

  // ---- what changed since the last read ------------------------------------

  react(body) {
    const first = this.first;
    this.first = false;
    for (const share of body.shares || []) {
      const was = this.shareStates.get(share.id);
      this.shareStates.set(share.id, share.state);
      if (share.state === 'ended' && was && was !== 'ended') this.shareEnded(share);
    }
    for (const ask of body.asks || []) {
      const was = this.askStates.get(ask.id);
      this.askStates.set(ask.id, ask.state);
      const mine = this.myAsks.has(ask.id) || this.isMine(ask.operator);
      // Placed once, when this page sees the approval happen (not on every
      // load of the page after it).
      if (ask.state === 'approved' && was !== 'approved' && mine && !(first && !this.myAsks.has(ask.id))) {
        this.arrive([ask.camera]).then(() => this.page.say(t('askPlaced', { camera: ask.camera })));
      }
    }
  }

  isMine(operator) {
    const viewer = this.page.viewer();
    return !!viewer && (operator === viewer || String(operator || '').split('@')[0] === viewer);
  }

  // A share ended: its tiles ask the relay now; those whose camera left the
  // catalog stop with the share's reason (the relay's own reason, if its
  // answer came first, stays).
  async shareEnded(share) {
    const tiles = this.page.tilesOf(share.cameras || []);
    for (const tile of tiles) tile.checkNow();
    if (!tiles.length) return;
    await this.page.reloadCatalog().catch(() => {});
    const why = t('revoked', { why: share.ended_reason || t('shareEndedNoReason') });
    for (const tile of tiles) {
      if (tile.camera && !this.page.hasCamera(tile.camera) && (tile.layer || tile.pending)) tile.end(why);
    }
  }

  // Waits (briefly) for `ids` to be in the site's catalog, then puts them
  // on the wall.
  async arrive(ids) {
    const until = Date.now() + CATALOG_WAIT_MS;
    for (;;) {
      await this.page.reloadCatalog().catch(() => {});
      if (ids.every((id) => this.page.hasCamera(id)) || Date.now() > until) break;
      await new Promise((r) => setTimeout(r, CATALOG_RETRY_MS));
    }
    this.page.place(ids);
  }

  // ---- actions --------------------------------------------------------------

  async accept(share) {
    const out = await this.post(`/api/incidents/shares/${encodeURIComponent(share.id)}/accept`);
    this.shareStates.set(share.id, 'accepted');
    // The relay answers with the cameras to put in tiles.
    const cameras = (out && out.cameras) || share.cameras || [];
    await this.arrive(cameras);
    this.page.say(t('sharePlaced', { cameras: cameras.join(', ') }));
    this.poll();
  }

  async ask() {
    const camera = $('ask-camera').value.trim();
    const reason = $('ask-reason').value.trim();
    if (!camera || !reason) {
      this.error(t('askNeedBoth'));
      return;
    }
    $('ask-send').disabled = true;
    try {
      const out = await this.post('/api/incidents/asks', { camera, reason });
      if (out && out.id !== undefined) this.myAsks.add(out.id);
      $('ask-form').reset();
      this.page.say(t('askSent', { id: out ? out.id : '' }));
    } finally {
      $('ask-send').disabled = false;
    }
    this.poll();
  }

  async ack(alarm) {
    await this.post(`/api/incidents/alarms/${encodeURIComponent(alarm.id)}/ack`);
    this.poll();
  }

  // A button that runs `action`, its failure shown to the operator.
  button(key, attr, action) {
    const b = el('button', { type: 'button', textContent: t(key) });
    b.dataset.i18n = key;
    b.setAttribute(attr, '');
    b.addEventListener('click', () => {
      b.disabled = true;
      action()
        .catch((err) => this.error(err.message || String(err)))
        .finally(() => {
          b.disabled = false;
        });
    });
    return b;
  }

  // ---- drawing --------------------------------------------------------------

  draw() {
    const body = this.last;
    if (!body) return;
    const shares = body.shares || [];
    const offers = shares.filter((s) => s.state === 'offered');
    const rest = shares.filter((s) => s.state !== 'offered').sort((a, b) => order(a) - order(b) || b.id - a.id);
    // One element per share: in the offers box while offered, in the list after.
    const shareRow = (s) => this.shareRow(s);
    const update = (row, s) => this.updateShare(row, s);
    const keep = new Map(this.shareRows);
    const offerRows = new Map([...keep].filter(([id]) => offers.some((s) => String(s.id) === id)));
    const listRows = new Map([...keep].filter(([id]) => rest.some((s) => String(s.id) === id)));
    keyed($('share-offers'), offerRows, offers, (s) => s.id, (s) => keep.get(String(s.id)) || shareRow(s), update);
    keyed($('share-list'), listRows, rest, (s) => s.id, (s) => keep.get(String(s.id)) || shareRow(s), update);
    this.shareRows = new Map([...offerRows, ...listRows]);
    for (const [id, row] of keep) if (!this.shareRows.has(id)) row.el.remove();
    $('share-offers').hidden = !offers.length;
    $('share-none').hidden = rest.length > 0;

    const asks = [...(body.asks || [])].sort((a, b) => (b.asked_ms || 0) - (a.asked_ms || 0) || b.id - a.id);
    keyed($('ask-list'), this.askRows, asks, (a) => a.id, (a) => this.askRow(a), (row, a) => this.updateAsk(row, a));
    $('ask-none').hidden = asks.length > 0;

    const alarms = [...(body.alarms || [])].sort((a, b) => (b.at_ms || 0) - (a.at_ms || 0) || b.id - a.id);
    keyed(
      $('alarm-list'),
      this.alarmRows,
      alarms,
      (a) => a.id,
      (a) => this.alarmRow(a),
      (row, a) => this.updateAlarm(row, a),
    );
    $('alarm-none').hidden = alarms.length > 0;
    const open = alarms.filter((a) => !(a.acks || []).length).length;
    $('alarm-count').textContent = open ? String(open) : '';
    $('alarm-count').hidden = !open;
  }

  shareRow(share) {
    const row = {
      who: el('div', { className: 'who' }),
      note: el('div', { className: 'note' }),
      when: el('div', { className: 'when' }),
      accept: this.button('accept', 'data-accept', () => this.accept(row.share)),
    };
    row.el = el('div', { className: 'share card' }, row.who, row.note, row.when, row.accept);
    row.el.dataset.share = String(share.id);
    return row;
  }

  updateShare(row, s) {
    row.share = s;
    row.el.dataset.state = s.state;
    row.el.setAttribute('role', s.state === 'offered' ? 'alert' : 'listitem');
    row.who.textContent = t('shareFrom', { by: s.by || '?', cameras: (s.cameras || []).join(', ') });
    row.note.textContent = s.note || '';
    row.note.hidden = !s.note;
    if (s.state === 'ended') {
      row.when.textContent = s.ended_reason ? t('shareEnded', { why: s.ended_reason }) : t('shareEndedNoReason');
    } else {
      const left = s.until_ms ? t('timeLeft', { left: this.left(s.until_ms) }) : '';
      const by = s.accepted_by ? t('shareAccepted', { who: s.accepted_by }) : '';
      row.when.textContent = [by, left].filter(Boolean).join(' · ');
    }
    row.accept.hidden = s.state !== 'offered';
    row.accept.textContent = t('accept');
  }

  askRow(ask) {
    const row = {
      what: el('div', { className: 'what' }),
      reason: el('div', { className: 'reason' }),
      state: el('div', { className: 'state' }),
      answer: el('div', { className: 'answer' }),
    };
    row.el = el('div', { className: 'ask card' }, row.what, row.reason, row.state, row.answer);
    row.el.dataset.ask = String(ask.id);
    return row;
  }

  updateAsk(row, a) {
    row.el.dataset.state = a.state;
    row.what.textContent = `${a.camera} — ${t('askBy', { operator: a.operator || '?', at: a.asked_ms ? clock(a.asked_ms) : '' })}`;
    row.reason.textContent = a.reason || '';
    const by = a.answer_by || '?';
    if (a.state === 'approved') {
      const until = a.until_ms ? `${clock(a.until_ms)} (${this.left(a.until_ms)})` : '—';
      row.state.textContent = t('askApproved', { by, until });
    } else if (a.state === 'refused') {
      row.state.textContent = t('askRefused', { by });
    } else {
      row.state.textContent = t('askPending');
    }
    row.answer.textContent = a.answer_reason || '';
    row.answer.hidden = !a.answer_reason;
  }

  alarmRow(alarm) {
    const row = {
      head: el('div', { className: 'head' }),
      detail: el('div', { className: 'detail' }),
      acks: el('div', { className: 'acks' }),
      ack: this.button('ack', 'data-ack', () => this.ack(row.alarm)),
      thumb: null,
    };
    row.el = el('div', { className: 'alarm card' }, row.head, row.detail, row.acks, row.ack);
    row.el.dataset.alarm = String(alarm.id);
    return row;
  }

  updateAlarm(row, a) {
    row.alarm = a;
    const acks = a.acks || [];
    row.el.dataset.acked = String(acks.length > 0);
    row.el.dataset.kind = a.kind;
    const kind = ALARM_KEYS[a.kind] ? t(ALARM_KEYS[a.kind]) : a.kind;
    const more = a.suppressed ? ` ${t('suppressedN', { n: a.suppressed })}` : '';
    row.head.textContent = `${kind} · ${a.camera} · ${a.at_ms ? clock(a.at_ms) : ''}${more}`;
    row.detail.textContent = a.detail || '';
    row.detail.hidden = !a.detail;
    if (a.thumbnail && !row.thumb) {
      row.thumb = el('img', { className: 'thumb', alt: `${a.camera}` });
      row.thumb.src = this.page.url(`/api/incidents/alarms/${encodeURIComponent(a.id)}/thumbnail`);
      row.el.insertBefore(row.thumb, row.acks);
    }
    row.acks.textContent = acks.length
      ? t('ackedBy', { list: acks.map((k) => `${k.site} (${k.operator}, ${clock(k.at_ms)})`).join(', ') })
      : t('notAcked');
    row.ack.textContent = t('ack');
    row.ack.hidden = acks.some((k) => k.site === this.page.site() && this.isMine(k.operator));
  }
}

// Accepted shares first, then ended ones.
function order(share) {
  return share.state === 'accepted' ? 0 : 1;
}
