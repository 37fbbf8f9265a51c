// One tile of the wall: a camera (or a tour of cameras) played over WHEP,
// with the picture's age on it, NOT LIVE with the relay's reason when the
// picture stops or grows old, a quality switch that never shows black, and
// reconnection by itself.

import * as whep from './whep.js';
import { t } from './i18n.js';

// A picture older than this is NOT LIVE: 2 s less two checks of the
// console (every 100 ms), so no picture past 2 s is ever shown as live.
const STALE_AFTER_MS = 1800;
// Older than this, the age badge says the tile is behind the live edge.
const BEHIND_MS = 400;
// How often the tile asks the relay for the session's state and clock.
const POLL_MS = 1000;
// How often the timeline of a visible tile asks for the recorded ranges.
const RANGES_POLL_MS = 10000;
// The timeline shows this much of the past.
const TIMELINE_MS = 60 * 60 * 1000;
// Samples of age kept for the page's test interface.
const SAMPLES = 900;
const RETRY_MS = [1000, 2000, 4000, 8000, 10000];
// A session that decodes nothing within this is given up and retried.
const FIRST_FRAME_MS = 6000;
// A wall display's token refused: tried again this often (a reload of the
// relay's accounts may bring it back).
const UNAUTHORIZED_RETRY_MS = 30000;

export const canH265 = (() => {
  try {
    const codecs = (RTCRtpReceiver.getCapabilities && RTCRtpReceiver.getCapabilities('video').codecs) || [];
    return codecs.some((c) => /h265|hevc/i.test(c.mimeType));
  } catch (err) {
    return false;
  }
})();

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  node.append(...children);
  return node;
}

// Signed difference of two 32-bit RTP timestamps.
function rtpDelta(a, b) {
  return ((a - b) << 0);
}

// The badge for the stream the relay chose (its `X-Ponte-Stream` header:
// `<quality>; codec=<h264|h265>[; transcoded][; reason=...]`).
function badge(note, quality, cam) {
  const parts = (note || '').split(';').map((p) => p.trim());
  if (parts.includes('transcoded')) return t('transcodeBadge');
  if (parts.includes('reason=browser-lacks-h265')) return t('subBadge');
  if (parts.includes('codec=h265')) return 'H.265';
  if (!note && quality === 'sub' && cam && cam.codec === 'h265' && !canH265) return t('subBadge');
  return '';
}

export class Tile {
  // ctx: { token, base, url(path), trouble(), probe, camera(id), bigTile(tile), onChange(),
  //        onUnauthorized(), say(text), snapshot(tile), editTour(tile), toggleFull(tile), clear(tile) }
  // (`token`, `base` and `url` follow the relay the page plays from: failover.js)
  constructor(ctx, index) {
    this.ctx = ctx;
    this.index = index;
    this.camera = null;
    this.tour = null;
    this.tourTimer = null;
    this.selected = false;
    this.full = false;
    this.layer = null;
    this.pending = null;
    this.gen = 0;
    this.retry = 0;
    this.retryTimer = null;
    this.message = '';
    this.notLive = false;
    this.reason = '';
    this.framesTotal = 0;
    this.lastShownAt = 0;
    this.maxGapMs = 0;
    this.switching = null; // { from, to, requestedAt, promotedAt, gapMs }
    this.lastSwitch = null;
    this.ageMs = null;
    this.ageSource = null;
    this.probeAgeMs = null;
    this.samples = [];
    this.badgeText = '';
    // Replay: the recording from this time (Unix ms); null: live.
    this.replayAt = null;
    this.recorded = null;
    this.rangesTimer = null;
    this.build();
  }

