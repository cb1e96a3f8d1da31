//! Pictures of a model for people: the confusion matrix as a labelled heatmap, and the training
//! curves (loss and accuracy per epoch, train and validation). Drawn with plotters into an RGB
//! buffer, written as PNG (atomically, as every output).

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::files::output;
use crate::formats::curves::EpochMetrics;
use crate::report::text;

/// The built-in font's name for plotters, which draws text with the fonts it is given.
const FAMILY: &str = "sans-serif";

const TRAIN_COLOR: RGBColor = RGBColor(31, 119, 180);
const VALIDATION_COLOR: RGBColor = RGBColor(255, 127, 14);
/// The colour of a confusion cell holding its whole row: every example of the class.
const FULL_CELL: RGBColor = RGBColor(8, 48, 107);
/// The most pixels a side of the confusion matrix's cells take together.
const MAX_PLOT: u32 = 2000;

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// `confusion[actual][predicted]` as a heatmap: each cell shaded by its share of the actual
/// class, with its count where it fits; `title` above. Many classes make the cells smaller, down
/// to a pixel, so that the picture stays at most [`MAX_PLOT`] pixels a side; then only every
/// few classes are named.
pub fn confusion(
    confusion: &[Vec<usize>],
    names: &[String],
    title: &str,
    path: &Path,
) -> Result<()> {
    register_font()?;
    let classes = confusion.len().max(1) as u32;
    let mut cell = (640 / classes).clamp(20, 64);
    if cell * classes > MAX_PLOT {
        cell = (MAX_PLOT / classes).max(1);
    }
    let label_size = (cell / 2).clamp(11, 15);
    let label_font = (FAMILY, label_size).into_font();
    let px = label_size as f32;
    let mut widest_name: f32 = 0.0;
    for name in names {
        widest_name = widest_name.max(text::width(name, px)?);
    }
    // Every `rows_every`-th row is named, so that the names stand a line apart; every
    // `columns_every`-th column, so that a name has up to 60 pixels.
    let rows_every = (label_size + 4).div_ceil(cell);
    let columns_every = rows_every.max((widest_name.min(60.0).ceil() as u32 + 4).div_ceil(cell));
    let fitted = |room: f32| -> Result<Vec<String>> {
        names.iter().map(|name| text::fit(name, px, room)).collect()
    };
    let rows = fitted(160.0)?;
    let columns = fitted((cell * columns_every) as f32 - 4.0)?;
    let (rows_every, columns_every) = (rows_every as usize, columns_every as usize);
    let mut widest: f32 = 0.0;
    for label in rows.iter().step_by(rows_every) {
        widest = widest.max(text::width(label, px)?);
    }
    let label_area = widest.ceil() as u32 + 24;
    let plot = cell * classes;
    let size = (plot + label_area + 60, plot + 138);
    let n = classes as usize;
    let png = render(size, |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FAMILY, 20))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(label_area)
            .build_cartesian_2d(0.0..n as f64, n as f64..0.0)?;
        let mut mesh = chart.configure_mesh();
        if rows_every > 1 {
            // A tick for each of hundreds of classes would make the axes solid bars.
            mesh.set_tick_mark_size(LabelAreaPosition::Left, 0)
                .set_tick_mark_size(LabelAreaPosition::Bottom, 0);
        }
        mesh.disable_mesh()
            .x_desc("predicted")
            .y_desc("true")
            .x_labels(n * 2 + 1)
            .y_labels(n * 2 + 1)
            .x_label_formatter(&|at| class_label(*at, &columns, columns_every))
            .y_label_formatter(&|at| class_label(*at, &rows, rows_every))
            .label_style(label_font.clone())
            .axis_desc_style((FAMILY, 16))
            .draw()?;
        let cells = confusion.iter().enumerate().flat_map(|(actual, row)| {
            let total = row.iter().sum::<usize>().max(1) as f64;
            row.iter()
                .enumerate()
                .map(move |(predicted, &count)| (actual, predicted, count, count as f64 / total))
        });
        chart.draw_series(cells.clone().map(|(actual, predicted, _, share)| {
            let (x, y) = (predicted as f64, actual as f64);
            Rectangle::new([(x, y), (x + 1.0, y + 1.0)], shade(share).filled())
        }))?;
        if cell >= 20 {
            let count_size = f64::from(cell / 3).clamp(8.0, 14.0);
            chart.draw_series(cells.map(|(actual, predicted, count, share)| {
                let ink = if share > 0.5 { &WHITE } else { &BLACK };
                let style = TextStyle::from((FAMILY, count_size).into_font())
                    .color(ink)
                    .pos(text_center());
                let at = (predicted as f64 + 0.5, actual as f64 + 0.5);
                Text::new(count.to_string(), at, style)
            }))?;
        }
        Ok(())
    })?;
    output::write_file(path, &png)
}

