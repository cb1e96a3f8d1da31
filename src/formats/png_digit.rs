//! Turning an arbitrary PNG into an MNIST-like input: grayscale, white ink on black, the
//! drawing scaled to fit a 20x20 box and centred by its centre of mass in the target frame,
//! as the MNIST images themselves were made.

use std::io::Cursor;
use std::path::Path;

use anyhow::{Context, Result};
use model::InputShape;

use crate::formats::data::Images;

/// Reads `path` as one image of `shape`.
pub fn load(path: &Path, shape: InputShape) -> Result<Images> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (gray, width, height) = decode(&bytes)
        .map_err(|err| anyhow::anyhow!("{}: not a valid PNG image: {err}", path.display()))?;
    Ok(Images {
        shape,
        count: 1,
        pixels: to_mnist(&gray, width, height, shape),
    })
}

/// One image, 8-bit grayscale, as PNG.
pub fn encode(pixels: &[u8], shape: InputShape) -> Result<Vec<u8>> {
    let mut png = Vec::new();
    let mut encoder = png::Encoder::new(&mut png, shape.width as u32, shape.height as u32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().context("encoding PNG")?;
    writer.write_image_data(pixels).context("encoding PNG")?;
    writer.finish().context("encoding PNG")?;
    Ok(png)
}

/// Luminance 0..1 of every pixel, transparency composited over white.
fn decode(bytes: &[u8]) -> Result<(Vec<f32>, usize, usize), png::DecodingError> {
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info()?;
    let size = reader.output_buffer_size().unwrap_or(0);
    let mut buf = vec![0; size];
    let info = reader.next_frame(&mut buf)?;
    let channels = info.color_type.samples();
    let (width, height) = (info.width as usize, info.height as usize);
    let mut gray = Vec::with_capacity(width * height);
    for row in buf.chunks(info.line_size).take(height) {
        for px in row.chunks(channels).take(width) {
            let value = |c: u8| f32::from(c) / 255.0;
            let (luma, alpha) = match *px {
                [g] => (value(g), 1.0),
                [g, a] => (value(g), value(a)),
                [r, g, b] => (0.299 * value(r) + 0.587 * value(g) + 0.114 * value(b), 1.0),
                [r, g, b, a, ..] => (
                    0.299 * value(r) + 0.587 * value(g) + 0.114 * value(b),
                    value(a),
                ),
                [] => (1.0, 1.0),
            };
            gray.push(luma * alpha + (1.0 - alpha));
        }
    }
    Ok((gray, width, height))
}

fn to_mnist(gray: &[f32], width: usize, height: usize, shape: InputShape) -> Vec<u8> {
    // Ink is whatever differs from the background, judged by the border.
    let border: Vec<f32> = (0..width)
        .flat_map(|x| [gray[x], gray[(height - 1) * width + x]])
        .chain((0..height).flat_map(|y| [gray[y * width], gray[y * width + width - 1]]))
        .collect();
    let background = border.iter().sum::<f32>() / border.len().max(1) as f32;
    let ink: Vec<f32> = if background > 0.5 {
        gray.iter().map(|v| 1.0 - v).collect()
    } else {
        gray.to_vec()
    };

    let mut out = vec![0u8; shape.pixels()];
    let inked = |x: usize, y: usize| ink[y * width + x] > 0.2;
    let xs = (0..width).filter(|&x| (0..height).any(|y| inked(x, y)));
    let ys = (0..height).filter(|&y| (0..width).any(|x| inked(x, y)));
    let (Some(x0), Some(x1), Some(y0), Some(y1)) =
        (xs.clone().min(), xs.max(), ys.clone().min(), ys.max())
    else {
        return out; // a blank image
    };
    let (box_w, box_h) = ((x1 - x0 + 1) as f32, (y1 - y0 + 1) as f32);
    // MNIST digits fit a 20x20 box in a 28x28 frame.
    let fit = 20.0 / 28.0 * shape.height.min(shape.width) as f32;
    let scale = fit / box_w.max(box_h);
    let (scaled_w, scaled_h) = (
        ((box_w * scale).round() as usize).max(1),
        ((box_h * scale).round() as usize).max(1),
    );
    let scaled = resample(&ink, width, (x0, y0, box_w, box_h), scaled_w, scaled_h);

    // Centre of mass of the scaled drawing goes to the centre of the frame.
    let mass: f32 = scaled.iter().sum::<f32>().max(1e-6);
    let cx = (0..scaled.len())
        .map(|i| (i % scaled_w) as f32 * scaled[i])
        .sum::<f32>()
        / mass;
    let cy = (0..scaled.len())
        .map(|i| (i / scaled_w) as f32 * scaled[i])
        .sum::<f32>()
        / mass;
    let dx = (shape.width as f32 / 2.0 - 0.5 - cx).round() as isize;
    let dy = (shape.height as f32 / 2.0 - 0.5 - cy).round() as isize;
    for (i, &v) in scaled.iter().enumerate() {
        let x = (i % scaled_w) as isize + dx;
        let y = (i / scaled_w) as isize + dy;
        if (0..shape.width as isize).contains(&x) && (0..shape.height as isize).contains(&y) {
            out[y as usize * shape.width + x as usize] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
        }
    }
    out
}

/// Area-averaged resampling of the box `(x0, y0, w, h)` of `src` to `out_w` x `out_h`.
fn resample(
    src: &[f32],
    src_w: usize,
    (x0, y0, w, h): (usize, usize, f32, f32),
    out_w: usize,
    out_h: usize,
) -> Vec<f32> {
    // Supersampling each output pixel on a 4x4 grid averages the source area it covers.
    const GRID: usize = 4;
    let mut out = vec![0.0; out_w * out_h];
    for (i, value) in out.iter_mut().enumerate() {
        let (ox, oy) = ((i % out_w) as f32, (i / out_w) as f32);
        let mut sum = 0.0;
        for sy in 0..GRID {
            for sx in 0..GRID {
                let fx = (ox + (sx as f32 + 0.5) / GRID as f32) * w / out_w as f32;
                let fy = (oy + (sy as f32 + 0.5) / GRID as f32) * h / out_h as f32;
                let x = x0 + (fx as usize).min(w as usize - 1);
                let y = y0 + (fy as usize).min(h as usize - 1);
                sum += src[y * src_w + x];
            }
        }
        *value = sum / (GRID * GRID) as f32;
    }
    out
}
