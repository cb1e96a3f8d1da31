//! The CSV formats the stages exchange: one image per line, no header, pixels 0..255 in
//! row-major order, and optionally a label, first (training data: `label,px1,...`) or last
//! (inference output: `px1,...,label`, and with `mnist infer --class-names` the class's name
//! after it, quoted).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use model::InputShape;

use crate::formats::classes::Label;
use crate::formats::data::{Images, Labelled};

/// Where a row keeps its label, if it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelColumn {
    First,
    Last,
    None,
}

#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: no rows")]
    Empty { path: PathBuf },
    #[error("{path}:{line}: {reason}")]
    Row {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// Reads a CSV whose rows carry a label in `labels` (not [`LabelColumn::None`]).
pub fn read_labelled(path: &Path, labels: LabelColumn) -> Result<Labelled, CsvError> {
    let bytes = read(path)?;
    let (images, labels) = parse(path, &bytes, labels, None)?;
    Ok(Labelled { images, labels })
}

/// Reads a CSV of unlabelled rows of exactly `shape.pixels()` pixels.
pub fn read_unlabelled(path: &Path, shape: InputShape) -> Result<Images, CsvError> {
    let bytes = read(path)?;
    let (mut images, _) = parse(path, &bytes, LabelColumn::None, Some(shape.pixels()))?;
    images.shape = shape;
    Ok(images)
}

/// Reads an inference CSV, `px1,...,label` or `px1,...,label,name`: the images and labels, and
/// each row's name when the rows have them.
pub fn read_inference(path: &Path) -> Result<(Labelled, Option<Vec<String>>), CsvError> {
    let bytes = read(path)?;
    let named = bytes
        .split(|&b| b == b'\n')
        .find(|line| !line.iter().all(u8::is_ascii_whitespace))
        .is_some_and(|line| line.trim_ascii_end().ends_with(b"\""));
    if !named {
        let (images, labels) = parse(path, &bytes, LabelColumn::Last, None)?;
        return Ok((Labelled { images, labels }, None));
    }
    // The numbers, each line's name cut off, for the parser; its line numbers stay the same.
    let mut numbers = Vec::with_capacity(bytes.len());
    let mut names = Vec::new();
    for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.iter().all(u8::is_ascii_whitespace) {
            let (rest, name) = split_name(line).ok_or_else(|| CsvError::Row {
                path: path.to_owned(),
                line: index + 1,
                reason: "expected pixels, a label and a class name".into(),
            })?;
            numbers.extend_from_slice(rest);
            names.push(name);
        }
        numbers.push(b'\n');
    }
    let (images, labels) = parse(path, &numbers, LabelColumn::Last, None)?;
    Ok((Labelled { images, labels }, Some(names)))
}

/// A row's numbers and its last field, a quoted name, unquoted.
fn split_name(line: &[u8]) -> Option<(&[u8], String)> {
    let text = std::str::from_utf8(line).ok()?.trim_end();
    // Numbers hold no quotes: the name starts at the first one.
    let at = text.find(",\"")?;
    let quoted = text[at + 1..].strip_prefix('"')?.strip_suffix('"')?;
    Some((&text.as_bytes()[..at], quoted.replace("\"\"", "\"")))
}