/// Loss (left) and accuracy (right) per epoch, train and validation; `title` above.
pub fn curves(epochs: &[EpochMetrics], title: &str, path: &Path) -> Result<()> {
    let png = render((1000, 420), |root| {
        let root = root.titled(title, (FAMILY, 20))?;
        let (left, right) = root.split_horizontally(500);
        panel(
            &left,
            "loss",
            epochs,
            |m| Some(m.train_loss),
            |m| m.validation_loss,
        )?;
        panel(
            &right,
            "accuracy",
            epochs,
            |m| Some(m.train_accuracy),
            |m| m.validation_accuracy,
        )
    })?;
    output::write_file(path, &png)
}

/// What drawing may fail with (plotters' errors, boxed).
type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// One figure per epoch, train and (where held out) validation, as lines with points.
fn panel(
    area: &Area,
    name: &str,
    epochs: &[EpochMetrics],
    train: impl Fn(&EpochMetrics) -> Option<f64>,
    validation: impl Fn(&EpochMetrics) -> Option<f64>,
) -> DrawResult {
    let series = |figure: &dyn Fn(&EpochMetrics) -> Option<f64>| -> Vec<(f64, f64)> {
        epochs
            .iter()
            .filter_map(|m| {
                figure(m)
                    .filter(|v| v.is_finite())
                    .map(|v| (m.epoch as f64, v))
            })
            .collect()
    };
    let (train, validation) = (series(&train), series(&validation));
    let values = train.iter().chain(&validation).map(|&(_, v)| v);
    let (low, high) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let (low, high) = if low.is_finite() {
        (low, high)
    } else {
        (0.0, 1.0)
    };
    let pad = ((high - low) * 0.1).max(1e-3);
    let last = epochs.last().map_or(1, |m| m.epoch) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(name, (FAMILY, 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.5..last + 0.5, (low - pad)..(high + pad))?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_labels(epochs.len().min(10) + 1)
        .x_label_formatter(&|x| {
            if x.fract() == 0.0 {
                format!("{x:.0}")
            } else {
                String::new()
            }
        })
        .label_style((FAMILY, 13))
        .axis_desc_style((FAMILY, 14))
        .draw()?;
    for (points, label, color) in [
        (train, "train", TRAIN_COLOR),
        (validation, "validation", VALIDATION_COLOR),
    ] {
        if points.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(PointSeries::of_element(
            points,
            4,
            color.filled(),
            &|c, s, st| Circle::new(c, s, st),
        ))?;
    }
    chart
        .configure_series_labels()
        .label_font((FAMILY, 13))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// A class's label at the middle of its cell, nothing elsewhere.
fn class_label(at: f64, labels: &[String], every: usize) -> String {
    let cell = at - 0.5;
    if cell.fract() == 0.0
        && (0.0..labels.len() as f64).contains(&cell)
        && (cell as usize).is_multiple_of(every)
    {
        labels[cell as usize].clone()
    } else {
        String::new()
    }
}

/// White for no share, [`FULL_CELL`] for all of it.
fn shade(share: f64) -> RGBColor {
    let mix = |to: u8| (255.0 - (255.0 - f64::from(to)) * share.clamp(0.0, 1.0)).round() as u8;
    RGBColor(mix(FULL_CELL.0), mix(FULL_CELL.1), mix(FULL_CELL.2))
}

fn text_center() -> plotters::style::text_anchor::Pos {
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    Pos::new(HPos::Center, VPos::Center)
}

/// Draws on a white `size` canvas and encodes it as PNG.
fn render(size: (u32, u32), draw: impl FnOnce(Area) -> DrawResult) -> Result<Vec<u8>> {
    register_font()?;
    let (width, height) = size;
    let mut rgb = vec![255; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
        draw(root.clone()).map_err(|err| anyhow::anyhow!("drawing: {err}"))?;
        root.present()
            .map_err(|err| anyhow::anyhow!("drawing: {err}"))?;
    }
    let mut png = Vec::new();
    let mut encoder = png::Encoder::new(&mut png, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().context("encoding PNG")?;
    writer.write_image_data(&rgb).context("encoding PNG")?;
    writer.finish().context("encoding PNG")?;
    Ok(png)
}

fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FAMILY, FontStyle::Normal, text::FONT).is_ok()
    });
    anyhow::ensure!(ok, "the built-in font cannot be read");
    Ok(())
}
