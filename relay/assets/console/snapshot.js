// A still of a tile: the picture at its own size with a footer burned in
// (camera name and id, capture time, operator, site), saved as PNG. The same
// text is kept in the PNG's `Comment` text chunk, for tools to read.

export function footerText({ name, camera, captureMs, operator, site }) {
  const when = Number.isFinite(captureMs) && captureMs > 0 ? new Date(captureMs).toISOString() : 'capture time unknown';
  return `${name} [${camera}] · ${when} · ${operator || 'anonymous'} @ ${site}`;
}

// Draws `video`'s current picture with the footer; resolves to
// { blob, text, width, height }.
export async function still(video, meta) {
  const w = video.videoWidth;
  const h = video.videoHeight;
  if (!w || !h) throw new Error('no picture to save yet');
  const text = footerText(meta);
  const fontPx = Math.max(12, Math.round(h / 28));
  const footer = Math.round(fontPx * 1.8);
  const canvas = document.createElement('canvas');
  canvas.width = w;
  canvas.height = h + footer;
  const g = canvas.getContext('2d');
  g.drawImage(video, 0, 0, w, h);
  g.fillStyle = '#000';
  g.fillRect(0, h, w, footer);
  g.fillStyle = '#fff';
  g.font = `${fontPx}px sans-serif`;
  g.textBaseline = 'middle';
  // Shrink to fit rather than cut the operator's name off.
  const width = g.measureText(text).width;
  if (width > w - 8) g.font = `${Math.max(8, Math.floor(fontPx * (w - 8) / width))}px sans-serif`;
  g.fillText(text, 4, h + footer / 2);
  const png = await new Promise((resolve, reject) => {
    canvas.toBlob((b) => (b ? resolve(b) : reject(new Error('the browser could not encode the PNG'))), 'image/png');
  });
  const bytes = withComment(new Uint8Array(await png.arrayBuffer()), text);
  return { blob: new Blob([bytes], { type: 'image/png' }), text, width: w, height: h + footer };
}

// Saves `blob` as a download named `file`.
export function download(blob, file) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = file;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// Inserts an `iTXt` chunk (keyword `Comment`, UTF-8 text) after IHDR.
function withComment(png, text) {
  const utf8 = new TextEncoder().encode(text);
  const keyword = new TextEncoder().encode('Comment');
  // keyword NUL, compression flag 0, method 0, language '' NUL, translated '' NUL, text
  const data = new Uint8Array(keyword.length + 5 + utf8.length);
  data.set(keyword, 0);
  data.set(utf8, keyword.length + 5);
  const type = new TextEncoder().encode('iTXt');
  const chunk = new Uint8Array(12 + data.length);
  const view = new DataView(chunk.buffer);
  view.setUint32(0, data.length);
  chunk.set(type, 4);
  chunk.set(data, 8);
  const crcInput = new Uint8Array(4 + data.length);
  crcInput.set(type, 0);
  crcInput.set(data, 4);
  view.setUint32(8 + data.length, crc32(crcInput));
  const ihdrEnd = 8 + 12 + 13; // signature, IHDR length/type/crc, IHDR data
  const out = new Uint8Array(png.length + chunk.length);
  out.set(png.subarray(0, ihdrEnd), 0);
  out.set(chunk, ihdrEnd);
  out.set(png.subarray(ihdrEnd), ihdrEnd + chunk.length);
  return out;
}
