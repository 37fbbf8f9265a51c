//! Test-pattern pictures for the synthetic camera, drawn straight into YUV 4:2:0
//! (BT.601, limited range): a frame costs a memcpy, a noise pass and a few
//! dozen glyphs, no colour conversion.

use font8x8::{UnicodeFonts, BASIC_FONTS, LATIN_FONTS};
use openh264::formats::YUVSlices;
use std::fmt::Write as _;
use time::OffsetDateTime;

/// A colour as (Y, Cb, Cr), BT.601 limited range.
type Yuv = (u8, u8, u8);

/// SMPTE 75 % colour bars: white, yellow, cyan, green, magenta, red, blue.
const BARS: [Yuv; 7] = [
    (180, 128, 128),
    (162, 44, 142),
    (131, 156, 44),
    (112, 72, 58),
    (84, 184, 198),
    (65, 100, 212),
    (35, 212, 114),
];
const BAND: Yuv = (24, 128, 128);
const BOX_OUTER: Yuv = (235, 128, 128);
const BOX_INNER: Yuv = (16, 128, 128);
const TEXT_LUMA: u8 = 235;
/// Peak luma noise, like a real sensor's: without it the encoder needs a
/// fraction of the configured bitrate and link budgets are never exercised.
const GRAIN: u8 = 4;

/// Time for the moving box to cross the picture and come back.
const BOX_PERIOD_X_MS: u64 = 4_000;
const BOX_PERIOD_Y_MS: u64 = 3_000;

/// Draws the synthetic camera's picture: colour bars and a luma ramp, a box
/// bouncing across them, the camera label in a top band, and the wall clock
/// and frame counter in a bottom band.
pub struct Pattern {
    width: usize,
    height: usize,
    /// Font scale: ×2 at 640×360, ×1 at 320×180, so 40 characters fit a line.
    scale: usize,
    band_height: usize,
    /// The static part of the picture (I420), copied into `frame` first.
    background: Vec<u8>,
    /// The picture handed to the encoder (I420).
    frame: Vec<u8>,
    text: String,
}

impl Pattern {
    /// Prepares a pattern of `width`×`height`; both must be even and at least 16.
    pub fn new(width: usize, height: usize) -> Self {
        let scale = (width / 320).min(height / 180).clamp(1, 4);
        // Bands never take more than half the picture, however small.
        let band_height = even((12 * scale).min(height / 4));
        let mut pattern = Pattern {
            width,
            height,
            scale,
            band_height,
            background: vec![0; width * height * 3 / 2],
            frame: vec![0; width * height * 3 / 2],
            text: String::new(),
        };
        pattern.draw_background();
        pattern.frame.copy_from_slice(&pattern.background);
        pattern
    }

    /// Draws the picture for `frame_no`, captured at `wall` and `t_ms`
    /// milliseconds into a monotonic timeline (drives the motion); read it
    /// with [`Pattern::as_yuv`].
    pub fn draw(&mut self, label: &str, wall: OffsetDateTime, frame_no: u64, t_ms: u64) {
        self.frame.copy_from_slice(&self.background);
        let (w, h, band, scale) = (self.width, self.height, self.band_height, self.scale);
        let mut canvas = Canvas::new(&mut self.frame, w, h);

        let side = even(h / 6).max(4);
        let room_x = w.saturating_sub(side);
        let room_y = (h - 2 * band).saturating_sub(side);
        let x = even(triangle(t_ms, BOX_PERIOD_X_MS, room_x));
        let y = band + even(triangle(t_ms, BOX_PERIOD_Y_MS, room_y));
        canvas.fill_rect(x, y, side, side, BOX_OUTER);
        let inner = even(side / 2);
        let offset = even((side - inner) / 2);
        canvas.fill_rect(x + offset, y + offset, inner, inner, BOX_INNER);

        canvas.add_grain(band..h - band, frame_no, GRAIN);

        let pad = 2 * scale;
        canvas.draw_text(pad, pad, scale, label);
        self.text.clear();
        push_clock(&mut self.text, wall);
        // Writing into a String cannot fail.
        let _ = write!(self.text, " UTC  #{frame_no:06}");
        canvas.draw_text(pad, h - band + pad, scale, &self.text);
    }

