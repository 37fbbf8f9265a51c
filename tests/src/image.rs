//! PNG pictures the browser produced (screenshots, console snapshots): the
//! pixels as luma, and the text chunks.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::Path;

/// A decoded picture as 8-bit luma.
pub struct Luma {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
    /// `tEXt`/`iTXt` chunks: keyword and text.
    pub texts: Vec<(String, String)>,
}

impl Luma {
    /// Decodes PNG bytes.
    pub fn decode(bytes: &[u8]) -> Result<Luma> {
        let mut decoder = png::Decoder::new(bytes);
        decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let mut reader = decoder.read_info().context("reading the PNG header")?;
        let mut buf = vec![0; reader.output_buffer_size()];
        let frame = reader.next_frame(&mut buf).context("decoding the PNG")?;
        let (width, height) = (frame.width as usize, frame.height as usize);
        let channels = match frame.color_type {
            png::ColorType::Grayscale => 1,
            png::ColorType::GrayscaleAlpha => 2,
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            other => bail!("unexpected PNG colour type {other:?}"),
        };
        let mut pixels = Vec::with_capacity(width * height);
        for row in buf[..frame.buffer_size()].chunks(frame.line_size) {
            for px in row.chunks(channels).take(width) {
                let y = if channels >= 3 {
                    0.299 * f64::from(px[0]) + 0.587 * f64::from(px[1]) + 0.114 * f64::from(px[2])
                } else {
                    f64::from(px[0])
                };
                pixels.push(y as u8);
            }
        }
        let info = reader.info();
        let mut texts: Vec<(String, String)> =
            info.uncompressed_latin1_text.iter().map(|c| (c.keyword.clone(), c.text.clone())).collect();
        for chunk in &info.utf8_text {
            texts.push((chunk.keyword.clone(), chunk.get_text().unwrap_or_default()));
        }
        Ok(Luma { width, height, pixels, texts })
    }

    /// Reads and decodes a PNG file.
    pub fn open(path: &Path) -> Result<Luma> {
        Luma::decode(&std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
    }

    /// Standard deviation of luma inside `x, y, w, h` (clipped to the picture).
    pub fn stddev(&self, x: usize, y: usize, w: usize, h: usize) -> f64 {
        let (x1, y1) = ((x + w).min(self.width), (y + h).min(self.height));
        let (mut n, mut sum, mut sum2) = (0.0, 0.0, 0.0);
        for row in y.min(y1)..y1 {
            for col in x.min(x1)..x1 {
                let v = f64::from(self.pixels[row * self.width + col]);
                n += 1.0;
                sum += v;
                sum2 += v * v;
            }
        }
        if n == 0.0 {
            return 0.0;
        }
        let mean = sum / n;
        (sum2 / n - mean * mean).max(0.0).sqrt()
    }
}

/// Luma standard deviation of each `[x, y, w, h]` rectangle (device
/// pixels, as JSON arrays) of the PNG at `path`, a few pixels inside each
/// so borders do not count.
pub fn region_luma_stddev(path: &Path, rects: &[Value]) -> Result<Vec<f64>> {
    let pic = Luma::open(path)?;
    rects
        .iter()
        .map(|r| {
            let n = |i: usize| r.get(i).and_then(Value::as_f64).unwrap_or(0.0).max(0.0) as usize;
            let inset = 6;
            Ok(pic.stddev(
                n(0) + inset,
                n(1) + inset,
                n(2).saturating_sub(2 * inset),
                n(3).saturating_sub(2 * inset),
            ))
        })
        .collect()
}
