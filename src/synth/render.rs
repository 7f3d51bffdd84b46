//! Net-space images into pictures: PNG tiles, labelled montages and GIFs of a run.

use crate::fsutil::write_atomic;
use crate::preprocess::IMAGENET_MEAN_BGR;
use anyhow::{bail, ensure, Context, Result};
use image::codecs::gif::{GifEncoder, Repeat};
use image::{Delay, Frame, ImageFormat, Rgb, RgbImage};
use std::io::Cursor;
use std::path::Path;

/// How a net-space image (BGR, mean subtracted, C x H x W f32) becomes a picture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Render {
    /// The paper's figures: BGR -> RGB, clip to [-120, 120], stretch min..max to 0..255.
    Paper,
    /// Add the ImageNet mean back, clamp to 0..255, BGR -> RGB.
    Mean,
}

/// Paper clip bound: the released DGN-AM code shows images in [-120, 120].
const PAPER_CLIP: f32 = 120.0;

/// Renders a C x H x W image (C = 3 in BGR order, or C = 1 grey) as RGB.
///
/// Three channels: `Paper` swaps to RGB, clips to [-120, 120] and stretches the clipped
/// image's min..max (over all channels together) to 0..255; `Mean` adds the BGR ImageNet
/// mean back, clamps to 0..255 and swaps to RGB.
/// One channel (LeNet-style, values in about [0, 1]): `Paper` stretches min..max with no
/// clip; `Mean` is `clamp(v * 255)`. Both give grey pixels.
/// A constant image stretches to mid grey 128. NaN becomes 0.
///
/// Panics if `channels` is not 1 or 3 or `chw` is not `channels * height * width` long.
pub fn to_rgb(chw: &[f32], channels: usize, height: usize, width: usize, mode: Render) -> RgbImage {
    assert!(channels == 1 || channels == 3, "to_rgb renders 1 or 3 channels, got {channels}");
    let plane = height * width;
    assert_eq!(chw.len(), channels * plane, "to_rgb: {} values for a {channels}x{height}x{width} image", chw.len());
    // Net-space value -> byte, per channel (in the input's channel order).
    let values: Vec<f32> = match (mode, channels) {
        (Render::Paper, 3) => stretch(chw.iter().map(|v| v.clamp(-PAPER_CLIP, PAPER_CLIP))),
        (Render::Paper, _) => stretch(chw.iter().copied()),
        (Render::Mean, 3) => chw.iter().enumerate().map(|(i, v)| v + IMAGENET_MEAN_BGR[i / plane]).collect(),
        (Render::Mean, _) => chw.iter().map(|v| v * 255.0).collect(),
    };
    let byte = |i: usize| values[i].round().clamp(0.0, 255.0) as u8; // NaN casts to 0
    let mut img = RgbImage::new(width as u32, height as u32);
    for (i, px) in img.pixels_mut().enumerate() {
        *px = if channels == 3 {
            Rgb([byte(2 * plane + i), byte(plane + i), byte(i)])
        } else {
            let g = byte(i);
            Rgb([g, g, g])
        };
    }
    img
}

/// Maps the finite min..max of `values` linearly onto 0..255 (a constant image gives 128).
fn stretch(values: impl Iterator<Item = f32> + Clone) -> Vec<f32> {
    let (lo, hi) = values.clone().filter(|v| v.is_finite()).fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi <= lo {
        return values.map(|_| 128.0).collect();
    }
    let scale = 255.0 / (hi - lo);
    values.map(|v| (v - lo) * scale).collect()
}

