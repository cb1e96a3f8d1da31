//! `mnist image`: inference CSVs to GIFs, each image scaled up with its predicted label drawn
//! over it (the class's name, when the CSV has the names `mnist infer --class-names` writes,
//! else its number), cut to fit: one frame per row, or one contact sheet with `--grid`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use gif::{Encoder, Frame, Repeat};

use crate::files::input_files;
use crate::files::output::AtomicFile;
use crate::formats::data::Labelled;
use crate::formats::pixels_csv;
use crate::report::text;

#[derive(Debug, clap::Args)]
pub struct ImageArgs {
    /// An inference CSV (pixels, the label, and optionally the class name), or a directory of
    /// them (at any depth).
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
        let (data, names) = pixels_csv::read_inference(csv)?;
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
        let captions: Vec<String> = match names {
            Some(names) => names,
            None => data.labels.iter().map(u16::to_string).collect(),
        };
        render(&data, &captions, args, &gif)
            .with_context(|| format!("rendering {}", csv.display()))?;
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

    /// Draws image `index` of `data` at (`x`, `y`), scaled, with `caption` in a strip at its
    /// top, cut to the image's width.
    fn draw(
        &mut self,
        data: &Labelled,
        index: usize,
        caption: &str,
        (x, y): (usize, usize),
        scale: usize,
    ) -> Result<()> {
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
        let px = (3 * scale).clamp(12, 32) as f32;
        let pad = scale / 2;
        // The strip spans the image less a margin each side, the text less a margin inside.
        let room = (shape.width * scale).saturating_sub(4 * pad) as f32;
        let caption = text::fit(caption, px, room)?;
        let width = text::width(&caption, px)?.ceil() as usize;
        let height = (px * 1.25).ceil() as usize;
        self.fill(x + pad, y + pad, width + 2 * pad, height, BACKDROP);
        let (left, top) = (x + 2 * pad, y + pad);
        text::draw(&caption, px, |gx, gy| {
            self.fill(left + gx as usize, top + gy as usize, 1, 1, LABEL);
        })
    }
}

fn render(data: &Labelled, captions: &[String], args: &ImageArgs, path: &Path) -> Result<()> {
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
        for (i, caption) in captions.iter().enumerate().take(count) {
            let at = (
                gap + (i % cols) * (cell_w + gap),
                gap + (i / cols) * (cell_h + gap),
            );
            sheet.draw(data, i, caption, at, scale)?;
        }
        vec![sheet]
    } else {
        captions
            .iter()
            .enumerate()
            .take(count)
            .map(|(i, caption)| {
                let mut frame = Canvas::new(cell_w, cell_h);
                frame.draw(data, i, caption, (0, 0), scale)?;
                Ok(frame)
            })
            .collect::<Result<_>>()?
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
