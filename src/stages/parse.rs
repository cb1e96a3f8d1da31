//! `mnist parse`: the IDX files under a directory to `train.csv` and `test.csv`, streamed; a
//! `classes.txt` beside them (the classes' names) goes along, and bounds the labels.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;

use crate::files::output::AtomicFile;
use crate::formats::classes::{self, Names, Place};
use crate::formats::idx::{IdxReader, IdxSet};
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
    let names = Names::of_data(&args.input, &files.train_labels)?;
    let count = names.as_ref().map(|n| n.names.len());
    let train_csv = args.output.join("train.csv");
    let test_csv = args.output.join("test.csv");
    // The files are renamed into place only once everything converted cleanly.
    let (train, train_rows) =
        convert(&files.train_images, &files.train_labels, &train_csv, &names)?;
    let (test, test_rows) = convert(&files.test_images, &files.test_labels, &test_csv, &names)?;
    train.commit()?;
    test.commit()?;
    if let Some(names) = &names {
        names.write(&args.output.join(classes::FILE))?;
    }
    let bytes = std::fs::metadata(&train_csv)?.len() + std::fs::metadata(&test_csv)?.len();
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "wrote {} ({train_rows} rows) and {} ({test_rows} rows): {:.1} MB in {seconds:.2}s ({:.0} MB/s){}",
        train_csv.display(),
        test_csv.display(),
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / seconds.max(1e-9),
        count.map_or(String::new(), |count| format!(
            ", and {} ({count} class names)",
            classes::FILE
        ))
    );
    Ok(())
}

/// Streams one images/labels pair into a CSV that is not yet committed; every label must be
/// one of the named classes, or of the most a data set may have.
fn convert(
    images: &Path,
    labels: &Path,
    csv: &Path,
    names: &Option<Names>,
) -> Result<(AtomicFile, usize)> {
    let mut images = IdxReader::images(images)?;
    let mut labels = IdxReader::labels(labels)?;
    images.check_labels_match(&labels)?;
    let (count, whose) = classes::limit(names.as_ref());
    let mut writer = RowWriter::new(AtomicFile::create(csv)?);
    let mut pixels = vec![0; images.record_len];
    let mut rows = 0;
    while images.next_record(&mut pixels)? {
        let Some(label) = labels.next_label()? else {
            break;
        };
        if usize::from(label) >= count {
            let path = labels.path();
            return Err(classes::beyond(
                label,
                path,
                Place::Record,
                rows,
                count,
                &whose,
            ));
        }
        rows += 1;
        writer.write(&pixels, Some((LabelColumn::First, label)))?;
    }
    images.finish()?;
    labels.finish()?;
    Ok((writer.into_inner(), rows))
}