  build() {
    this.numEl = el('span', { className: 'num', textContent: String(this.index + 1) });
    this.nameEl = el('span', { className: 'name' });
    this.badgeEl = el('span', { className: 'badge', hidden: true });
    this.ageEl = el('span', { className: 'age', hidden: true });
    this.msgEl = el('div', { className: 'msg', role: 'status' });
    this.emptyEl = el('div', { className: 'empty' });
    const button = (key, action) => {
      const b = el('button', { type: 'button', textContent: t(key), title: t(key) });
      b.dataset.i18n = key;
      b.addEventListener('click', (ev) => {
        ev.stopPropagation();
        action();
      });
      return b;
    };
    this.toolsEl = el(
      'div',
      { className: 'tools' },
      button('snapshot', () => this.ctx.snapshot(this)),
      button('tourBtn', () => this.ctx.editTour(this)),
      button('fullBtn', () => this.ctx.toggleFull(this)),
      button('clearBtn', () => this.ctx.clear(this)),
    );
    this.timelineEl = this.buildTimeline(button);
    this.el = el(
      'div',
      { className: 'tile', tabIndex: 0 },
      this.emptyEl,
      el('div', { className: 'label' }, this.numEl, this.nameEl, this.badgeEl, this.ageEl),
      this.msgEl,
      this.toolsEl,
      this.timelineEl,
    );
    this.el.dataset.tile = String(this.index);
    this.redraw();
  }

  // The timeline (issue 21): recorded ranges of the last hour, where the
  // picture is, −30 s, −5 min, a time to jump to, back to live, export.
  buildTimeline(button) {
    this.trackEl = el('div', { className: 'track' });
    this.cursorEl = el('div', { className: 'cursor', hidden: true });
    this.trackEl.append(this.cursorEl);
    this.trackEl.addEventListener('click', (ev) => {
      ev.stopPropagation();
      const r = this.trackEl.getBoundingClientRect();
      const now = Date.now();
      this.playFrom(now - TIMELINE_MS + ((ev.clientX - r.left) / r.width) * TIMELINE_MS);
    });
    this.timeEl = el('input', { type: 'time', step: 1, title: t('pickTime') });
    this.timeEl.addEventListener('click', (ev) => ev.stopPropagation());
    this.timeEl.addEventListener('change', () => {
      const [h, m, s] = this.timeEl.value.split(':').map(Number);
      if (Number.isNaN(h)) return;
      const d = new Date();
      d.setHours(h, m || 0, s || 0, 0);
      // A time later than now is yesterday's.
      const at = d.getTime() > Date.now() ? d.getTime() - 86400000 : d.getTime();
      this.playFrom(at);
    });
    const line = el(
      'div',
      { className: 'timeline' },
      button('back30', () => this.rewind(30000)),
      button('back5m', () => this.rewind(300000)),
      this.trackEl,
      this.timeEl,
      button('liveBtn', () => this.goLive()),
      button('exportBtn', () => this.ctx.exportClip(this)),
    );
    line.addEventListener('click', (ev) => ev.stopPropagation());
    return line;
  }

  // The quality replays and exports use: the main stream when this viewer
  // may have it (the recordings are usually of the main stream).
  replayQuality() {
    const cam = this.ctx.camera(this.camera);
    const qualities = (cam && cam.qualities) || ['main'];
    return qualities.includes('main') ? 'main' : 'sub';
  }

  // Rewinds `ms` from the picture on screen (live or already replaying).
  rewind(ms) {
    const from = this.replayAt !== null && this.captureMs ? this.captureMs : Date.now();
    this.playFrom(from - ms);
  }

  // Plays the recording from `at` (Unix ms); the picture on screen stays
  // until the recording's first frame is decoded.
  playFrom(at) {
    if (!this.camera) return;
    this.replayAt = Math.round(at);
    this.el.classList.add('replay');
    this.retry = 0;
    this.start(this.replayQuality());
    this.loadRanges();
    this.ctx.onChange();
  }

  goLive() {
    if (this.replayAt === null) return;
    this.replayAt = null;
    this.el.classList.remove('replay');
    this.retry = 0;
    if (this.camera) this.start(this.wantedQuality());
    this.ctx.onChange();
  }

