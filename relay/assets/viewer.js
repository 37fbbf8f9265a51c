// ponte viewer: lists the relay's cameras and plays one over WHEP.
// Plain script, no build step, no external resources.
(() => {
  'use strict';

  const KIND_LABELS = {
    'dome-ptz': 'PTZ dome',
    'dome': 'dome',
    'fixed-bi-optic': 'bi-optic',
    'fixed-quad-optic': 'quad-optic',
    'fixed': 'fixed',
  };
  const ICE_GATHERING_TIMEOUT_MS = 3000;
  // PTZ: velocity of a held button (per mille), how often a held button
  // renews its move (the agent stops a move not renewed within 1.5 s), and
  // how often the pad asks who holds the camera.
  const PTZ_SPEED = 500;
  const PTZ_REPEAT_MS = 500;
  const PTZ_POLL_MS = 1500;
  // A picture that stops moving must never pass for live: after this long
  // without a newly decoded frame the page says NOT LIVE, and asks the relay
  // why (the master room paused the camera, or the link to it is down).
  const STALE_AFTER_MS = 2000;
  const FRESHNESS_POLL_MS = 500;
  const STALE_ASK_EVERY = 4; // freshness polls between two questions to the relay

  const statusEl = document.getElementById('status');
  const video = document.getElementById('video');
  const listEl = document.getElementById('cameras');
  const filterEl = document.getElementById('filter');
  const loginEl = document.getElementById('login');
  const loginForm = document.getElementById('login-form');
  const loginError = document.getElementById('login-error');
  const accountEl = document.getElementById('account');
  const whoEl = document.getElementById('who');
  const ptzEl = document.getElementById('ptz');
  const ptzStatusEl = document.getElementById('ptz-status');
  const presetEl = document.getElementById('ptz-preset');

  let cameras = [];
  let pc = null;
  let sessionUrl = null;
  let current = null; // { camera, quality }
  let status = 'idle';
  let message = '';
  // Freshness of the picture: frames decoded at the last poll and when that
  // count last moved; `stale` ({ since, state, text }) while it does not.
  let stale = null;
  let lastFrames = -1;
  let lastFrameAt = 0;
  let staleAsks = 0;
  let watching = false;
  // Status text as a function of the camera's label, so it can be redrawn
  // once the catalog (and with it the camera's name) has arrived.
  let describe = () => 'Pick a camera.';
  // Bumped on every play/stop, so a slow request from an earlier play cannot
  // overwrite the state of the current one.
  let generation = 0;
  // The logged-in viewer (null on a relay without accounts), and a playback
  // asked for before logging in, started once logged in.
  let viewer = null;
  let pendingPlay = null;
  // Bumped on every successful login, so a playback refused while a login
  // was under way retries instead of waiting for another one.
  let logins = 0;

  function setStatus(next, text) {
    status = next;
    describe = typeof text === 'function' ? text : () => text;
    redrawStatus();
  }

  function redrawStatus() {
    message = describe(current ? `${cameraLabel(current.camera)} (${current.quality})` : '');
    statusEl.textContent = message;
    statusEl.className = status;
  }

  function cameraLabel(id) {
    const cam = cameras.find((c) => c.id === id);
    if (!cam) return id;
    return cam.lens > 1 || cameras.some((c) => c.device === cam.device && c.id !== cam.id)
      ? `${cam.name} (lens ${cam.lens})`
      : cam.name;
  }

  function deleteSession() {
    if (!sessionUrl) return Promise.resolve();
    const url = sessionUrl;
    sessionUrl = null;
    // keepalive lets the DELETE go out even while the page is unloading.
    return fetch(url, { method: 'DELETE', keepalive: true }).catch(() => {});
  }

  // ---- login -------------------------------------------------------------

  function showLogin(text) {
    document.body.classList.add('needs-login');
    loginEl.hidden = false;
    accountEl.hidden = true;
    loginError.textContent = text || '';
    document.getElementById('login-user').focus();
  }

  function showViewer(name) {
    viewer = name || null;
    document.body.classList.remove('needs-login');
    loginEl.hidden = true;
    accountEl.hidden = !viewer;
    whoEl.textContent = viewer ? `Logged in as ${viewer}` : '';
  }

  async function login(ev) {
    ev.preventDefault();
    loginError.textContent = 'Logging in…';
    try {
      const resp = await fetch('/login', { method: 'POST', body: new URLSearchParams(new FormData(loginForm)) });
      if (!resp.ok) throw new Error((await resp.text()).trim() || `the relay answered HTTP ${resp.status}`);
      logins += 1;
      loginForm.reset();
      loginError.textContent = '';
      if (await loadCatalog() && pendingPlay) {
        const { camera, quality } = pendingPlay;
        pendingPlay = null;
        play(camera, quality).catch(() => {});
      }
    } catch (err) {
      loginError.textContent = err.message || String(err);
    }
  }

  async function logout() {
    const gone = deleteSession();
    stop();
    await gone;
    await fetch('/logout', { method: 'POST' }).catch(() => {});
    cameras = [];
    listEl.textContent = '';
    setStatus('idle', 'Logged out. Pick a camera.');
    showLogin('');
  }

  function stop() {
    generation += 1;
    clearStale();
    ptzHide();
    deleteSession();
    if (pc) {
      pc.close();
      pc = null;
    }
    video.srcObject = null;
    current = null;
    markActive();
  }

  function waitForIceGathering(conn) {
    return new Promise((resolve) => {
      if (conn.iceGatheringState === 'complete') {
        resolve();
        return;
      }
      const timer = setTimeout(resolve, ICE_GATHERING_TIMEOUT_MS);
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      // One candidate in the offer is enough: the relay learns any other
      // path from the browser's connectivity checks, and waiting for
      // gathering to complete would cost over 100 ms of time to first frame.
      conn.addEventListener('icecandidate', (ev) => {
        if (ev.candidate) done();
      });
      conn.addEventListener('icegatheringstatechange', () => {
        if (conn.iceGatheringState === 'complete') done();
      });
    });
  }

  // The relay says why it ended a stream (access revoked, camera gone) on
  // the session URL; the page shows that rather than a bare "closed".
  async function explainEnd(gen) {
    const url = sessionUrl;
    if (!url) return;
    try {
      const resp = await fetch(url, { cache: 'no-store' });
      if (resp.status !== 410 || gen !== generation) return;
      const why = (await resp.text()).trim();
      if (gen === generation) setStatus('error', (label) => `${label}: ${why}`);
    } catch (err) {
      // The relay does not answer: the "closed" status stands.
    }
  }

  async function play(cameraId, quality) {
    quality = quality === 'sub' ? 'sub' : 'main';
    stop();
    const gen = generation;
    const loginsAtStart = logins;
    current = { camera: cameraId, quality };
    markActive();
    ptzFor(cameraId);
    setStatus('connecting', (label) => `Connecting to ${label}…`);
    const params = new URLSearchParams({ camera: cameraId });
    if (quality !== 'main') params.set('quality', quality);
    history.replaceState(null, '', `?${params}`);

    const conn = new RTCPeerConnection();
    pc = conn;
    conn.addTransceiver('video', { direction: 'recvonly' });
    conn.ontrack = (ev) => {
      video.srcObject = ev.streams[0] || new MediaStream([ev.track]);
      video.play().catch(() => {});
    };
    conn.onconnectionstatechange = () => {
      if (gen !== generation) return;
      const s = conn.connectionState;
      if (s === 'failed' || s === 'closed') {
        setStatus('error', (label) =>
          `Connection to ${label} ${s}; the relay may have ended the stream. Click the camera to retry.`);
        explainEnd(gen);
      } else if (s === 'disconnected') {
        setStatus('connecting', (label) => `Connection to ${label} interrupted; waiting for it to come back…`);
      } else if (s === 'connected' && status !== 'playing') {
        setStatus('connecting', (label) => `Connected to ${label}; waiting for the first picture…`);
      }
    };
    video.onplaying = () => {
      if (gen === generation) setStatus('playing', (label) => `Playing ${label}`);
    };

    try {
      await conn.setLocalDescription(await conn.createOffer());
      await waitForIceGathering(conn);
      if (gen !== generation) throw new Error('superseded by another camera');
      const resp = await fetch(`/whep/${encodeURIComponent(cameraId)}?quality=${quality}`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/sdp' },
        body: conn.localDescription.sdp,
      });
      const body = await resp.text();
      if (resp.status === 401 && gen === generation) {
        if (logins !== loginsAtStart) {
          // Logged in while this request was on its way: try again now.
          return play(cameraId, quality);
        }
        // Not logged in (or the session expired): play it once logged in.
        pendingPlay = { camera: cameraId, quality };
        showLogin(viewer ? body.trim() : '');
      }
      if (!resp.ok) {
        throw new Error(body.trim() || `the relay answered HTTP ${resp.status}`);
      }
      const location = resp.headers.get('Location');
      const url = location ? new URL(location, window.location.href).href : null;
      if (gen !== generation) {
        if (url) fetch(url, { method: 'DELETE', keepalive: true }).catch(() => {});
        throw new Error('superseded by another camera');
      }
      sessionUrl = url;
      await conn.setRemoteDescription({ type: 'answer', sdp: body });
    } catch (err) {
      if (gen === generation) {
        setStatus('error', err.message || String(err));
        deleteSession();
        conn.close();
        pc = null;
      }
      throw err;
    }
  }

  // ---- PTZ pad -------------------------------------------------------------
  // Shown only when the relay says this viewer may steer the camera. A held
  // button sends `move` at once and every PTZ_REPEAT_MS; releasing it (or the
  // pointer leaving it, the page losing focus or being hidden) sends `stop`.
  // Commands go out one after another, so a `stop` never overtakes a `move`.

  let ptzCamera = null;
  let ptzGen = 0;
  let ptzHolder = null;
  let ptzError = '';
  let ptzPresets = '[]';
  let ptzPoll = null;
  let ptzRepeat = null;
  let ptzHeld = null;
  let ptzChain = Promise.resolve();
  let ptzInflight = 0;

  function ptzUrl(camera) {
    return `/api/ptz/${encodeURIComponent(camera)}`;
  }

  function holderLabel(h) {
    return h ? `${h.viewer}@${h.site}` : '';
  }

  function ptzRedraw() {
    const mine = ptzHolder && ptzHolder.viewer === viewer && ptzHolder.site === document.body.dataset.site;
    let text;
    if (ptzError) {
      text = ptzHolder && !ptzError.includes(holderLabel(ptzHolder))
        ? `${ptzError} (controlled by ${holderLabel(ptzHolder)})`
        : ptzError;
    } else if (ptzHolder) {
      text = `Controlled by ${holderLabel(ptzHolder)}${mine ? ' (you)' : ''}`;
    } else {
      text = 'Free: press and hold an arrow to steer.';
    }
    // Unchanged text is left alone, so screen readers announce changes only.
    if (ptzStatusEl.textContent !== text) ptzStatusEl.textContent = text;
    ptzStatusEl.className = ptzError ? 'error' : '';
  }

  function ptzFor(camera) {
    ptzHide();
    ptzGen += 1;
    ptzCamera = camera;
    ptzHolder = null;
    ptzError = '';
    ptzRefresh();
  }

  function ptzHide() {
    ptzRelease(true);
    ptzEl.hidden = true;
    if (ptzPoll) clearInterval(ptzPoll);
    ptzPoll = null;
  }

  function ptzShow(body) {
    ptzEl.hidden = false;
    const before = holderLabel(ptzHolder);
    ptzHolder = body.holder || null;
    // The lock changed hands since a refusal: the refusal is old news.
    if (holderLabel(ptzHolder) !== before) ptzError = '';
    const presets = JSON.stringify(body.presets || []);
    if (presets !== ptzPresets) {
      // Rebuilt only when changed, so an open dropdown is left alone.
      ptzPresets = presets;
      presetEl.textContent = '';
      presetEl.append(el('option', { value: '', textContent: (body.presets || []).length ? 'Go to preset…' : 'No presets' }));
      for (const p of body.presets || []) {
        presetEl.append(el('option', { value: p.token, textContent: p.name || p.token }));
      }
    }
    if (!ptzPoll) {
      ptzPoll = setInterval(() => {
        if (!document.hidden) ptzRefresh();
      }, PTZ_POLL_MS);
    }
    ptzRedraw();
  }

  async function ptzRefresh() {
    const camera = ptzCamera;
    const gen = ptzGen;
    if (!camera) return;
    try {
      const resp = await fetch(ptzUrl(camera));
      if (gen !== ptzGen) return;
      const body = resp.ok ? await resp.json() : null;
      if (gen !== ptzGen) return;
      if (!body || !body.may_steer) {
        ptzHide();
        return;
      }
      ptzShow(body);
    } catch (err) {
      // A network hiccup: the next poll tries again.
    }
  }

  function ptzSend(cmd) {
    const camera = ptzCamera;
    const gen = ptzGen;
    if (!camera) return Promise.resolve();
    ptzInflight += 1;
    ptzChain = ptzChain.then(async () => {
      try {
        const resp = await fetch(ptzUrl(camera), {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify(cmd),
        });
        const text = await resp.text();
        let body = null;
        try {
          body = JSON.parse(text);
        } catch (err) {
          body = null;
        }
        if (gen !== ptzGen) return;
        if (body && body.result === 'done') {
          ptzError = '';
          ptzHolder = body.holder || null;
        } else {
          ptzError = (body && body.reason) || text.trim() || `the relay answered HTTP ${resp.status}`;
          if (body && body.holder) ptzHolder = body.holder;
          // Refused: stop repeating (a `stop` would be refused too).
          if (cmd.op === 'move') ptzRelease(false);
        }
        ptzRedraw();
      } catch (err) {
        if (gen === ptzGen) {
          ptzError = `PTZ command failed: ${err.message || err}`;
          ptzRedraw();
        }
      } finally {
        ptzInflight -= 1;
      }
    });
    return ptzChain;
  }

  function ptzPress(velocity) {
    if (!ptzCamera || ptzEl.hidden) return;
    if (ptzHeld) ptzRelease(false);
    const cmd = { op: 'move', pan: velocity.pan, tilt: velocity.tilt, zoom: velocity.zoom };
    ptzHeld = cmd;
    ptzSend(cmd);
    ptzRepeat = setInterval(() => {
      // A renewal still on its way is enough: do not queue another.
      if (ptzHeld === cmd && ptzInflight === 0) ptzSend(cmd);
    }, PTZ_REPEAT_MS);
  }

  // Ends a hold; `send` says whether to tell the camera to stop.
  function ptzRelease(send) {
    if (!ptzHeld) return;
    ptzHeld = null;
    clearInterval(ptzRepeat);
    ptzRepeat = null;
    if (send) ptzSend({ op: 'stop' });
  }

  function holdable(button, velocity) {
    button.addEventListener('pointerdown', (ev) => {
      if (ev.button !== 0) return;
      ev.preventDefault();
      button.focus();
      ptzPress(velocity);
    });
    for (const name of ['pointerup', 'pointerleave', 'pointercancel', 'blur']) {
      button.addEventListener(name, () => ptzRelease(true));
    }
    button.addEventListener('keydown', (ev) => {
      if (ev.key !== ' ' && ev.key !== 'Enter') return;
      ev.preventDefault();
      if (!ev.repeat) ptzPress(velocity);
    });
    button.addEventListener('keyup', (ev) => {
      if (ev.key !== ' ' && ev.key !== 'Enter') return;
      ev.preventDefault();
      ptzRelease(true);
    });
    button.addEventListener('contextmenu', (ev) => ev.preventDefault());
  }

  for (const button of ptzEl.querySelectorAll('button[data-pan], button[data-zoom]')) {
    holdable(button, {
      pan: Number(button.dataset.pan || 0) * PTZ_SPEED,
      tilt: Number(button.dataset.tilt || 0) * PTZ_SPEED,
      zoom: Number(button.dataset.zoom || 0) * PTZ_SPEED,
    });
  }
  document.getElementById('ptz-stop').addEventListener('click', () => {
    if (ptzHeld) ptzRelease(true);
    else ptzSend({ op: 'stop' });
  });
  document.getElementById('ptz-release').addEventListener('click', () => {
    ptzRelease(false);
    ptzSend({ op: 'release' });
  });
  presetEl.addEventListener('change', () => {
    const preset = presetEl.value;
    // Back to the prompt, so the same preset can be chosen again.
    presetEl.value = '';
    if (preset) ptzSend({ op: 'goto_preset', preset });
  });
  window.addEventListener('blur', () => ptzRelease(true));
  document.addEventListener('visibilitychange', () => {
    if (document.hidden) ptzRelease(true);
  });

  function ptzState() {
    return {
      visible: !ptzEl.hidden,
      camera: ptzCamera,
      holder: ptzHolder,
      error: ptzError,
      status: ptzStatusEl.textContent,
      moving: !!ptzHeld,
      presets: JSON.parse(ptzPresets),
    };
  }

  async function stats() {
    const out = {
      framesDecoded: 0,
      framesReceived: 0,
      frameWidth: 0,
      frameHeight: 0,
      bytesReceived: 0,
      // Seconds of jitter-buffer delay summed over emitted frames: the
      // difference between two samples over the frame count difference is
      // the recent playout delay.
      jitterBufferDelay: 0,
      jitterBufferEmittedCount: 0,
    };
    if (!pc) return out;
    const report = await pc.getStats();
    report.forEach((s) => {
      if (s.type === 'inbound-rtp' && (s.kind === 'video' || s.mediaType === 'video')) {
        out.framesDecoded = s.framesDecoded || 0;
        out.framesReceived = s.framesReceived || 0;
        out.frameWidth = s.frameWidth || 0;
        out.frameHeight = s.frameHeight || 0;
        out.bytesReceived = s.bytesReceived || 0;
        out.jitterBufferDelay = s.jitterBufferDelay || 0;
        out.jitterBufferEmittedCount = s.jitterBufferEmittedCount || 0;
      }
    });
    return out;
  }

  // ---- freshness: a frozen picture is flagged, with the relay's reason ----
  function clearStale() {
    stale = null;
    staleAsks = 0;
    lastFrames = -1;
    video.classList.remove('stale');
  }

  async function liveState(camera, quality) {
    try {
      const signal = AbortSignal.timeout ? AbortSignal.timeout(1500) : undefined;
      if (sessionUrl) {
        // The relay ended the stream (access revoked, ...): say why.
        const ended = await fetch(sessionUrl, { cache: 'no-store', signal });
        if (ended.status === 410) return { state: 'ended', text: (await ended.text()).trim() };
      }
      const resp = await fetch(`/api/live/${encodeURIComponent(camera)}?quality=${quality}`, { signal });
      const s = resp.ok ? await resp.json() : {};
      if (s.state === 'paused') {
        return { state: s.state, text: `The master room paused this camera to stay within the link budget (${s.reason}); it resumes by itself.` };
      }
      if (s.state === 'upstream-lost') {
        return { state: s.state, text: `The link to the master room (${s.upstream}) is down; the picture resumes by itself when it returns.` };
      }
      return { state: s.state || 'unknown', text: 'The stream has stalled.' };
    } catch (err) {
      return { state: 'unknown', text: 'The relay does not answer.' };
    }
  }

  function showStale() {
    video.classList.add('stale');
    const secs = Math.round((Date.now() - stale.since) / 1000);
    const text = stale.text;
    setStatus('stale', (label) => `NOT LIVE: no new picture of ${label} for ${secs} s. ${text}`.trim());
  }

  async function watchFreshness() {
    const live = () => pc && current && (status === 'playing' || status === 'stale');
    if (!live()) {
      // Stopped, failed or reconnecting: that status says what happens.
      if (stale || lastFrames !== -1) clearStale();
      return;
    }
    const gen = generation;
    const { framesDecoded } = await stats();
    if (gen !== generation || !live()) return;
    const now = Date.now();
    if (framesDecoded !== lastFrames) {
      const wasStale = stale !== null;
      lastFrames = framesDecoded;
      lastFrameAt = now;
      if (wasStale) {
        stale = null;
        staleAsks = 0;
        video.classList.remove('stale');
        setStatus('playing', (label) => `Playing ${label}`);
      }
      return;
    }
    if (now - lastFrameAt < STALE_AFTER_MS) return;
    // Say it at once; the relay's reason follows when it answers.
    if (!stale) stale = { since: lastFrameAt, state: 'unknown', text: '' };
    showStale();
    if (staleAsks++ % STALE_ASK_EVERY !== 0) return;
    const why = await liveState(current.camera, current.quality);
    if (gen !== generation || !stale || !live()) return;
    Object.assign(stale, why);
    showStale();
  }

  setInterval(() => {
    if (watching) return;
    watching = true;
    watchFreshness().catch(() => {}).finally(() => { watching = false; });
  }, FRESHNESS_POLL_MS);

  function state() {
    return {
      camera: current ? current.camera : null,
      quality: current ? current.quality : null,
      status,
      message,
      session: sessionUrl,
      viewer,
      connectionState: pc ? pc.connectionState : 'closed',
      stale: stale ? { state: stale.state, sinceMs: Date.now() - stale.since } : null,
    };
  }

  function markActive() {
    for (const li of listEl.querySelectorAll('li[data-camera]')) {
      li.classList.toggle('active', !!current && li.dataset.camera === current.camera);
    }
  }

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    Object.assign(node, props || {});
    for (const child of children) node.append(child);
    return node;
  }

  function playButtons(cam) {
    const buttons = [];
    const qualities = cam.qualities && cam.qualities.length ? cam.qualities : ['main'];
    for (const q of qualities) {
      const b = el('button', { type: 'button', textContent: q, title: `Play ${cam.id} (${q})` });
      b.addEventListener('click', () => play(cam.id, q).catch(() => {}));
      buttons.push(b);
    }
    return buttons;
  }

  function cameraItem(cam, text) {
    const li = el('li');
    li.dataset.camera = cam.id;
    li.dataset.search = `${cam.name} ${cam.zone} ${cam.id} ${cam.kind}`.toLowerCase();
    const name = el('button', { type: 'button', className: 'name', textContent: text });
    const first = cam.qualities && cam.qualities.length ? cam.qualities[0] : 'main';
    name.addEventListener('click', () => play(cam.id, first).catch(() => {}));
    li.append(name, ...playButtons(cam));
    if (cam.codec === 'h265') li.append(el('span', { className: 'meta', textContent: 'H.265' }));
    return li;
  }

  function render() {
    const zones = new Map();
    for (const cam of cameras) {
      if (!zones.has(cam.zone)) zones.set(cam.zone, new Map());
      const devices = zones.get(cam.zone);
      if (!devices.has(cam.device)) devices.set(cam.device, []);
      devices.get(cam.device).push(cam);
    }
    listEl.textContent = '';
    if (!cameras.length) {
      listEl.textContent = 'No cameras are visible to this site yet.';
      return;
    }
    for (const zone of [...zones.keys()].sort((a, b) => a.localeCompare(b))) {
      const section = el('section');
      section.append(el('h2', { textContent: zone || 'No zone' }));
      const ul = el('ul');
      const devices = [...zones.get(zone).values()].sort((a, b) => a[0].name.localeCompare(b[0].name));
      for (const lenses of devices) {
        lenses.sort((a, b) => a.lens - b.lens);
        const head = lenses[0];
        const kind = KIND_LABELS[head.kind] || head.kind;
        const ptz = lenses.some((c) => c.ptz) ? ', PTZ control' : '';
        if (lenses.length === 1) {
          const li = cameraItem(head, head.name);
          li.insertBefore(el('span', { className: 'meta', textContent: `${kind}${ptz}` }), li.children[1]);
          ul.append(li);
        } else {
          const li = el('li');
          li.dataset.search = lenses.map((c) => `${c.name} ${c.zone} ${c.id} ${c.kind}`).join(' ').toLowerCase();
          li.append(el('span', { textContent: head.name }),
            el('span', { className: 'meta', textContent: `${kind}, ${lenses.length} lenses${ptz}` }));
          const sub = el('ul', { className: 'lenses' });
          for (const cam of lenses) sub.append(cameraItem(cam, `lens ${cam.lens}`));
          li.append(sub);
          ul.append(li);
        }
      }
      section.append(ul);
      listEl.append(section);
    }
    markActive();
    applyFilter();
  }

  function applyFilter() {
    const q = filterEl.value.trim().toLowerCase();
    for (const li of listEl.querySelectorAll(':scope > section > ul > li')) {
      li.hidden = !!q && !(li.dataset.search || '').includes(q);
    }
    for (const section of listEl.querySelectorAll(':scope > section')) {
      section.hidden = ![...section.querySelectorAll(':scope > ul > li')].some((li) => !li.hidden);
    }
  }

  // Loads the camera list; false when the relay wants a login first.
  async function loadCatalog() {
    try {
      const resp = await fetch('/api/catalog');
      if (resp.status === 401) {
        showLogin('');
        return false;
      }
      if (!resp.ok) throw new Error((await resp.text()).trim() || `HTTP ${resp.status}`);
      const body = await resp.json();
      showViewer(body.viewer);
      cameras = body.cameras || [];
      render();
      redrawStatus();
      return true;
    } catch (err) {
      listEl.textContent = `Could not load the camera list: ${err.message || err}`;
      return false;
    }
  }

  filterEl.addEventListener('input', applyFilter);
  loginForm.addEventListener('submit', login);
  document.getElementById('logout').addEventListener('click', () => logout().catch(() => {}));
  window.addEventListener('pagehide', deleteSession);
  window.addEventListener('pagehide', () => {
    // The page goes away mid-move: keepalive lets the `stop` out.
    if (!ptzHeld || !ptzCamera) return;
    ptzHeld = null;
    clearInterval(ptzRepeat);
    fetch(ptzUrl(ptzCamera), {
      method: 'POST',
      keepalive: true,
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ op: 'stop' }),
    }).catch(() => {});
  });

  window.ponteViewer = {
    play,
    stats,
    state,
    ptz: ptzState,
    stop() {
      stop();
      setStatus('idle', 'Stopped. Pick a camera.');
    },
  };

  loadCatalog();
  const params = new URLSearchParams(window.location.search);
  const deepLink = params.get('camera');
  if (deepLink) {
    // Start at once, without waiting for the list: it only improves labels.
    play(deepLink, params.get('quality') || 'main').catch(() => {});
  }
})();
