// One WHEP session: offer a receive-only video transceiver to the relay,
// apply its answer. The relay's resource URL (Location) is polled by the
// tile for the session's state and capture clock, and DELETEd at the end.

const ICE_FIRST_CANDIDATE_MS = 3000;

// Headers for the relay's API: a wall display sends its bearer token, a
// logged-in browser its cookie (sent by itself).
export function apiHeaders(token, extra = {}) {
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

export class WhepError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function firstCandidate(pc) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve();
    const timer = setTimeout(resolve, ICE_FIRST_CANDIDATE_MS);
    const done = () => {
      clearTimeout(timer);
      resolve();
    };
    // One candidate is enough (the relay learns other paths from the
    // checks); waiting for all of them costs over 100 ms.
    pc.addEventListener('icecandidate', (ev) => ev.candidate && done());
    pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && done());
  });
}

// Opens a session for `camera` at `quality` at the relay `base` ('' for the
// page's own, else another relay's origin). Resolves to
// { pc, receiver, resource (absolute URL), token, stream: MediaStream, note }
// or throws a WhepError with the relay's own explanation.
export async function open({ camera, quality, token, probe, at = null, base = '' }) {
  const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
  try {
    const transceiver = pc.addTransceiver('video', { direction: 'recvonly' });
    const receiver = transceiver.receiver;
    // The live edge: the smallest playout delay the browser will do.
    if ('playoutDelayHint' in receiver) receiver.playoutDelayHint = 0;
    if ('jitterBufferTarget' in receiver) receiver.jitterBufferTarget = 0;
    if (probe) probe.attach(receiver);
    const stream = new Promise((resolve) => {
      pc.addEventListener('track', (ev) => resolve(ev.streams[0] || new MediaStream([ev.track])));
    });
    await pc.setLocalDescription(await pc.createOffer());
    await firstCandidate(pc);
    // `at`: play the recording back from that time (Unix ms) instead of live.
    const replay = at === null ? '' : `&at=${Math.round(at)}`;
    const url = `${base}/whep/${encodeURIComponent(camera)}?quality=${quality}${replay}`;
    const resp = await fetch(url, {
      method: 'POST',
      headers: apiHeaders(token, { 'Content-Type': 'application/sdp' }),
      body: pc.localDescription.sdp,
    });
    const text = await resp.text();
    if (resp.status !== 201) {
      throw new WhepError(resp.status, text.trim() || `the relay answered HTTP ${resp.status}`);
    }
    // The session's URL at the relay that answered (maybe not this page's).
    const location = resp.headers.get('Location');
    const resource = location ? new URL(location, resp.url).href : null;
    const note = resp.headers.get('X-Ponte-Stream');
    await pc.setRemoteDescription({ type: 'answer', sdp: text });
    return { pc, receiver, resource, token, note, stream: await stream };
  } catch (err) {
    pc.close();
    throw err;
  }
}

// Ends a session, at the relay that opened it, with the token it was opened with.
export function close(session) {
  if (!session) return;
  session.pc.close();
  if (session.resource) {
    fetch(session.resource, { method: 'DELETE', keepalive: true, headers: apiHeaders(session.token) }).catch(() => {});
  }
}