  // Asks the relay what is recorded of the camera (for the timeline).
  async loadRanges() {
    const camera = this.camera;
    if (!camera) return null;
    try {
      const resp = await fetch(this.ctx.url(`/api/recordings/${encodeURIComponent(camera)}?quality=${this.replayQuality()}`), {
        cache: 'no-store',
        headers: whep.apiHeaders(this.ctx.token),
      });
      if (camera !== this.camera) return null;
      this.recorded = resp.ok ? await resp.json() : { error: (await resp.text()).trim(), status: resp.status };
    } catch (err) {
      this.recorded = { error: err.message || String(err) };
    }
    this.drawTimeline();
    return this.recorded;
  }

  // The timeline is polled only while it shows (selected, full or replaying).
  watchRanges() {
    const visible = this.camera && (this.selected || this.full || this.replayAt !== null);
    if (visible && !this.rangesTimer) {
      this.loadRanges();
      this.rangesTimer = setInterval(() => this.loadRanges(), RANGES_POLL_MS);
    } else if (!visible && this.rangesTimer) {
      clearInterval(this.rangesTimer);
      this.rangesTimer = null;
    }
  }

  drawTimeline() {
    for (const old of this.trackEl.querySelectorAll('.range')) old.remove();
    const rec = this.recorded;
    const now = Date.now();
    const from = now - TIMELINE_MS;
    this.trackEl.title = rec && rec.error ? rec.error : t('timelineTitle');
    this.timelineEl.classList.toggle('refused', !!(rec && rec.error));
    for (const [a, b] of (rec && rec.ranges) || []) {
      if (b < from) continue;
      const left = Math.max(0, (a - from) / TIMELINE_MS);
      const right = Math.min(1, (b - from) / TIMELINE_MS);
      const seg = el('div', { className: 'range' });
      seg.style.left = `${left * 100}%`;
      seg.style.width = `${Math.max(0.2, (right - left) * 100)}%`;
      this.trackEl.prepend(seg);
    }
    const at = this.replayAt !== null ? this.captureMs || this.replayAt : null;
    this.cursorEl.hidden = at === null;
    if (at !== null) this.cursorEl.style.left = `${Math.min(100, Math.max(0, ((at - from) / TIMELINE_MS) * 100))}%`;
  }

  // ---- what the tile shows ------------------------------------------------

  setCamera(camera, { keepTour = false } = {}) {
    if (!keepTour) this.setTour(null);
    if (camera === this.camera && (this.layer || this.pending)) return;
    this.stopLayers();
    this.replayAt = null;
    this.recorded = null;
    this.el.classList.remove('replay');
    this.camera = camera || null;
    this.retry = 0;
    this.message = '';
    this.badgeText = '';
    this.resetMeasures();
    if (this.camera) this.start(this.wantedQuality());
    this.redraw();
    this.ctx.onChange();
  }

  setTour(tour) {
    clearInterval(this.tourTimer);
    this.tourTimer = null;
    this.tour = tour && tour.cameras.length ? { cameras: [...tour.cameras], every_secs: tour.every_secs, at: 0 } : null;
    if (!this.tour) return;
    this.setCamera(this.tour.cameras[0], { keepTour: true });
    this.tourTimer = setInterval(() => {
      this.tour.at = (this.tour.at + 1) % this.tour.cameras.length;
      this.setCamera(this.tour.cameras[this.tour.at], { keepTour: true });
    }, this.tour.every_secs * 1000);
  }

  // Selected or full screen: the main stream; otherwise the substream.
  setFocus({ selected = this.selected, full = this.full }) {
    this.selected = selected;
    this.full = full;
    this.el.classList.toggle('selected', selected);
    this.el.classList.toggle('full', full);
    this.watchRanges();
    if (this.replayAt !== null) return;
    const want = this.wantedQuality();
    const have = (this.pending || this.layer || {}).quality;
    if (this.camera && have && want !== have) this.start(want);
  }

  wantedQuality() {
    const cam = this.ctx.camera(this.camera);
    const qualities = (cam && cam.qualities) || ['main'];
    const hasSub = qualities.includes('sub');
    const hasMain = qualities.includes('main');
    const mainPlayable = hasMain && !(cam && cam.codec === 'h265' && !canH265 && hasSub);
    const focused = this.selected || this.full || this.ctx.bigTile(this);
    if (focused && mainPlayable) return 'main';
    return hasSub ? 'sub' : 'main';
  }

