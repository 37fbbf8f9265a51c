// The relay pair of a site (issue 22): the page watches the relay it plays
// from and, when that relay stops answering, moves every tile to the first
// other relay of the site that answers, logged in there by a pair token:
// no login prompt, the wall as it was.
//
// - The peers come with the page (`data-peers`, the relay's `relay.peers`).
// - The pair token comes from the page's own relay (`GET /api/pair-token`)
//   while it is up: after the login, then every 10 minutes. At a peer it is
//   sent as `Authorization: Bearer` (not a cookie: the peer is another
//   origin, and browsers block third-party cookies). A wall display sends
//   its own token everywhere instead (the relays of a site share the
//   [[token]] tables).
// - Watching: `GET /api/alive` every 500 ms, an answer later than 600 ms
//   counting as none; a miss is asked again 100 ms later, and two misses in
//   a row move the page. A tile whose WebRTC connection fails, or whose
//   request gets no answer at all, asks at once. Measured on loopback
//   (tests/tests/redundancy_pair.rs, debug build, 2 shared cores): a killed
//   relay (connections refused) is left 0.15–0.55 s after its death and
//   every tile decodes at the peer 0.65–0.95 s after it; a hung one (nothing
//   answers: only timeouts tell) is left after 1.3–1.5 s and the tiles
//   decode there by 1.8–2.0 s. WHEP at the peer takes ~0.3–0.5 s of that
//   (the agent sends the current GOP from its key frame). Issue 22 asks
//   for 3 s.
// - Going back: the page's own relay (by its session cookie) is a candidate
//   like any other when the peer in use stops answering in turn.

const WATCH_MS = 500;
const ALIVE_TIMEOUT_MS = 600;
const RECHECK_MS = 100;
const MISSES = 2;
const TOKEN_REFRESH_MS = 10 * 60 * 1000;

// The host (and port) of an origin, for the banner.
export function hostOf(origin) {
  try {
    return new URL(origin).host;
  } catch (err) {
    return origin;
  }
}

export class Failover {
  // home: this page's origin; peers: the other relays' origins, in order;
  // wallToken: a wall display's bearer token ('' for a logged-in operator);
  // onMove(from, to) once the page has moved; onNone() when no relay answers.
  constructor({ home, peers, wallToken, onMove, onNone }) {
    this.home = home;
    this.peers = peers.filter((p) => p && p !== home);
    this.wallToken = wallToken || '';
    this.onMove = onMove;
    this.onNone = onNone;
    this.current = home;
    this.pairToken = null;
    this.pairExpires = 0;
    this.misses = 0;
    this.timer = null;
    this.busy = false;
    this.moves = [];
  }

  get enabled() {
    return this.peers.length > 0;
  }

  // Prefix of the relay in use: '' for the page's own (same-origin calls).
  get base() {
    return this.current === this.home ? '' : this.current;
  }

  // The bearer token for the relay in use ('' for the page's own relay, where
  // the session cookie goes by itself).
  get token() {
    return this.tokenFor(this.current);
  }

  tokenFor(origin) {
    if (this.wallToken) return this.wallToken;
    if (origin === this.home) return '';
    return this.pairToken && this.pairExpires * 1000 > Date.now() ? this.pairToken : '';
  }

  url(path) {
    return `${this.base}${path}`;
  }

  start() {
    if (!this.enabled || this.timer) return;
    this.schedule(WATCH_MS);
    setInterval(() => this.refreshToken(), TOKEN_REFRESH_MS);
  }

  // Asks the page's own relay for a pair token (logged-in operators only,
  // while on the own relay).
  async refreshToken() {
    if (!this.enabled || this.wallToken || this.current !== this.home) return false;
    try {
      const resp = await fetch('/api/pair-token', { cache: 'no-store' });
      if (!resp.ok) return false;
      const body = await resp.json();
      this.pairToken = body.token || null;
      this.pairExpires = body.expires_unix || 0;
      return !!this.pairToken;
    } catch (err) {
      return false;
    }
  }

  schedule(ms) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.tick(), ms);
  }

  // Something went wrong at the relay in use (a tile's connection failed,
  // a request did not get through): look now rather than at the next poll.
  trouble() {
    if (this.enabled && !this.busy) this.schedule(0);
  }

  async alive(origin) {
    const base = origin === this.home ? '' : origin;
    try {
      const resp = await fetch(`${base}/api/alive`, { cache: 'no-store', signal: AbortSignal.timeout(ALIVE_TIMEOUT_MS) });
      return resp.status === 204;
    } catch (err) {
      return false;
    }
  }

  async tick() {
    if (this.busy) return;
    this.busy = true;
    try {
      if (await this.alive(this.current)) {
        this.misses = 0;
        this.schedule(WATCH_MS);
        return;
      }
      this.misses += 1;
      if (this.misses < MISSES) {
        this.schedule(RECHECK_MS);
        return;
      }
      await this.move();
    } finally {
      this.busy = false;
    }
  }

  // The first relay of the list (own relay first, then the peers in order)
  // that answers and that the page can log in at, other than the one in use.
  async move() {
    const candidates = [this.home, ...this.peers].filter(
      (r) => r !== this.current && (r === this.home || this.tokenFor(r)),
    );
    const answers = await Promise.all(candidates.map((r) => this.alive(r)));
    const next = candidates.find((r, i) => answers[i]);
    if (!next) {
      this.onNone();
      this.schedule(WATCH_MS);
      return;
    }
    const from = this.current;
    this.current = next;
    this.misses = 0;
    this.moves.push({ from, to: next, at: Date.now() });
    this.onMove(from, next);
    this.schedule(WATCH_MS);
  }

  info() {
    return {
      home: this.home,
      peers: this.peers,
      current: this.current,
      pairToken: !!this.pairToken,
      pairExpires: this.pairExpires,
      moves: this.moves,
    };
  }
}