/// Built-in 5x8 font for printable ASCII 32..=126 (7 rows above the baseline, one for
/// the descenders of g, j, p, q, y): one byte per row, top row first, bit 4 is the
/// leftmost column. Anything else draws as '?'.
const FONT: [[u8; 8]; 95] = [
    [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00], // ' '
    [0x04, 0x04, 0x04, 0x04, 0x04, 0x00, 0x04, 0x00], // '!'
    [0x0A, 0x0A, 0x0A, 0x00, 0x00, 0x00, 0x00, 0x00], // '"'
    [0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A, 0x00], // '#'
    [0x04, 0x0F, 0x14, 0x0E, 0x05, 0x1E, 0x04, 0x00], // '$'
    [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03, 0x00], // '%'
    [0x0C, 0x12, 0x14, 0x08, 0x15, 0x12, 0x0D, 0x00], // '&'
    [0x04, 0x04, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00], // '\''
    [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02, 0x00], // '('
    [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08, 0x00], // ')'
    [0x00, 0x04, 0x15, 0x0E, 0x15, 0x04, 0x00, 0x00], // '*'
    [0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00, 0x00], // '+'
    [0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08, 0x00], // ','
    [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00, 0x00], // '-'
    [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C, 0x00], // '.'
    [0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00, 0x00], // '/'
    [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E, 0x00], // '0'
    [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E, 0x00], // '1'
    [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F, 0x00], // '2'
    [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E, 0x00], // '3'
    [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02, 0x00], // '4'
    [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E, 0x00], // '5'
    [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E, 0x00], // '6'
    [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08, 0x00], // '7'
    [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E, 0x00], // '8'
    [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C, 0x00], // '9'
    [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00, 0x00], // ':'
    [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x04, 0x08, 0x00], // ';'
    [0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02, 0x00], // '<'
    [0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00, 0x00], // '='
    [0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08, 0x00], // '>'
    [0x0E, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04, 0x00], // '?'
    [0x0E, 0x11, 0x01, 0x0D, 0x15, 0x15, 0x0E, 0x00], // '@'
    [0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x00], // 'A'
    [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E, 0x00], // 'B'
    [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E, 0x00], // 'C'
    [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C, 0x00], // 'D'
    [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F, 0x00], // 'E'
    [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10, 0x00], // 'F'
    [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F, 0x00], // 'G'
    [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11, 0x00], // 'H'
    [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E, 0x00], // 'I'
    [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C, 0x00], // 'J'
    [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11, 0x00], // 'K'
    [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F, 0x00], // 'L'
    [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11, 0x00], // 'M'
    [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11, 0x00], // 'N'
    [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E, 0x00], // 'O'
    [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10, 0x00], // 'P'
    [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D, 0x00], // 'Q'
    [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11, 0x00], // 'R'
    [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E, 0x00], // 'S'
    [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x00], // 'T'
    [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E, 0x00], // 'U'
    [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04, 0x00], // 'V'
    [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A, 0x00], // 'W'
    [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11, 0x00], // 'X'
    [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04, 0x00], // 'Y'
    [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F, 0x00], // 'Z'
    [0x0E, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0E, 0x00], // '['
    [0x00, 0x10, 0x08, 0x04, 0x02, 0x01, 0x00, 0x00], // '\\'
    [0x0E, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0E, 0x00], // ']'
    [0x04, 0x0A, 0x11, 0x00, 0x00, 0x00, 0x00, 0x00], // '^'
    [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F, 0x00], // '_'
    [0x08, 0x04, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00], // '`'
    [0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F, 0x00], // 'a'
    [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1E, 0x00], // 'b'
    [0x00, 0x00, 0x0E, 0x10, 0x10, 0x11, 0x0E, 0x00], // 'c'
    [0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F, 0x00], // 'd'
    [0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E, 0x00], // 'e'
    [0x06, 0x09, 0x08, 0x1C, 0x08, 0x08, 0x08, 0x00], // 'f'
    [0x00, 0x00, 0x0F, 0x11, 0x11, 0x0F, 0x01, 0x0E], // 'g'
    [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11, 0x00], // 'h'
    [0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E, 0x00], // 'i'
    [0x02, 0x00, 0x06, 0x02, 0x02, 0x02, 0x12, 0x0C], // 'j'
    [0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12, 0x00], // 'k'
    [0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E, 0x00], // 'l'
    [0x00, 0x00, 0x1A, 0x15, 0x15, 0x11, 0x11, 0x00], // 'm'
    [0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11, 0x00], // 'n'
    [0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E, 0x00], // 'o'
    [0x00, 0x00, 0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10], // 'p'
    [0x00, 0x00, 0x0F, 0x11, 0x11, 0x0F, 0x01, 0x01], // 'q'
    [0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10, 0x00], // 'r'
    [0x00, 0x00, 0x0E, 0x10, 0x0E, 0x01, 0x1E, 0x00], // 's'
    [0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06, 0x00], // 't'
    [0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0D, 0x00], // 'u'
    [0x00, 0x00, 0x11, 0x11, 0x11, 0x0A, 0x04, 0x00], // 'v'
    [0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0A, 0x00], // 'w'
    [0x00, 0x00, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x00], // 'x'
    [0x00, 0x00, 0x11, 0x11, 0x11, 0x0F, 0x01, 0x0E], // 'y'
    [0x00, 0x00, 0x1F, 0x02, 0x04, 0x08, 0x1F, 0x00], // 'z'
    [0x02, 0x04, 0x04, 0x08, 0x04, 0x04, 0x02, 0x00], // '{'
    [0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x00], // '|'
    [0x08, 0x04, 0x04, 0x02, 0x04, 0x04, 0x08, 0x00], // '}'
    [0x00, 0x00, 0x08, 0x15, 0x02, 0x00, 0x00, 0x00], // '~'
];
const GLYPH_W: u32 = 5;
const GLYPH_H: u32 = 8;
/// Horizontal advance per character, one column of spacing included.
const ADVANCE: u32 = GLYPH_W + 1;

