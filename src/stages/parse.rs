//! `mnist parse`: the IDX files under a directory to `train.csv` and `test.csv`, streamed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;

use crate::files::output::AtomicFile;
use crate::formats::idx::{self, IdxReader, IdxSet};
use crate::formats::pixels_csv::{LabelColumn, RowWriter};

#[derive(Debug, clap::Args)]
pub struct ParseArgs {
    /// Directory holding the four IDX files, at any depth.
    #[arg(long)]
    pub input: PathBuf,
    /// Directory to write train.csv and test.csv to.
    #[arg(long)]
    pub output: PathBuf,
}

pub fn run(args: &ParseArgs) -> Result<()> {
    let started = Instant::now();
    let files = IdxSet::find(&args.input)?;
    let train_csv = args.output.join("train.csv");
    let test_csv = args.output.join("test.csv");
    // Both files are renamed into place only once both converted cleanly.
    let (train, train_rows) = convert(&files.train_images, &files.train_labels, &train_csv)?;
    let (test, test_rows) = convert(&files.test_images, &files.test_labels, &test_csv)?;
    train.commit()?;
    test.commit()?;
    let bytes = std::fs::metadata(&train_csv)?.len() + std::fs::metadata(&test_csv)?.len();
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "wrote {} ({train_rows} rows) and {} ({test_rows} rows): {:.1} MB in {seconds:.2}s ({:.0} MB/s)",
        train_csv.display(),
        test_csv.display(),
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / seconds.max(1e-9)
    );
    Ok(())
}

/// Streams one images/labels pair into a CSV that is not yet committed.
fn convert(images: &Path, labels: &Path, csv: &Path) -> Result<(AtomicFile, usize)> {
    let mut images = IdxReader::images(images)?;
    let mut labels = IdxReader::labels(labels)?;
    images.check_labels_match(&labels)?;
    let mut writer = RowWriter::new(AtomicFile::create(csv)?);
    let mut pixels = vec![0; images.record_len];
    let mut label = [0];
    let mut rows = 0;
    while images.next_record(&mut pixels)? {
        labels.next_record(&mut label)?;
        rows += 1;
        idx::check_label(labels.path(), rows, label[0])?;
        writer.write(&pixels, Some((LabelColumn::First, label[0])))?;
    }
    images.finish()?;
    labels.finish()?;
    Ok((writer.into_inner(), rows))
}
