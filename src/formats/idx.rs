//! The IDX format of MNIST-style datasets: a big-endian magic number (`0x00000803` for images,
//! `0x00000801` for labels), the dimensions, then one unsigned byte per pixel or label. Labels
//! may also be big-endian shorts (`0x00000b01`) or ints (`0x00000c01`), for data sets of more
//! than 256 classes. Files may be gzipped; that is told by their first bytes, never their name.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::bufread::MultiGzDecoder;
use model::InputShape;

use crate::files::walk;
use crate::formats::classes::Label;
use crate::formats::data::{Images, Labelled};

const IMAGES_MAGIC: u32 = 0x0000_0803;
/// The magic numbers of label files, and the bytes of each label: unsigned bytes, shorts, ints.
const LABEL_TYPES: [(u32, usize); 3] = [(0x0000_0801, 1), (0x0000_0b01, 2), (0x0000_0c01, 4)];
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

#[derive(Debug, thiserror::Error)]
pub enum IdxError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: corrupt gzip data after {offset} decompressed bytes: {source}")]
    Gzip {
        path: PathBuf,
        offset: u64,
        source: io::Error,
    },
    #[error("{path}: wrong magic number 0x{found:08x} at byte 0, expected {expected}")]
    Magic {
        path: PathBuf,
        found: u32,
        expected: &'static str,
    },
    #[error(
        "{path}: record {record}: label {label} is not a class number (0..={})",
        Label::MAX
    )]
    Label {
        path: PathBuf,
        record: usize,
        label: i64,
    },
    #[error("{path}: truncated at byte {offset}: {expected}")]
    Truncated {
        path: PathBuf,
        offset: u64,
        expected: String,
    },
    #[error("{path}: unexpected data after the last record, at byte {offset}")]
    Trailing { path: PathBuf, offset: u64 },
    #[error("{path}: invalid header: {reason}")]
    Header { path: PathBuf, reason: String },
    #[error("{images} holds {image_count} images but {labels} holds {label_count} labels")]
    CountMismatch {
        images: PathBuf,
        image_count: usize,
        labels: PathBuf,
        label_count: usize,
    },
    #[error("{dir}: no {name} file found (raw or gzipped IDX, searched recursively)")]
    Missing { dir: PathBuf, name: &'static str },
    #[error("{dir}: two candidates for {name}: {first} and {second}")]
    Ambiguous {
        dir: PathBuf,
        name: &'static str,
        first: PathBuf,
        second: PathBuf,
    },
}

/// An IDX file opened for streaming: its header is read and checked, its records follow.
pub struct IdxReader {
    path: PathBuf,
    reader: Box<dyn Read>,
    gzipped: bool,
    offset: u64,
    /// Number of records (images or labels).
    pub count: usize,
    /// Bytes per record: rows x cols for images; 1, 2 or 4 for labels.
    pub record_len: usize,
    /// Image shape; `None` for label files.
    pub shape: Option<InputShape>,
    records_read: usize,
}

impl IdxReader {
    /// Opens an images file (`0x00000803`, n x rows x cols).
    pub fn images(path: &Path) -> Result<Self, IdxError> {
        Self::open(path, Contents::Images)
    }

    /// Opens a labels file (`0x00000801`, `0x00000b01` or `0x00000c01`, n).
    pub fn labels(path: &Path) -> Result<Self, IdxError> {
        Self::open(path, Contents::Labels)
    }

    /// Opens an images file held in memory; `path` names it in errors.
    pub fn images_from_bytes(path: &Path, bytes: &'static [u8]) -> Result<Self, IdxError> {
        Self::from_buffered(path, Box::new(bytes), Contents::Images)
    }

    /// Opens a labels file held in memory; `path` names it in errors.
    pub fn labels_from_bytes(path: &Path, bytes: &'static [u8]) -> Result<Self, IdxError> {
        Self::from_buffered(path, Box::new(bytes), Contents::Labels)
    }