fn glyph(c: char) -> &'static [u8; 8] {
    let code = c as u32;
    let index = if (32..=126).contains(&code) { code - 32 } else { '?' as u32 - 32 };
    &FONT[index as usize]
}

/// Width in pixels that `draw_text` covers for `text` at `scale` (0 for empty text).
pub fn text_width(text: &str, scale: u32) -> u32 {
    let n = text.chars().count() as u32;
    if n == 0 {
        0
    } else {
        (n * ADVANCE - 1) * scale.max(1)
    }
}

/// Draws text at (x, y) (top-left corner) with the built-in 5x8 font, each font pixel a
/// `scale` x `scale` block; pixels outside the image are skipped. Returns the width of
/// the text, as `text_width`.
pub fn draw_text(img: &mut RgbImage, x: u32, y: u32, text: &str, scale: u32, color: Rgb<u8>) -> u32 {
    let scale = scale.max(1);
    let (w, h) = img.dimensions();
    for (k, c) in text.chars().enumerate() {
        let left = x as u64 + k as u64 * (ADVANCE * scale) as u64;
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in 0..GLYPH_W {
                if bits >> (GLYPH_W - 1 - col) & 1 == 0 {
                    continue;
                }
                let px = left + (col * scale) as u64;
                let py = y as u64 + row as u64 * scale as u64;
                for dy in 0..scale as u64 {
                    for dx in 0..scale as u64 {
                        if px + dx < w as u64 && py + dy < h as u64 {
                            img.put_pixel((px + dx) as u32, (py + dy) as u32, color);
                        }
                    }
                }
            }
        }
    }
    text_width(text, scale)
}

/// `text` broken into lines that each fit in `max_width`: at spaces where it can, inside a
/// word longer than a line where it must. At most `max_lines` lines; only text beyond them
/// is cut, and the last line then ends in "...".
fn wrap_caption(text: &str, max_width: u32, scale: u32, max_lines: usize) -> Vec<String> {
    let fits = |t: &str| text_width(t, scale) <= max_width;
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let joined = if line.is_empty() { word.to_string() } else { format!("{line} {word}") };
        if fits(&joined) {
            line = joined;
            continue;
        }
        if !line.is_empty() {
            lines.push(std::mem::take(&mut line));
        }
        // A word wider than a whole line is split where the line is full.
        let mut rest: Vec<char> = word.chars().collect();
        while !fits(&rest.iter().collect::<String>()) {
            let n = (1..rest.len()).rev().find(|&n| fits(&rest[..n].iter().collect::<String>())).unwrap_or(1);
            lines.push(rest.drain(..n).collect());
        }
        line = rest.into_iter().collect();
    }
    if !line.is_empty() {
        lines.push(line);
    }
    if lines.len() > max_lines.max(1) {
        lines.truncate(max_lines.max(1));
        let last = lines.last_mut().expect("at least one line");
        let chars: Vec<char> = last.chars().collect();
        let n = (0..=chars.len()).rev().find(|&n| fits(&(chars[..n].iter().collect::<String>() + "..."))).unwrap_or(0);
        *last = chars[..n].iter().collect::<String>() + "...";
    }
    lines
}