  resetMeasures() {
    this.lastShownAt = 0;
    this.maxGapMs = 0;
    this.ageMs = null;
    this.captureMs = null;
    this.ageSource = null;
    this.probeAgeMs = null;
    this.samples = [];
    this.notLive = false;
    this.reason = '';
  }

  // ---- sessions -----------------------------------------------------------

  async start(quality) {
    const gen = ++this.gen;
    clearTimeout(this.retryTimer);
    if (this.pending) this.closeLayer(this.pending);
    const video = el('video', { muted: true, autoplay: true, playsInline: true });
    video.muted = true;
    const at = this.replayAt;
    const layer = { quality, video, session: null, frames: 0, clock: null, track: null, poll: null, gen, closed: false, at };
    if (this.layer) {
      video.className = 'back';
      this.pending = layer;
      this.switching = { from: this.layer.quality, to: quality, requestedAt: performance.now(), promotedAt: null, gapMs: 0 };
    } else {
      this.layer = layer;
      this.message = t('connecting');
    }
    this.el.prepend(video);
    this.redraw();
    const camera = this.camera;
    try {
      const probe = this.ctx.probe ? this.ctx.probe.forLayer(layer) : null;
      layer.session = await whep.open({ camera, quality, token: this.ctx.token, base: this.ctx.base, probe, at });
    } catch (err) {
      // A layer replaced since is closed already; any other failure counts.
      if (layer.closed) return;
      this.failed(layer, err);
      return;
    }
    if (layer.closed) {
      whep.close(layer.session);
      return;
    }
    const s = layer.session;
    video.srcObject = s.stream;
    video.play().catch(() => {});
    this.badgeText = badge(s.note, quality, this.ctx.camera(camera));
    s.pc.addEventListener('connectionstatechange', () => {
      const st = s.pc.connectionState;
      // The relay may be gone: the page checks at once (failover.js).
      if ((st === 'failed' || st === 'disconnected') && !layer.closed) this.ctx.trouble();
      if (st === 'failed' || st === 'closed') this.lost(layer, st === 'failed' ? 'connection failed' : 'connection closed');
    });
    layer.poll = setInterval(() => this.poll(layer), POLL_MS);
    // Connected but nothing decoded: give up on it rather than wait.
    layer.deadline = setTimeout(() => {
      if (!layer.closed && !layer.frames) this.lost(layer, t('noFirstFrame', { secs: FIRST_FRAME_MS / 1000 }));
    }, FIRST_FRAME_MS);
    this.watchFrames(layer);
    this.redraw();
  }

  watchFrames(layer) {
    const video = layer.video;
    if (!video.requestVideoFrameCallback) return;
    const onFrame = (now, meta) => {
      if (layer.closed) return;
      // Re-armed first: whatever the frame's handling throws, the tile
      // keeps watching.
      video.requestVideoFrameCallback(onFrame);
      layer.frames += 1;
      if (layer === this.pending) this.promote(layer);
      if (layer === this.layer) this.shown(layer, now, meta);
    };
    video.requestVideoFrameCallback(onFrame);
  }

  // The pending layer decoded its first frame: it goes in front, the old
  // one (still showing until this instant) is closed.
  promote(layer) {
    const old = this.layer;
    layer.video.className = '';
    this.layer = layer;
    this.pending = null;
    if (old) this.closeLayer(old);
    if (this.switching) {
      this.switching.promotedAt = performance.now();
      const sw = this.switching;
      setTimeout(() => {
        if (this.switching === sw) {
          this.lastSwitch = { ...sw };
          this.switching = null;
        }
      }, 1000);
    }
    this.redraw();
  }