    /// The last drawn picture, as encoder input.
    pub fn as_yuv(&self) -> YUVSlices<'_> {
        let (w, h) = (self.width, self.height);
        let (y, chroma) = self.frame.split_at(w * h);
        let (u, v) = chroma.split_at(w * h / 4);
        YUVSlices::new((y, u, v), (w, h), (w, w / 2, w / 2))
    }

    fn draw_background(&mut self) {
        let (w, h, band) = (self.width, self.height, self.band_height);
        let bars_end = band + even((h - 2 * band) * 2 / 3);
        let mut canvas = Canvas::new(&mut self.background, w, h);
        canvas.fill_rect(0, 0, w, band, BAND);
        for (i, &colour) in BARS.iter().enumerate() {
            let x0 = even(w * i / BARS.len());
            let x1 = even(w * (i + 1) / BARS.len());
            canvas.fill_rect(x0, band, x1 - x0, bars_end - band, colour);
        }
        // A horizontal luma ramp under the bars: texture the encoder must keep.
        canvas.fill_rect(0, bars_end, w, h - band - bars_end, (16, 128, 128));
        for row in bars_end..h - band {
            let Some(line) = canvas.buf.get_mut(row * w..(row + 1) * w) else { break };
            for (col, px) in line.iter_mut().enumerate() {
                *px = (16 + col * (235 - 16) / w) as u8;
            }
        }
        canvas.fill_rect(0, h - band, w, band, BAND);
    }
}

/// An I420 picture being drawn on.
struct Canvas<'a> {
    buf: &'a mut [u8],
    width: usize,
    height: usize,
}

impl<'a> Canvas<'a> {
    fn new(buf: &'a mut [u8], width: usize, height: usize) -> Self {
        Canvas { buf, width, height }
    }

    /// Fills a rectangle with one colour, clipped to the picture; position and
    /// size should be even so chroma lines up.
    fn fill_rect(&mut self, x: usize, y: usize, width: usize, height: usize, colour: Yuv) {
        let (w, h) = (self.width, self.height);
        let (x1, y1) = ((x + width).min(w), (y + height).min(h));
        if x >= x1 || y >= y1 {
            return;
        }
        for row in y..y1 {
            if let Some(line) = self.buf.get_mut(row * w + x..row * w + x1) {
                line.fill(colour.0);
            }
        }
        let cw = w / 2;
        let u_base = w * h;
        let v_base = u_base + cw * (h / 2);
        let (cx0, cx1) = (x / 2, x1 / 2);
        for crow in y / 2..y1 / 2 {
            if let Some(line) = self.buf.get_mut(u_base + crow * cw + cx0..u_base + crow * cw + cx1) {
                line.fill(colour.1);
            }
            if let Some(line) = self.buf.get_mut(v_base + crow * cw + cx0..v_base + crow * cw + cx1) {
                line.fill(colour.2);
            }
        }
    }

    /// Adds pseudo-random noise in `-amplitude..=amplitude` to the luma of
    /// `rows`, different for every `seed` yet reproducible.
    fn add_grain(&mut self, rows: std::ops::Range<usize>, seed: u64, amplitude: u8) {
        let span = 2 * u16::from(amplitude) + 1;
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let w = self.width;
        let Some(luma) = self.buf.get_mut(rows.start * w..rows.end * w) else { return };
        for chunk in luma.chunks_mut(8) {
            // xorshift64: a few cycles per 8 pixels.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            for (i, px) in chunk.iter_mut().enumerate() {
                let r = ((state >> (8 * i)) & 0xff) as u16 * span / 256;
                *px = (u16::from(*px) + r).saturating_sub(u16::from(amplitude)).clamp(16, 235) as u8;
            }
        }
    }

    /// Writes `text` in white on the luma plane at `scale`, clipped to the
    /// picture; it is drawn on neutral-chroma bands, so luma alone is enough.
    fn draw_text(&mut self, x: usize, y: usize, scale: usize, text: &str) {
        let (w, h) = (self.width, self.height);
        let advance = 8 * scale;
        for (i, c) in text.chars().enumerate() {
            let gx = x + i * advance;
            if gx + advance > w {
                break;
            }
            let glyph = BASIC_FONTS
                .get(c)
                .or_else(|| LATIN_FONTS.get(c))
                .or_else(|| BASIC_FONTS.get('?'))
                .unwrap_or([0; 8]);
            for (gy, bits) in glyph.iter().enumerate() {
                for sy in 0..scale {
                    let row = y + gy * scale + sy;
                    if row >= h {
                        return;
                    }
                    let Some(line) = self.buf.get_mut(row * w + gx..row * w + gx + advance) else { return };
                    // `line` is 8 × `scale` long (`scale` ≥ 1 inside this loop): one cell per bit.
                    for (bit, cell) in line.chunks_exact_mut(scale).enumerate() {
                        if bits & (1 << bit) != 0 {
                            cell.fill(TEXT_LUMA);
                        }
                    }
                }
            }
        }
    }
}