/// `img` enlarged by the smallest whole factor that makes both sides at least `min_side`,
/// each pixel a block (nearest neighbour: small nets' pixels stay sharp); unchanged when it
/// is large enough already.
pub fn upscale_nearest(img: &RgbImage, min_side: u32) -> RgbImage {
    let side = img.width().min(img.height()).max(1);
    if side >= min_side {
        return img.clone();
    }
    let k = min_side.div_ceil(side);
    image::imageops::resize(img, img.width() * k, img.height() * k, image::imageops::FilterType::Nearest)
}

/// A tile about `side` pixels on its shorter side: small images upscaled by whole factors
/// (nearest neighbour), large ones shrunk (area-averaged); the aspect ratio kept.
pub fn thumbnail(img: &RgbImage, side: u32) -> RgbImage {
    let short = img.width().min(img.height()).max(1);
    if short <= side {
        return upscale_nearest(img, side);
    }
    let (w, h) = ((img.width() as u64 * side as u64 / short as u64) as u32, (img.height() as u64 * side as u64 / short as u64) as u32);
    image::imageops::thumbnail(img, w.max(1), h.max(1))
}

/// Caption lines kept under a montage tile; a longer caption ends in "...".
const CAPTION_LINES: usize = 3;

const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const CAPTION_COLOR: Rgb<u8> = Rgb([20, 20, 20]);
/// Padding around tiles and captions, in font pixels.
const PAD: u32 = 4;

/// Font scale for captions under tiles `cell_w` wide: 2 for 227-pixel tiles.
fn caption_scale(cell_w: u32) -> u32 {
    (cell_w / 100).clamp(1, 4)
}

/// A grid of tiles on white, each with its caption underneath in the built-in font.
///
/// Columns: `columns` if given (kept within 1..=n), else ceil(sqrt(n)); rows fill left to
/// right. Every cell is as large as the largest tile; tiles and captions are centered in
/// it. The font scale (and padding, 4 font pixels) follows the tile width: 2 for
/// 227-pixel tiles, 1 below 200 pixels, at most 4. Captions wider than the cell wrap onto
/// up to three lines (every cell as tall as the most lines need). No tiles: a 1x1 white
/// image.
pub fn montage(tiles: &[(RgbImage, String)], columns: Option<usize>) -> RgbImage {
    if tiles.is_empty() {
        return RgbImage::from_pixel(1, 1, WHITE);
    }
    let n = tiles.len();
    let cols = columns.unwrap_or_else(|| (n as f64).sqrt().ceil() as usize).clamp(1, n) as u32;
    let rows = n.div_ceil(cols as usize) as u32;
    let cell_w = tiles.iter().map(|(t, _)| t.width()).max().unwrap_or(0);
    let cell_h = tiles.iter().map(|(t, _)| t.height()).max().unwrap_or(0);
    let scale = caption_scale(cell_w);
    let pad = PAD * scale;
    let captions: Vec<Vec<String>> = tiles.iter().map(|(_, c)| wrap_caption(c, cell_w, scale, CAPTION_LINES)).collect();
    let lines = captions.iter().map(Vec::len).max().unwrap_or(1).max(1) as u32;
    let line_h = (GLYPH_H + 2) * scale;
    let step_x = cell_w + pad;
    let step_y = cell_h + pad + lines * line_h - 2 * scale + pad;
    let mut out = RgbImage::from_pixel(pad + cols * step_x, pad + rows * step_y, WHITE);
    for (i, ((tile, _), caption)) in tiles.iter().zip(&captions).enumerate() {
        let x0 = pad + (i as u32 % cols) * step_x;
        let y0 = pad + (i as u32 / cols) * step_y;
        let tx = x0 + (cell_w - tile.width()) / 2;
        let ty = y0 + (cell_h - tile.height()) / 2;
        image::imageops::replace(&mut out, tile, tx as i64, ty as i64);
        for (k, text) in caption.iter().enumerate() {
            let cx = x0 + (cell_w - text_width(text, scale).min(cell_w)) / 2;
            draw_text(&mut out, cx, y0 + cell_h + pad + k as u32 * line_h, text, scale, CAPTION_COLOR);
        }
    }
    out
}