  shown(layer, now, meta) {
    this.framesTotal += 1;
    if (this.lastShownAt) {
      const gap = now - this.lastShownAt;
      this.maxGapMs = Math.max(this.maxGapMs, gap);
      if (this.switching) this.switching.gapMs = Math.max(this.switching.gapMs, gap);
    }
    this.lastShownAt = now;
    if (this.retry) this.retry = 0;
    // Wall-clock time of the frame on screen (performance.timeOrigin drifts
    // from the wall clock over days: anchor on Date.now() instead).
    const shownAt = Date.now() + ((meta.expectedDisplayTime || now) - performance.now());
    let age = null;
    if (layer.clock && meta.rtpTimestamp !== undefined) {
      const capture = layer.clock.capture_ms + rtpDelta(meta.rtpTimestamp, layer.clock.rtp) / 90;
      age = shownAt - capture;
      this.ageSource = layer.clock.source;
    }
    let probeAge = null;
    if (this.ctx.probe && meta.rtpTimestamp !== undefined) {
      const capture = this.ctx.probe.capture(layer, meta.rtpTimestamp);
      if (capture !== undefined) probeAge = shownAt - capture;
    }
    this.ageMs = age;
    this.captureMs = age === null ? null : shownAt - age;
    this.probeAgeMs = probeAge;
    this.samples.push({
      at: now,
      shownAt,
      rtp: meta.rtpTimestamp,
      quality: layer.quality,
      replay: layer.at !== null,
      ageMs: age,
      probeAgeMs: probeAge,
      probeCaptureMs: probeAge === null ? null : shownAt - probeAge,
    });
    if (this.samples.length > SAMPLES) this.samples.splice(0, this.samples.length - SAMPLES);
    if (this.message === t('connecting')) {
      this.message = '';
      this.redraw();
    }
    if (layer.at !== null) {
      // A replay is old by design: only a stopped picture is not live.
      if (this.notLive) this.setNotLive(null);
      if (!this.ageShownAt || now - this.ageShownAt > 200) {
        this.ageShownAt = now;
        this.redrawAge();
        this.drawTimeline();
      }
      return;
    }
    // Hysteresis: back to live only well under the limit, so an age
    // hovering at it does not flicker.
    if (age !== null && age > STALE_AFTER_MS) this.setNotLive(t('tooOld', { secs: (age / 1000).toFixed(1) }));
    else if (this.notLive && (age === null || age < STALE_AFTER_MS - 300)) this.setNotLive(null);
    if (!this.ageShownAt || now - this.ageShownAt > 200) {
      this.ageShownAt = now;
      this.redrawAge();
    }
  }

  async poll(layer) {
    if (layer.closed || !layer.session || !layer.session.resource) return;
    try {
      const resp = await fetch(layer.session.resource, { cache: 'no-store', headers: whep.apiHeaders(layer.session.token) });
      if (layer.closed) return;
      if (resp.ok) {
        const body = await resp.json();
        layer.clock = body.clock || null;
        layer.track = body.track || null;
      } else if (resp.status === 410 || resp.status === 404) {
        const why = (await resp.text()).trim().replace(/^the relay ended this stream: /, '');
        this.lost(layer, why || `HTTP ${resp.status}`);
      } else if (resp.status === 401) {
        this.ctx.onUnauthorized();
      }
    } catch (err) {
      // The relay does not answer: the picture's staleness says it.
    }
  }

  // Called by the console ten times a second.
  tick(now) {
    const layer = this.layer;
    if (!layer || !layer.session || !this.lastShownAt) return;
    // The picture on screen grows older while no new one comes.
    const idle = now - this.lastShownAt;
    const age = idle + (layer.at !== null ? 0 : Math.max(0, this.ageMs || 0));
    if (age > STALE_AFTER_MS) this.setNotLive(this.staleReason(layer, idle));
  }

  staleReason(layer, idleMs) {
    const track = layer.track;
    if (track && track.state === 'paused') return t('paused', { reason: track.reason });
    if (track && track.state === 'upstream-lost') return t('upstreamLost', { upstream: track.upstream, secs: track.since_secs });
    return t('noPicture', { secs: (idleMs / 1000).toFixed(1) });
  }