fn read(path: &Path) -> Result<Vec<u8>, CsvError> {
    std::fs::read(path).map_err(|source| CsvError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Parses `bytes`; every row must have the same number of pixels (`pixels`, or else the first
/// row's, which must then form a square image).
fn parse(
    path: &Path,
    bytes: &[u8],
    label_column: LabelColumn,
    pixels: Option<usize>,
) -> Result<(Images, Vec<Label>), CsvError> {
    let row_error = |line: usize, reason: String| CsvError::Row {
        path: path.to_owned(),
        line,
        reason,
    };
    let field_error = |line: usize, column: usize, expected: &str, found: &str| {
        row_error(
            line,
            format!("field {}: expected {expected}, found {found:?}", column + 1),
        )
    };
    let labelled = label_column != LabelColumn::None;
    let mut expected_fields = pixels.map(|p| p + usize::from(labelled));
    let mut data = Vec::new();
    let mut labels = Vec::new();
    let mut fields = Vec::with_capacity(1024);
    for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = index + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        fields.clear();
        for (column, field) in line.split(|&b| b == b',').enumerate() {
            let value = parse_number(field).ok_or_else(|| {
                let last = line.split(|&b| b == b',').count() - 1;
                let what = match label_column {
                    LabelColumn::First if column == 0 => "a label, an integer",
                    LabelColumn::Last if column == last => "a label, an integer",
                    _ => "an integer 0..255",
                };
                field_error(line_no, column, what, String::from_utf8_lossy(field).trim())
            })?;
            fields.push(value);
        }
        let expected = *expected_fields.get_or_insert(fields.len());
        if fields.len() != expected {
            let what = match label_column {
                LabelColumn::First => format!("a label and {} pixels", expected - 1),
                LabelColumn::Last => format!("{} pixels and a label", expected - 1),
                LabelColumn::None => format!("{expected} pixels"),
            };
            return Err(row_error(
                line_no,
                format!(
                    "expected {expected} fields ({what}), found {}",
                    fields.len()
                ),
            ));
        }
        let (label, row) = match label_column {
            LabelColumn::First => (fields.first().copied(), &fields[1..]),
            LabelColumn::Last => (fields.last().copied(), &fields[..fields.len() - 1]),
            LabelColumn::None => (None, &fields[..]),
        };
        let first_pixel = usize::from(label_column == LabelColumn::First);
        for (column, &pixel) in row.iter().enumerate() {
            let Ok(pixel) = u8::try_from(pixel) else {
                let found = pixel.to_string();
                return Err(field_error(
                    line_no,
                    first_pixel + column,
                    "an integer 0..255",
                    &found,
                ));
            };
            data.push(pixel);
        }
        if let Some(label) = label {
            labels.push(label);
        }
    }
    let Some(fields) = expected_fields.filter(|_| !data.is_empty() || !labels.is_empty()) else {
        return Err(CsvError::Empty {
            path: path.to_owned(),
        });
    };
    let pixel_count = fields - usize::from(labelled);
    if pixel_count == 0 {
        return Err(row_error(
            1,
            "expected a label and the pixels of an image, found only a label".into(),
        ));
    }
    let side = (pixel_count as f64).sqrt().round() as usize;
    if pixels.is_none() && side * side != pixel_count {
        return Err(row_error(
            1,
            format!("{pixel_count} pixels per row do not form a square image"),
        ));
    }
    let count = data.len() / pixel_count.max(1);
    let images = Images {
        shape: InputShape {
            height: side,
            width: side,
        },
        count,
        pixels: data,
    };
    Ok((images, labels))
}

/// Parses a decimal 0..=65535 (a pixel or a label), allowing surrounding spaces.
fn parse_number(field: &[u8]) -> Option<u16> {
    let field = field.trim_ascii();
    if field.is_empty() || field.len() > 5 {
        return None;
    }
    let mut value: u32 = 0;
    for &b in field {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u32::from(b - b'0');
    }
    u16::try_from(value).ok()
}

/// Writes rows through one reused line buffer.
pub struct RowWriter<W: Write> {
    out: W,
    line: Vec<u8>,
}

impl<W: Write> RowWriter<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            line: Vec::with_capacity(4 * 1024),
        }
    }

    /// Writes one row: `label,pixels...` for [`LabelColumn::First`], `pixels...,label` for
    /// [`LabelColumn::Last`].
    pub fn write(&mut self, pixels: &[u8], label: Option<(LabelColumn, Label)>) -> io::Result<()> {
        self.numbers(pixels, label);
        self.end_line()
    }

    /// Writes one inference row, `pixels...,label`, then `,"name"` when there is a name (a
    /// quote in it doubled), then `,probability` for each class in `probabilities`.
    pub fn write_inference(
        &mut self,
        pixels: &[u8],
        label: Label,
        name: Option<&str>,
        probabilities: &[f32],
    ) -> io::Result<()> {
        self.numbers(pixels, Some((LabelColumn::Last, label)));
        if let Some(name) = name {
            self.line.extend_from_slice(b",\"");
            self.line
                .extend_from_slice(name.replace('"', "\"\"").as_bytes());
            self.line.push(b'"');
        }
        for probability in probabilities {
            // The shortest decimal that reads back as the same f32.
            self.line
                .extend_from_slice(format!(",{probability}").as_bytes());
        }
        self.end_line()
    }

    /// Starts a line with the pixels and the label, each after a separator.
    fn numbers(&mut self, pixels: &[u8], label: Option<(LabelColumn, Label)>) {
        self.line.clear();
        if let Some((LabelColumn::First, label)) = label {
            self.push(label);
        }
        for &pixel in pixels {
            self.push(pixel.into());
        }
        if let Some((LabelColumn::Last, label)) = label {
            self.push(label);
        }
    }

    /// Ends the line and writes it, without the leading separator.
    fn end_line(&mut self) -> io::Result<()> {
        self.line.push(b'\n');
        self.out.write_all(&self.line[1..])
    }

    /// Appends `,value` in decimal.
    fn push(&mut self, mut value: u16) {
        self.line.push(b',');
        let mut digits = [0; 5];
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        self.line.extend_from_slice(&digits[at..]);
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}