/// Writes a looping animated GIF of `frames` (all one size), `delay_ms` per frame (GIF
/// stores centiseconds, so it is rounded to 10 ms), through a temporary file renamed
/// into place.
pub fn write_gif(path: &Path, frames: &[RgbImage], delay_ms: u32) -> Result<()> {
    let Some(first) = frames.first() else { bail!("{}: no frames to write", path.display()) };
    let size = first.dimensions();
    if let Some((i, f)) = frames.iter().enumerate().find(|(_, f)| f.dimensions() != size) {
        bail!("{}: frame {i} is {}x{}, frame 0 is {}x{}", path.display(), f.width(), f.height(), size.0, size.1);
    }
    let mut bytes = Vec::new();
    {
        // NeuQuant speed 10 (1 best .. 30 fastest): runs save many 227x227 frames.
        let mut encoder = GifEncoder::new_with_speed(&mut bytes, 10);
        encoder.set_repeat(Repeat::Infinite).with_context(|| format!("{}: GIF encoding", path.display()))?;
        let delay = Delay::from_numer_denom_ms(delay_ms, 1);
        let frames = frames.iter().map(|f| Frame::from_parts(image::DynamicImage::ImageRgb8(f.clone()).into_rgba8(), 0, 0, delay));
        encoder.encode_frames(frames).with_context(|| format!("{}: GIF encoding", path.display()))?;
    }
    write_atomic(path, &bytes)
}

/// Saves a PNG through a temporary file renamed into place.
pub fn write_png(path: &Path, img: &RgbImage) -> Result<()> {
    let bytes = png_bytes(img).with_context(|| format!("{}", path.display()))?;
    write_atomic(path, &bytes)
}