  setNotLive(reason) {
    const was = this.notLive;
    this.notLive = !!reason;
    this.reason = reason || '';
    if (was !== this.notLive || reason) this.redraw();
    if (was !== this.notLive) this.ctx.onLiveness();
  }

  failed(layer, err) {
    const wasPending = layer === this.pending;
    this.closeLayer(layer);
    if (wasPending) {
      this.pending = null;
      this.switching = null;
    }
    if (layer === this.layer) this.layer = null;
    if (wasPending && this.layer) {
      // The old quality keeps playing; say why the switch did not happen.
      this.ctx.say(`${this.index + 1} ${this.camera}: ${err.message}`);
      return;
    }
    // The session being switched to takes over when it decodes.
    if (!wasPending && this.pending) return;
    const status = err.status || 0;
    // No answer at all (not a refusal): the relay may be gone.
    if (!status) this.ctx.trouble();
    this.message = err.message || String(err);
    this.el.classList.toggle('error', true);
    if (status === 401) {
      this.ctx.onUnauthorized();
      if (this.ctx.token) this.scheduleRetry(this.message, UNAUTHORIZED_RETRY_MS);
      this.redraw();
      return;
    }
    // A refusal with a reason (not in the catalog, not playable here) stays
    // on the tile; a busy relay or a lost network is retried.
    const permanent = status >= 400 && status < 500 && status !== 429 && status !== 408;
    if (!permanent) this.scheduleRetry(this.message);
    this.redraw();
  }

  lost(layer, why) {
    if (layer.closed) return;
    // The relay says it in English; the operator reads it in the page's language.
    if (why.startsWith('access revoked: ')) why = t('revoked', { why: why.slice('access revoked: '.length) });
    if (layer === this.pending) {
      this.failed(layer, new Error(why));
      return;
    }
    this.closeLayer(layer);
    this.layer = null;
    this.setNotLive(t('ended', { why }));
    this.scheduleRetry(t('ended', { why }));
  }

  // Asks the relay about the session now rather than at the next poll (the
  // page learnt that its access may have ended: a share ended).
  checkNow() {
    if (this.layer && !this.layer.closed) this.poll(this.layer);
  }

  // The page knows the camera is no longer granted (a share ended and the
  // catalog lost it): the tile stops and says why until given another camera.
  end(why) {
    if (!this.camera) return;
    this.stopLayers();
    this.message = '';
    this.setNotLive(t('ended', { why }));
    this.redraw();
  }

  scheduleRetry(why, fixed = 0) {
    const wait = fixed || RETRY_MS[Math.min(this.retry, RETRY_MS.length - 1)];
    this.retry += 1;
    this.message = t('retrying', { why, secs: Math.round(wait / 1000) });
    this.redraw();
    clearTimeout(this.retryTimer);
    const camera = this.camera;
    this.retryTimer = setTimeout(() => {
      if (this.camera === camera && !this.layer && !this.pending) {
        this.el.classList.remove('error');
        // A replay resumes where its picture was.
        if (this.replayAt !== null && this.captureMs) this.replayAt = Math.round(this.captureMs);
        this.start(this.replayAt !== null ? this.replayQuality() : this.wantedQuality());
      }
    }, wait);
  }

  closeLayer(layer) {
    if (!layer || layer.closed) return;
    layer.closed = true;
    clearInterval(layer.poll);
    clearTimeout(layer.deadline);
    whep.close(layer.session);
    layer.video.srcObject = null;
    layer.video.remove();
    if (this.ctx.probe) this.ctx.probe.drop(layer);
  }

  stopLayers() {
    this.gen += 1;
    clearTimeout(this.retryTimer);
    this.closeLayer(this.pending);
    this.closeLayer(this.layer);
    this.pending = null;
    this.layer = null;
    this.switching = null;
    this.el.classList.remove('error');
  }