/// Formats `t` as `YYYY-MM-DD HH:MM:SS.mmm`.
fn push_clock(out: &mut String, t: OffsetDateTime) {
    // Writing into a String cannot fail.
    let _ = write!(
        out,
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    );
}

/// Position in `0..=range` going up and down once every `period_ms`.
fn triangle(t_ms: u64, period_ms: u64, range: usize) -> usize {
    let half = period_ms / 2;
    let phase = t_ms % period_ms;
    let up = if phase < half { phase } else { period_ms - phase };
    (up as u128 * range as u128 / half as u128) as usize
}

fn even(v: usize) -> usize {
    v & !1
}

#[cfg(test)]
mod tests {
    use super::*;
    use openh264::formats::YUVSource;

    fn at(ms: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .expect("test timestamp in range")
    }

    #[test]
    fn clock_is_formatted_to_the_millisecond() {
        let mut s = String::new();
        push_clock(&mut s, at(1_700_000_000_123));
        assert_eq!(s, "2023-11-14 22:13:20.123");
    }

    #[test]
    fn picture_moves_and_the_clock_ticks() {
        for (w, h) in [(640, 360), (320, 180)] {
            let mut p = Pattern::new(w, h);
            assert_eq!(p.as_yuv().dimensions(), (w, h));
            let band = p.band_height;
            let rows =
                |p: &Pattern, r: std::ops::Range<usize>| p.as_yuv().y()[r.start * w..r.end * w].to_vec();
            let label = "Zaist / rotatoria via Mantova";
            let wall = at(1_700_000_000_000);

            p.draw(label, wall, 0, 0);
            let first = p.as_yuv().y().to_vec();
            let (first_picture, first_chroma) = (rows(&p, band..h - band), p.as_yuv().u().to_vec());
            // Same inputs, same picture: drawing is a pure function of them.
            p.draw(label, wall, 0, 0);
            assert_eq!(first, p.as_yuv().y());

            // Half a second later on the motion timeline (same grain, same
            // clock): only the box moved.
            p.draw(label, wall, 0, 500);
            assert_ne!(first_picture, rows(&p, band..h - band), "box did not move");
            assert_ne!(first_chroma, p.as_yuv().u(), "box did not move");
            let bottom = rows(&p, h - band..h);
            assert_eq!(first[(h - band) * w..], bottom[..]);

            // The wall clock and the counter tick in the bottom band...
            p.draw(label, at(1_700_000_000_500), 7, 500);
            assert_ne!(bottom, rows(&p, h - band..h), "clock did not tick");
            // ...while the label band stays put, with the label in white.
            assert_eq!(first[..band * w], rows(&p, 0..band)[..]);
            assert!(rows(&p, 0..band).contains(&TEXT_LUMA));
        }
    }

    #[test]
    fn box_bounces_within_the_picture() {
        assert_eq!(triangle(0, 4_000, 100), 0);
        assert_eq!(triangle(2_000, 4_000, 100), 100);
        assert_eq!(triangle(3_000, 4_000, 100), 50);
        assert_eq!(triangle(4_000, 4_000, 100), 0);
        // Any time, at any size, draws without going out of bounds.
        for (w, h) in [(320, 180), (16, 16), (1280, 64), (64, 720), (1920, 1080)] {
            let mut p = Pattern::new(w, h);
            for t in (0..10_000).step_by(251) {
                p.draw("a label longer than any picture is wide, clipped", at(0), t, t);
            }
        }
    }
}