/// An image encoded as PNG.
pub fn png_bytes(img: &RgbImage) -> Result<Vec<u8>> {
    ensure!(img.width() > 0 && img.height() > 0, "cannot write an empty image");
    let mut bytes = Cursor::new(Vec::new());
    img.write_to(&mut bytes, ImageFormat::Png).context("PNG encoding")?;
    Ok(bytes.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::AnimationDecoder;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("dgnam-render-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn paper_swaps_clips_and_stretches() {
        // 3 x 2 x 2, BGR planes. Clipped range is [-120, 120]; 500 clips to 120.
        #[rustfmt::skip]
        let chw = [
            -120.0, 0.0, 60.0, 500.0,   // B
            120.0, -60.0, 0.0, 0.0,     // G
            -200.0, 30.0, -30.0, 120.0, // R
        ];
        let img = to_rgb(&chw, 3, 2, 2, Render::Paper);
        let b = |v: f32| ((v + 120.0) * 255.0 / 240.0).round() as u8;
        assert_eq!(img.get_pixel(0, 0).0, [0, 255, 0]);
        assert_eq!(img.get_pixel(1, 0).0, [b(30.0), b(-60.0), b(0.0)]);
        assert_eq!(img.get_pixel(0, 1).0, [b(-30.0), b(0.0), b(60.0)]);
        assert_eq!(img.get_pixel(1, 1).0, [255, b(0.0), 255]);
    }

    #[test]
    fn paper_stretches_the_clipped_range_not_the_clip_bounds() {
        // B = [10, 20], G = [30, 40], R = [50, 60]: 10 maps to 0 and 60 to 255.
        let chw = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0];
        let img = to_rgb(&chw, 3, 1, 2, Render::Paper);
        assert_eq!(img.get_pixel(0, 0).0, [204, 102, 0]);
        assert_eq!(img.get_pixel(1, 0).0, [255, 153, 51]);
    }

    #[test]
    fn constant_image_is_mid_grey() {
        for (c, mode) in [(3, Render::Paper), (1, Render::Paper)] {
            let img = to_rgb(&vec![7.5; c * 6], c, 2, 3, mode);
            assert!(img.pixels().all(|p| p.0 == [128, 128, 128]), "{c} channels");
        }
    }

    #[test]
    fn mean_adds_the_mean_back_and_clamps() {
        let chw = [0.0, 200.0, -10.0, -200.0, 5.0, 0.5];
        let img = to_rgb(&chw, 3, 1, 2, Render::Mean);
        // pixel 0: B=0+104.0, G=-10+116.7, R=5+122.7
        assert_eq!(img.get_pixel(0, 0).0, [128, 107, 104]);
        // pixel 1: B=200+104 -> 255, G=-200+116.7 -> 0, R=0.5+122.68 -> 123
        assert_eq!(img.get_pixel(1, 0).0, [123, 0, 255]);
    }

    #[test]
    fn one_channel_is_grey() {
        let img = to_rgb(&[0.0, 0.5, 1.0, 2.0], 1, 2, 2, Render::Mean);
        let grey: Vec<u8> = img.pixels().map(|p| p.0[0]).collect();
        assert_eq!(grey, [0, 128, 255, 255]);
        assert!(img.pixels().all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2]));
        let img = to_rgb(&[-300.0, 0.0, 300.0, 150.0], 1, 2, 2, Render::Paper);
        let grey: Vec<u8> = img.pixels().map(|p| p.0[0]).collect();
        assert_eq!(grey, [0, 128, 255, 191]); // no clip at 120 for one channel
    }

    #[test]
    fn montage_layout_and_captions() {
        let tiles: Vec<_> = (0..5).map(|i| (RgbImage::from_pixel(10, 10, Rgb([200, 0, 0])), format!("{i}"))).collect();
        let m = montage(&tiles, None);
        assert_eq!(caption_scale(10), 1);
        let (step_x, step_y) = (10 + PAD, 10 + PAD + GLYPH_H + PAD);
        assert_eq!(m.dimensions(), (PAD + 3 * step_x, PAD + 2 * step_y));
        assert_eq!(m.dimensions(), (46, 56));
        assert_eq!(*m.get_pixel(0, 0), WHITE);
        assert_eq!(*m.get_pixel(m.width() - 1, m.height() - 1), WHITE);
        for i in 0..5 {
            let (x0, y0) = (PAD + (i % 3) * step_x, PAD + (i / 3) * step_y);
            assert_eq!(m.get_pixel(x0, y0).0, [200, 0, 0], "tile {i}");
            let caption_dark = (x0..x0 + 10)
                .flat_map(|x| (y0 + 10..y0 + step_y - PAD).map(move |y| (x, y)))
                .any(|(x, y)| m.get_pixel(x, y).0.iter().all(|&c| c < 100));
            assert!(caption_dark, "caption of tile {i}");
            // the padding row between tile and caption stays white
            assert_eq!(*m.get_pixel(x0, y0 + 10), WHITE);
        }
        assert_eq!(montage(&tiles, Some(5)).dimensions(), (PAD + 5 * step_x, PAD + step_y));
    }

    #[test]
    fn long_captions_wrap_at_spaces_and_only_the_overflow_is_cut() {
        assert_eq!(wrap_caption("short", 227, 2, 3), vec!["short"]);
        // 128-pixel tiles at scale 1 hold 21 characters a line.
        let lines = wrap_caption("3 great grey owl, great gray owl p=0.97", 128, 1, 3);
        assert_eq!(lines, vec!["3 great grey owl,", "great gray owl p=0.97"]);
        let long = "a very long caption that cannot possibly fit under one tile even on three lines of it";
        let lines = wrap_caption(long, 128, 1, 3);
        assert_eq!(lines.len(), 3);
        assert!(lines[2].ends_with("...") && lines.iter().all(|l| text_width(l, 1) <= 128), "{lines:?}");
        assert_eq!(wrap_caption("abcdefgh", 17, 1, 3), vec!["abc", "def", "gh"]);
        // A wrapped caption makes every cell taller, and its second line has ink.
        let tiles = vec![(RgbImage::from_pixel(128, 128, WHITE), "3 great grey owl, great gray owl".to_string())];
        let m = montage(&tiles, None);
        assert_eq!(m.height(), PAD + 128 + PAD + 2 * (GLYPH_H + 2) - 2 + PAD);
        let second_line = PAD + 128 + PAD + GLYPH_H + 2;
        assert!((0..m.width()).any(|x| (second_line..second_line + GLYPH_H).any(|y| m.get_pixel(x, y).0 != WHITE.0)));
    }

    #[test]
    fn small_images_are_upscaled_by_whole_factors_and_large_ones_shrunk() {
        let mut small = RgbImage::from_pixel(6, 6, WHITE);
        small.put_pixel(0, 0, Rgb([1, 2, 3]));
        let up = upscale_nearest(&small, 128);
        assert_eq!(up.dimensions(), (132, 132)); // 22 x 6
        assert!((0..22).all(|x| (0..22).all(|y| up.get_pixel(x, y).0 == [1, 2, 3])));
        assert_eq!(*up.get_pixel(22, 0), WHITE);
        assert_eq!(upscale_nearest(&RgbImage::new(32, 32), 128).dimensions(), (128, 128));
        assert_eq!(upscale_nearest(&RgbImage::new(227, 227), 128).dimensions(), (227, 227));
        assert_eq!(thumbnail(&RgbImage::new(227, 227), 128).dimensions(), (128, 128));
        assert_eq!(thumbnail(&RgbImage::new(28, 28), 128).dimensions(), (140, 140));
    }

    #[test]
    fn draw_text_draws_only_for_text() {
        let mut img = RgbImage::from_pixel(20, 20, WHITE);
        assert_eq!(draw_text(&mut img, 2, 2, "", 2, Rgb([0, 0, 0])), 0);
        assert!(img.pixels().all(|p| *p == WHITE));
        assert_eq!(draw_text(&mut img, 2, 2, "A", 2, Rgb([0, 0, 0])), 10);
        assert!(img.pixels().any(|p| *p != WHITE));
        // off the edge: clipped, no panic
        draw_text(&mut img, 18, 18, "WWW", 3, Rgb([0, 0, 0]));
    }

    #[test]
    fn every_printable_glyph_but_space_has_ink() {
        for code in 32u8..=126 {
            let inked = glyph(code as char).iter().any(|&row| row != 0);
            assert_eq!(inked, code != b' ', "glyph {:?}", code as char);
            assert!(glyph(code as char).iter().all(|&row| row < 1 << GLYPH_W));
        }
        assert_eq!(glyph('\u{e9}'), glyph('?'));
    }

    #[test]
    fn png_round_trip() {
        let dir = temp_dir("png");
        let path = dir.join("tile.png");
        let img = to_rgb(&(0..3 * 4 * 5).map(|v| v as f32).collect::<Vec<_>>(), 3, 4, 5, Render::Paper);
        write_png(&path, &img).unwrap();
        let back = image::open(&path).unwrap().into_rgb8();
        assert_eq!(back, img);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn gif_round_trip() {
        let dir = temp_dir("gif");
        let path = dir.join("run.gif");
        let frames: Vec<_> = (0..4).map(|i| RgbImage::from_pixel(12, 7, Rgb([i * 60, 0, 255 - i * 60]))).collect();
        write_gif(&path, &frames, 100).unwrap();
        let file = std::io::BufReader::new(std::fs::File::open(&path).unwrap());
        let decoded = image::codecs::gif::GifDecoder::new(file).unwrap().into_frames().collect_frames().unwrap();
        assert_eq!(decoded.len(), 4);
        for f in &decoded {
            assert_eq!(f.buffer().dimensions(), (12, 7));
            assert_eq!(f.delay().numer_denom_ms(), (100, 1));
        }
        assert!(write_gif(&path, &[], 100).is_err());
        let mixed = [RgbImage::new(2, 2), RgbImage::new(3, 2)];
        assert!(write_gif(&dir.join("mixed.gif"), &mixed, 100).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