    fn open(path: &Path, expected: Contents) -> Result<Self, IdxError> {
        let file = File::open(path).map_err(|source| IdxError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_buffered(
            path,
            Box::new(BufReader::with_capacity(1 << 16, file)),
            expected,
        )
    }

    fn from_buffered(
        path: &Path,
        mut buffered: Box<dyn BufRead>,
        expected: Contents,
    ) -> Result<Self, IdxError> {
        let gzipped = buffered
            .fill_buf()
            .map_err(|source| IdxError::Io {
                path: path.to_owned(),
                source,
            })?
            .starts_with(&GZIP_MAGIC);
        let reader: Box<dyn Read> = if gzipped {
            Box::new(MultiGzDecoder::new(buffered))
        } else {
            Box::new(buffered)
        };
        let mut idx = Self {
            path: path.to_owned(),
            reader,
            gzipped,
            offset: 0,
            count: 0,
            record_len: 0,
            shape: None,
            records_read: 0,
        };
        let kind = match expected {
            Contents::Images => "images",
            Contents::Labels => "labels",
        };
        let magic = idx.read_u32(&format!("the 4-byte magic number of an IDX {kind} file"))?;
        let wrong_magic = |expected| IdxError::Magic {
            path: path.to_owned(),
            found: magic,
            expected,
        };
        idx.count = match expected {
            Contents::Images if magic != IMAGES_MAGIC => {
                return Err(wrong_magic("0x00000803 (images)"));
            }
            Contents::Labels => {
                idx.record_len = LABEL_TYPES
                    .iter()
                    .find(|(label_magic, _)| *label_magic == magic)
                    .map(|&(_, bytes)| bytes)
                    .ok_or_else(|| {
                        wrong_magic(
                            "0x00000801 (labels; 0x00000b01 or 0x00000c01 for shorts or ints)",
                        )
                    })?;
                idx.read_u32("the record count")? as usize
            }
            Contents::Images => {
                let count = idx.read_u32("the record count")? as usize;
                let height = idx.read_u32("the row count")? as usize;
                let width = idx.read_u32("the column count")? as usize;
                if height == 0 || width == 0 {
                    return Err(IdxError::Header {
                        path: path.to_owned(),
                        reason: format!("images of {height}x{width} pixels"),
                    });
                }
                idx.shape = Some(InputShape { height, width });
                idx.record_len = height * width;
                count
            }
        };
        Ok(idx)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks that `labels` holds one label for each image of this file.
    pub fn check_labels_match(&self, labels: &IdxReader) -> Result<(), IdxError> {
        if self.count == labels.count {
            return Ok(());
        }
        Err(IdxError::CountMismatch {
            images: self.path.clone(),
            image_count: self.count,
            labels: labels.path.clone(),
            label_count: labels.count,
        })
    }

    fn read_u32(&mut self, what: &str) -> Result<u32, IdxError> {
        let mut bytes = [0; 4];
        self.read_exact(&mut bytes, what)?;
        Ok(u32::from_be_bytes(bytes))
    }

    fn read_exact(&mut self, buf: &mut [u8], what: &str) -> Result<(), IdxError> {
        match read_full(&mut self.reader, buf) {
            Ok(n) if n == buf.len() => {
                self.offset += n as u64;
                Ok(())
            }
            Ok(n) => Err(IdxError::Truncated {
                path: self.path.clone(),
                offset: self.offset + n as u64,
                expected: format!("expected {what}"),
            }),
            Err(source) => Err(self.stream_error(source)),
        }
    }

    fn stream_error(&self, source: io::Error) -> IdxError {
        if self.gzipped && source.kind() != io::ErrorKind::PermissionDenied {
            IdxError::Gzip {
                path: self.path.clone(),
                offset: self.offset,
                source,
            }
        } else {
            IdxError::Io {
                path: self.path.clone(),
                source,
            }
        }
    }

    /// Reads the next record into `buf` (`record_len` bytes); `false` after the last one.
    pub fn next_record(&mut self, buf: &mut [u8]) -> Result<bool, IdxError> {
        if self.records_read == self.count {
            return Ok(false);
        }
        let what = format!(
            "record {} of {} ({} bytes each)",
            self.records_read + 1,
            self.count,
            self.record_len
        );
        self.read_exact(buf, &what)?;
        self.records_read += 1;
        Ok(true)
    }

    /// Reads every remaining record into one buffer, then checks nothing follows.
    pub fn read_all(mut self) -> Result<Vec<u8>, IdxError> {
        let mut data = vec![0; self.count * self.record_len];
        let what = format!(
            "{} records of {} bytes",
            self.count - self.records_read,
            self.record_len
        );
        self.read_exact(&mut data, &what)?;
        self.records_read = self.count;
        self.finish()?;
        Ok(data)
    }

    /// Reads every remaining label, then checks nothing follows.
    pub fn read_labels(self) -> Result<Vec<Label>, IdxError> {
        let (path, width, first) = (self.path.clone(), self.record_len, self.records_read);
        let bytes = self.read_all()?;
        bytes
            .chunks_exact(width)
            .enumerate()
            .map(|(i, record)| decode_label(&path, first + i + 1, record))
            .collect()
    }

    /// Reads the next label; `None` after the last one.
    pub fn next_label(&mut self) -> Result<Option<Label>, IdxError> {
        let mut record = [0; 4];
        let width = self.record_len;
        if !self.next_record(&mut record[..width])? {
            return Ok(None);
        }
        decode_label(&self.path, self.records_read, &record[..width]).map(Some)
    }

    /// Checks that the file ends right after the last record.
    pub fn finish(mut self) -> Result<(), IdxError> {
        let mut byte = [0; 1];
        match read_full(&mut self.reader, &mut byte) {
            Ok(0) => Ok(()),
            Ok(_) => Err(IdxError::Trailing {
                path: self.path,
                offset: self.offset,
            }),
            Err(source) => Err(self.stream_error(source)),
        }
    }
}

/// What an IDX file holds.
#[derive(Debug, Clone, Copy)]
enum Contents {
    Images,
    Labels,
}

/// Label `record` (from 1) of `path`: a big-endian unsigned byte, short or int.
fn decode_label(path: &Path, record: usize, bytes: &[u8]) -> Result<Label, IdxError> {
    let label = match *bytes {
        [byte] => i64::from(byte),
        [a, b] => i64::from(i16::from_be_bytes([a, b])),
        [a, b, c, d] => i64::from(i32::from_be_bytes([a, b, c, d])),
        _ => unreachable!("label records are 1, 2 or 4 bytes"),
    };
    Label::try_from(label).map_err(|_| IdxError::Label {
        path: path.to_owned(),
        record,
        label,
    })
}

/// Reads the images file `images` and the labels file `labels`.
pub fn read_files(images: &Path, labels: &Path) -> Result<Labelled, IdxError> {
    read_labelled(IdxReader::images(images)?, IdxReader::labels(labels)?)
}

/// Reads an images file and its labels file, checking they describe the same examples.
pub fn read_labelled(images: IdxReader, labels: IdxReader) -> Result<Labelled, IdxError> {
    images.check_labels_match(&labels)?;
    let shape = images.shape.unwrap_or(InputShape::MNIST);
    let count = images.count;
    let pixels = images.read_all()?;
    let labels = labels.read_labels()?;
    Ok(Labelled {
        images: Images {
            shape,
            count,
            pixels,
        },
        labels,
    })
}

/// Like `read_exact`, but reports how much was read before the end instead of failing.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

/// The four files of an MNIST-style dataset.
#[derive(Debug, Clone)]
pub struct IdxSet {
    pub train_images: PathBuf,
    pub train_labels: PathBuf,
    pub test_images: PathBuf,
    pub test_labels: PathBuf,
}

const NAMES: [&str; 4] = ["train-images", "train-labels", "t10k-images", "t10k-labels"];

impl IdxSet {
    /// Finds the four files anywhere under `dir`, by their conventional names
    /// (`train-images-idx3-ubyte`, `t10k-labels.idx1-ubyte.gz`, ...).
    pub fn find(dir: &Path) -> Result<Self, IdxError> {
        let mut found: [Option<PathBuf>; 4] = Default::default();
        let files = walk::files_under(dir).map_err(|err| IdxError::Io {
            path: err.path,
            source: err.source,
        })?;
        for path in files {
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_lowercase();
            let Some(slot) = NAMES.iter().position(|prefix| is_idx_name(&name, prefix)) else {
                continue;
            };
            if let Some(first) = &found[slot] {
                return Err(IdxError::Ambiguous {
                    dir: dir.to_owned(),
                    name: NAMES[slot],
                    first: first.clone(),
                    second: path,
                });
            }
            found[slot] = Some(path);
        }
        let take = |slot: usize| {
            found[slot].clone().ok_or_else(|| IdxError::Missing {
                dir: dir.to_owned(),
                name: NAMES[slot],
            })
        };
        Ok(Self {
            train_images: take(0)?,
            train_labels: take(1)?,
            test_images: take(2)?,
            test_labels: take(3)?,
        })
    }
}

/// `train-images-idx3-ubyte`, `train-images.idx3-ubyte.gz` and the like.
fn is_idx_name(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|rest| rest.trim_start_matches(['-', '.', '_']).starts_with("idx"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conventional_names_are_recognised() {
        for name in [
            "train-images-idx3-ubyte",
            "train-images-idx3-ubyte.gz",
            "train-images.idx3-ubyte",
        ] {
            assert!(is_idx_name(name, "train-images"), "{name}");
        }
        for name in [
            "train-images.csv",
            "train-labels-idx1-ubyte",
            "my-train-images-idx3",
        ] {
            assert!(!is_idx_name(name, "train-images"), "{name}");
        }
    }

    #[test]
    fn headers_are_read_from_raw_bytes() {
        let mut bytes = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3];
        bytes.extend(0..12);
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        let idx = IdxReader::images_from_bytes(Path::new("x"), bytes).unwrap();
        assert_eq!((idx.count, idx.record_len), (2, 6));
        assert_eq!(idx.read_all().unwrap(), (0..12).collect::<Vec<u8>>());
    }

    fn labels(bytes: Vec<u8>) -> Result<Vec<Label>, IdxError> {
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        IdxReader::labels_from_bytes(Path::new("labels"), bytes)?.read_labels()
    }

    #[test]
    fn labels_are_bytes_shorts_or_ints() {
        let bytes = labels(vec![0, 0, 8, 1, 0, 0, 0, 2, 7, 255]);
        assert_eq!(bytes.unwrap(), [7, 255]);
        let shorts = labels(vec![0, 0, 0x0b, 1, 0, 0, 0, 2, 0, 7, 3, 0xe7]);
        assert_eq!(shorts.unwrap(), [7, 999]);
        let ints = labels(vec![0, 0, 0x0c, 1, 0, 0, 0, 1, 0, 0, 1, 0]);
        assert_eq!(ints.unwrap(), [256]);
        let negative = labels(vec![0, 0, 0x0b, 1, 0, 0, 0, 2, 0, 1, 0xff, 0xfe]);
        assert_eq!(
            negative.unwrap_err().to_string(),
            "labels: record 2: label -2 is not a class number (0..=65535)"
        );
        let floats = labels(vec![0, 0, 0x0d, 1, 0, 0, 0, 0]);
        assert_eq!(
            floats.unwrap_err().to_string(),
            "labels: wrong magic number 0x00000d01 at byte 0, expected 0x00000801 (labels; \
             0x00000b01 or 0x00000c01 for shorts or ints)"
        );
    }
}