  // The page moved to another relay: the tile plays the same camera (or
  // replays from the picture it showed) there.
  reopen() {
    if (!this.camera) return;
    this.stopLayers();
    this.retry = 0;
    this.message = '';
    if (this.replayAt !== null && this.captureMs) this.replayAt = Math.round(this.captureMs);
    this.start(this.replayAt !== null ? this.replayQuality() : this.wantedQuality());
    this.redraw();
  }

  destroy() {
    this.setTour(null);
    this.stopLayers();
    clearInterval(this.rangesTimer);
    this.el.remove();
  }

  // ---- drawing ------------------------------------------------------------

  redraw() {
    const cam = this.ctx.camera(this.camera);
    this.nameEl.textContent = this.camera ? (cam ? cam.label : this.camera) : '';
    this.nameEl.title = this.camera || '';
    this.emptyEl.textContent = this.camera ? '' : t('empty');
    this.badgeEl.hidden = !this.badgeText;
    this.badgeEl.textContent = this.badgeText;
    this.el.classList.toggle('not-live', this.notLive);
    if (!this.notLive && !this.message) this.el.classList.remove('error');
    this.msgEl.textContent = this.notLive ? `${t('notLive')} — ${this.reason}` : this.message;
    this.el.dataset.quality = (this.layer && this.layer.quality) || '';
    this.redrawAge();
  }

  redrawAge() {
    const age = this.ageMs;
    this.ageEl.hidden = age === null || !this.layer;
    if (age === null) return;
    if (this.layer && this.layer.at !== null && this.captureMs) {
      // Replay: when the picture was taken, not how old it is.
      this.ageEl.textContent = `${t('replay')} ${new Date(this.captureMs).toLocaleTimeString()}`;
      this.ageEl.classList.remove('behind');
      this.ageEl.classList.add('replay');
      this.ageEl.title = t('replayTitle');
      return;
    }
    this.ageEl.classList.remove('replay');
    const behind = age > BEHIND_MS;
    this.ageEl.textContent = `${Math.round(age)} ms${behind ? ` · ${t('behind')}` : ''}`;
    this.ageEl.classList.toggle('behind', behind);
    this.ageEl.title = this.ageSource === 'relay' ? t('ageRelay') : t('ageTitle');
  }

  // ---- for tests and the status strip -------------------------------------

  // Frames the browser decoded on the visible layer (more than it showed
  // while catching up on a backlog), and their size.
  async decoded() {
    const layer = this.layer;
    if (!layer || !layer.session) return { frames: 0, width: 0, height: 0, quality: null };
    let out = { frames: 0, width: 0, height: 0, quality: layer.quality };
    const stats = await layer.session.receiver.getStats();
    stats.forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') {
        out = { frames: r.framesDecoded || 0, width: r.frameWidth || 0, height: r.frameHeight || 0, quality: layer.quality };
      }
    });
    return out;
  }

  info() {
    const layer = this.layer;
    return {
      index: this.index,
      camera: this.camera,
      tour: this.tour ? { cameras: this.tour.cameras, every_secs: this.tour.every_secs } : null,
      quality: layer ? layer.quality : null,
      pendingQuality: this.pending ? this.pending.quality : null,
      frames: layer ? layer.frames : 0,
      // The relay the visible picture comes from (its origin).
      relay: layer && layer.session && layer.session.resource ? new URL(layer.session.resource).origin : null,
      framesTotal: this.framesTotal,
      width: layer ? layer.video.videoWidth : 0,
      height: layer ? layer.video.videoHeight : 0,
      ageMs: this.ageMs,
      captureMs: this.captureMs,
      ageSource: this.ageSource,
      ageText: this.ageEl.hidden ? '' : this.ageEl.textContent,
      probeAgeMs: this.probeAgeMs,
      notLive: this.notLive,
      reason: this.reason,
      message: this.msgEl.textContent,
      badge: this.badgeText,
      maxGapMs: this.maxGapMs,
      switching: this.switching,
      lastSwitch: this.lastSwitch,
      selected: this.selected,
      full: this.full,
      replayAt: this.replayAt,
      replaying: !!(layer && layer.at !== null),
      recorded: this.recorded,
    };
  }
}
