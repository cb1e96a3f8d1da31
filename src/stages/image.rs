//! `mnist image`: inference CSVs to GIFs, each image scaled up with its predicted label drawn
//! in a small bitmap font: one frame per row, or one contact sheet with `--grid`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use gif::{Encoder, Frame, Repeat};

use crate::files::input_files;
use crate::files::output::AtomicFile;
use crate::formats::data::Labelled;
use crate::formats::pixels_csv::{self, LabelColumn};

#[derive(Debug, clap::Args)]
pub struct ImageArgs {
    /// An inference CSV (pixels, then the label), or a directory of them (at any depth).
    #[arg(long)]
    pub input: PathBuf,
    /// Directory to write one GIF per CSV to.
    #[arg(long)]
    pub output: PathBuf,
    /// One contact sheet of all images instead of one frame per image.
    #[arg(long)]
    pub grid: bool,
    /// Scale factor for the images (at least 4).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(4..=32))]
    pub scale: u16,
    /// Delay between frames, in hundredths of a second.
    #[arg(long, default_value_t = 50)]
    pub delay: u16,
    /// Render at most this many images per CSV.
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
}

/// Palette: 0..=253 grays, then the label colour and its backdrop.
const LABEL: u8 = 254;
const BACKDROP: u8 = 255;

pub fn run(args: &ImageArgs) -> Result<()> {
    let inputs = input_files::find(&args.input, &["csv"])?;
    for csv in &inputs {
        let data = pixels_csv::read_labelled(csv, LabelColumn::Last)?;
        if data.len() > args.limit {
            eprintln!(
                "{}: rendering the first {} of {} images (--limit)",
                csv.display(),
                args.limit,
                data.len()
            );
        }
        let name = csv.file_stem().unwrap_or_default();
        let gif = args.output.join(name).with_extension("gif");
        render(&data, args, &gif).with_context(|| format!("rendering {}", csv.display()))?;
        eprintln!("wrote {}", gif.display());
    }
    Ok(())
}

/// A canvas of palette indices.
struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl Canvas {
    fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            pixels: vec![0; width * height],
        }
    }

    fn fill(&mut self, x: usize, y: usize, w: usize, h: usize, colour: u8) {
        for row in y..(y + h).min(self.height) {
            for col in x..(x + w).min(self.width) {
                self.pixels[row * self.width + col] = colour;
            }
        }
    }

    /// Draws image `index` of `data` at (`x`, `y`), scaled, with its label in the corner.
    fn draw(&mut self, data: &Labelled, index: usize, x: usize, y: usize, scale: usize) {
        let shape = data.images.shape;
        for (i, &p) in data.images.image(index).iter().enumerate() {
            let gray = (u16::from(p) * 253 / 255) as u8;
            self.fill(
                x + (i % shape.width) * scale,
                y + (i / shape.width) * scale,
                scale,
                scale,
                gray,
            );
        }
        let dot = (scale / 2).max(1);
        let glyph = DIGITS[usize::from(data.labels[index]) % 10];
        let (gx, gy) = (x + dot, y + dot);
        self.fill(gx, gy, (GLYPH_W + 2) * dot, (GLYPH_H + 2) * dot, BACKDROP);
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..GLYPH_W {
                if bits >> (GLYPH_W - 1 - col) & 1 == 1 {
                    self.fill(gx + (col + 1) * dot, gy + (row + 1) * dot, dot, dot, LABEL);
                }
            }
        }
    }
}

fn render(data: &Labelled, args: &ImageArgs, path: &Path) -> Result<()> {
    let count = data.len().min(args.limit);
    let scale = usize::from(args.scale);
    let (cell_w, cell_h) = (
        data.images.shape.width * scale,
        data.images.shape.height * scale,
    );
    let mut palette = Vec::with_capacity(256 * 3);
    for i in 0..254u16 {
        let v = (i * 255 / 253) as u8;
        palette.extend([v, v, v]);
    }
    palette.extend([0x39, 0xff, 0x14, 0x20, 0x20, 0x60]);

    let cols = (count as f64).sqrt().ceil().max(1.0) as usize;
    let rows = count.div_ceil(cols).max(1);
    let gap = scale;
    let (frame_count, width, height) = if args.grid {
        (1, cols * (cell_w + gap) + gap, rows * (cell_h + gap) + gap)
    } else {
        (count, cell_w, cell_h)
    };
    check_size(path, frame_count, width, height)?;
    let frames: Vec<Canvas> = if args.grid {
        let mut sheet = Canvas::new(width, height);
        for i in 0..count {
            let (x, y) = (
                gap + (i % cols) * (cell_w + gap),
                gap + (i / cols) * (cell_h + gap),
            );
            sheet.draw(data, i, x, y, scale);
        }
        vec![sheet]
    } else {
        (0..count)
            .map(|i| {
                let mut frame = Canvas::new(cell_w, cell_h);
                frame.draw(data, i, 0, 0, scale);
                frame
            })
            .collect()
    };

    let first = frames.first().context("no images")?;
    let mut file = AtomicFile::create(path)?;
    {
        let mut encoder =
            Encoder::new(&mut file, first.width as u16, first.height as u16, &palette)?;
        encoder.set_repeat(Repeat::Infinite)?;
        for canvas in &frames {
            let mut frame = Frame::from_indexed_pixels(
                canvas.width as u16,
                canvas.height as u16,
                canvas.pixels.clone(),
                None,
            );
            frame.delay = args.delay;
            encoder.write_frame(&frame)?;
        }
    }
    file.commit()
}

/// The most pixels one GIF may hold, its frames together (a canvas byte each).
const MAX_PIXELS: usize = 1 << 30;

/// Refuses GIFs wider or taller than the format allows, or too large to hold in memory.
fn check_size(path: &Path, frames: usize, width: usize, height: usize) -> Result<()> {
    let side = usize::from(u16::MAX);
    if width > side || height > side {
        bail!(
            "{}: a {width}x{height} image is larger than GIF allows ({side} pixels a side): use a \
             smaller --scale or --limit",
            path.display()
        );
    }
    let pixels = frames.saturating_mul(width * height);
    if pixels > MAX_PIXELS {
        bail!(
            "{}: {frames} frames of {width}x{height} are {pixels} pixels, more than the {MAX_PIXELS} \
             one GIF may hold: use a smaller --scale or --limit",
            path.display()
        );
    }
    Ok(())
}

const GLYPH_W: usize = 5;
const GLYPH_H: usize = 7;

/// 5x7 digits, one byte per row, the low five bits left to right.
const DIGITS: [[u8; GLYPH_H]; 10] = [
    [0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e],
    [0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e],
    [0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f],
    [0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e],
    [0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02],
    [0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e],
    [0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e],
    [0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
    [0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e],
    [0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c],
];
