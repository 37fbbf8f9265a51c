// Measurement probe (the console's `?probe=1`, used by the tests and the
// bench): reads ponte's capture-time SEI from each received H.264 frame and
// reports it with the frame's RTP timestamp, so picture age can be computed
// from the camera's own clock independently of the relay's. Frames pass
// through unchanged.

const UUID = [...'ponte-capture-t1'].map((c) => c.charCodeAt(0));

// Capture time in µs from an Annex-B access unit, or null.
function captureMicros(bytes) {
  const n = bytes.length;
  for (let i = 0; i + 3 < n; i++) {
    if (bytes[i] !== 0 || bytes[i + 1] !== 0 || bytes[i + 2] !== 1) continue;
    const start = i + 3;
    if ((bytes[start] & 0x1f) !== 6) continue;
    // Unescape the SEI's RBSP (drop 0x03 after 00 00) up to the next start code.
    const rbsp = [];
    let zeros = 0;
    for (let j = start + 1; j < n && rbsp.length < 40; j++) {
      const b = bytes[j];
      if (zeros >= 2 && b === 3) {
        zeros = 0;
        continue;
      }
      if (zeros >= 2 && b <= 1) break;
      zeros = b === 0 ? zeros + 1 : 0;
      rbsp.push(b);
    }
    if (rbsp.length < 26 || rbsp[0] !== 5 || rbsp[1] !== 24) continue;
    if (!UUID.every((u, k) => rbsp[2 + k] === u)) continue;
    let micros = 0;
    for (let k = 18; k < 26; k++) micros = micros * 256 + rbsp[k];
    return micros;
  }
  return null;
}

onrtctransform = (event) => {
  const transformer = event.transformer;
  const id = transformer.options && transformer.options.id;
  const reader = transformer.readable.getReader();
  const writer = transformer.writable.getWriter();
  (async () => {
    for (;;) {
      const { value: frame, done } = await reader.read();
      if (done) return;
      const micros = captureMicros(new Uint8Array(frame.data));
      if (micros !== null) {
        postMessage({ id, rtp: frame.getMetadata().rtpTimestamp, captureMs: micros / 1000 });
      }
      await writer.write(frame);
    }
  })();
};
