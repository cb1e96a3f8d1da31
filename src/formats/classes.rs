//! A data set's classes: how many (from its labels, or from the names given for them) and,
//! where a `classes.txt` beside the data or the config's `[data] classes` names them, their
//! names, which travel in the model card to every table, chart and picture.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::files::output;

/// The file beside a data set's files that names its classes, one per line, in label order.
pub const FILE: &str = "classes.txt";
/// The most classes a data set may have.
pub const MAX: usize = 1000;

/// A class number, 0..[`MAX`]: wider than a byte, as IDX label files may hold bytes, shorts or
/// ints.
pub type Label = u16;

/// Class names and where they came from (a file, a config key), for errors.
#[derive(Debug, Clone, PartialEq)]
pub struct Names {
    pub names: Vec<String>,
    pub source: String,
}

impl Names {
    /// Checks names from `source`: none empty, none twice, at most [`MAX`].
    pub fn new(names: Vec<String>, source: impl Into<String>) -> Result<Self> {
        let source = source.into();
        if names.is_empty() {
            bail!("{source}: no class names");
        }
        if names.len() > MAX {
            bail!("{source}: {} classes; at most {MAX}", names.len());
        }
        for (i, name) in names.iter().enumerate() {
            if name.trim().is_empty() {
                bail!("{source}: class {i} has an empty name");
            }
            if name.contains(['\n', '\r']) {
                bail!("{source}: class {i}'s name {name:?} spans lines");
            }
            if let Some(first) = names[..i].iter().position(|other| other == name) {
                bail!("{source}: classes {first} and {i} are both named {name:?}");
            }
        }
        Ok(Self { names, source })
    }

    /// The names of a data set in `dir`: from the `classes.txt` [`file_of`] finds, if any.
    pub fn of_data(dir: &Path, data_file: &Path) -> Result<Option<Self>> {
        file_of(dir, data_file)
            .map(|path| Self::read(&path))
            .transpose()
    }

    /// Writes the names to `path`, one a line, as [`Names::read`] reads them.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text: String = self.names.iter().map(|name| format!("{name}\n")).collect();
        output::write_file(path, text.as_bytes())
    }

    /// The names in the file `path`, one a line (a byte-order mark and blank lines at the end,
    /// as editors leave them, are not names).
    pub fn read(path: &Path) -> Result<Self> {
        let text =
            std::fs::read(path).map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
        let text = String::from_utf8(text)
            .map_err(|err| anyhow::anyhow!("{}: not UTF-8 text: {err}", path.display()))?;
        let mut names: Vec<String> = text
            .trim_start_matches('\u{feff}')
            .lines()
            .map(|line| line.trim_end_matches('\r').to_owned())
            .collect();
        while names.last().is_some_and(|name| name.trim().is_empty()) {
            names.pop();
        }
        Self::new(names, path.display().to_string())
    }
}

/// The `classes.txt` of the data set in `dir`: in `dir` itself, else beside `data_file` (one of
/// its files, found under `dir`).
pub fn file_of(dir: &Path, data_file: &Path) -> Option<PathBuf> {
    let beside = data_file.parent().unwrap_or(dir);
    [dir, beside]
        .into_iter()
        .map(|dir| dir.join(FILE))
        .find(|path| path.is_file())
}

/// Class `class` as people read it: `6 Shirt`, or `6` without a name.
pub fn labelled(class: usize, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("{class} {name}"),
        None => class.to_string(),
    }
}

/// The classes of a data set or a model: their number, and their names if they have them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Classes {
    pub count: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
}

impl Classes {
    /// Classes numbered 0..`count`, without names.
    pub fn numbered(count: usize) -> Self {
        Self { count, names: None }
    }

    /// The name of class `class`: its name, or its number.
    pub fn name(&self, class: usize) -> String {
        self.names
            .as_ref()
            .and_then(|names| names.get(class).cloned())
            .unwrap_or_else(|| class.to_string())
    }

    /// Every class's name (or number), in label order.
    pub fn all_names(&self) -> Vec<String> {
        (0..self.count).map(|class| self.name(class)).collect()
    }
}

/// The classes of labelled data: as many as `names` give (checked against every label), else
/// one more than the largest label (at most [`MAX`]). `labels` are each split's labels and the
/// file they came from, with whether its records are CSV lines (else IDX records), for errors.
pub fn of_labels(labels: &[(&[Label], &Path, Place)], names: Option<Names>) -> Result<Classes> {
    let (most, whose) = limit(names.as_ref());
    let classes = match names {
        Some(names) => Classes {
            count: names.names.len(),
            names: Some(names.names),
        },
        None => {
            let largest = labels
                .iter()
                .filter_map(|(labels, ..)| labels.iter().max())
                .max()
                .map_or(0, |&label| usize::from(label) + 1);
            if largest == 0 {
                bail!("no labelled examples");
            }
            Classes::numbered(largest.min(most))
        }
    };
    for (labels, path, place) in labels {
        check_labels(labels, path, *place, &classes, &whose)?;
    }
    Ok(classes)
}

/// How many classes labels may name, and whose classes those are (for errors): the classes
/// `names` names, else the most a data set may have.
pub fn limit(names: Option<&Names>) -> (usize, String) {
    match names {
        Some(names) => (names.names.len(), format!("named in {}", names.source)),
        None => (MAX, "a data set may have".to_owned()),
    }
}

/// Checks that every label of `labels`, read from `path`, is one of `classes` (`whose`: the
/// model's, those named in a file), naming the first that is not.
pub fn check_labels(
    labels: &[Label],
    path: &Path,
    place: Place,
    classes: &Classes,
    whose: &str,
) -> Result<()> {
    match labels.iter().position(|&l| usize::from(l) >= classes.count) {
        Some(index) => Err(beyond(
            labels[index],
            path,
            place,
            index,
            classes.count,
            whose,
        )),
        None => Ok(()),
    }
}

/// The error for `label`, example `index` of `path`, beyond the `count` classes `whose`.
pub fn beyond(
    label: Label,
    path: &Path,
    place: Place,
    index: usize,
    count: usize,
    whose: &str,
) -> anyhow::Error {
    anyhow::anyhow!(
        "{}: {} {}: label {label} is beyond the {count} classes {whose}",
        path.display(),
        place.word(),
        place.number(index),
    )
}

/// Checks data to evaluate a model on against the model's classes, if the data names its
/// classes (`names`): as many, else an error; named alike, else a warning, and the model's
/// names are used (as training uses the config's over a `classes.txt`).
pub fn check_same(names: Option<&Names>, model: &Classes) -> Result<()> {
    let Some(names) = names else {
        return Ok(());
    };
    if names.names.len() != model.count {
        bail!(
            "{} names {} classes; the model has {}",
            names.source,
            names.names.len(),
            model.count
        );
    }
    match &model.names {
        None => eprintln!(
            "warning: {} names the classes, but the model was trained without names: classes are shown by number",
            names.source
        ),
        Some(model_names) => {
            warn_if_different(names, model_names, "the model", "the model's");
        }
    }
    Ok(())
}

/// Warns where `names` and `used` (named by `whose`) differ, naming the first difference.
fn warn_if_different(names: &Names, used: &[String], what: &str, whose: &str) {
    if let Some(class) = names.names.iter().zip(used).position(|(a, b)| a != b) {
        eprintln!(
            "warning: {} and {what} name class {class} differently ({:?} and {:?}); {whose} names are used",
            names.source, names.names[class], used[class]
        );
    }
}

/// How a file counts its examples, for errors: CSV lines or IDX records, from 1.
#[derive(Debug, Clone, Copy)]
pub enum Place {
    Line,
    Record,
}

impl Place {
    fn word(self) -> &'static str {
        match self {
            Self::Line => "line",
            Self::Record => "record",
        }
    }

    fn number(self, index: usize) -> usize {
        index + 1
    }
}

/// The names of `config_names` (the config's `[data] classes`) and of `file_names` (a
/// `classes.txt`), which must agree in number; the config's win.
pub fn chosen(config_names: Option<Names>, file_names: Option<Names>) -> Result<Option<Names>> {
    match (config_names, file_names) {
        (Some(config), Some(file)) if config.names.len() != file.names.len() => bail!(
            "{} names {} classes, but {} names {}",
            file.source,
            file.names.len(),
            config.source,
            config.names.len()
        ),
        (Some(config), file) => {
            if let Some(file) = file {
                warn_if_different(&file, &config.names, &config.source, "the config's");
            }
            Ok(Some(config))
        }
        (None, file) => Ok(file),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Result<Names> {
        Names::new(list.iter().map(|s| s.to_string()).collect(), "classes.txt")
    }

    #[test]
    fn names_are_checked() {
        assert!(names(&["a", "b"]).is_ok());
        let err = |list: &[&str]| names(list).unwrap_err().to_string();
        assert_eq!(err(&[]), "classes.txt: no class names");
        assert_eq!(err(&["a", " "]), "classes.txt: class 1 has an empty name");
        assert_eq!(
            err(&["T-shirt", "Bag", "T-shirt"]),
            "classes.txt: classes 0 and 2 are both named \"T-shirt\""
        );
        let many: Vec<String> = (0..1001).map(|i| format!("c{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(err(&many), "classes.txt: 1001 classes; at most 1000");
    }

    #[test]
    fn a_file_names_a_class_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        std::fs::write(&path, "\u{feff}T-shirt/top\r\nTrouser\r\n\n\n").unwrap();
        assert_eq!(
            Names::read(&path).unwrap().names,
            ["T-shirt/top", "Trouser"]
        );
        std::fs::write(&path, "Bag\n\nCoat\n").unwrap();
        assert_eq!(
            Names::read(&path).unwrap_err().to_string(),
            format!("{}: class 1 has an empty name", path.display())
        );
        std::fs::write(&path, b"Bag\n\xff\n").unwrap();
        let err = Names::read(&path).unwrap_err().to_string();
        assert!(err.contains("not UTF-8 text"), "{err}");
    }

    #[test]
    fn data_must_have_as_many_classes_as_the_model() {
        let model = Classes {
            count: 2,
            names: Some(vec!["cat".into(), "dog".into()]),
        };
        for data in [["cat", "dog"], ["dog", "cat"]] {
            assert!(check_same(Some(&names(&data).unwrap()), &model).is_ok());
        }
        assert!(check_same(None, &model).is_ok());
        let three = names(&["cat", "dog", "eel"]).unwrap();
        assert_eq!(
            check_same(Some(&three), &model).unwrap_err().to_string(),
            "classes.txt names 3 classes; the model has 2"
        );
        assert!(check_same(Some(&three), &Classes::numbered(2)).is_err());
    }

    #[test]
    fn classes_come_from_the_labels_or_the_names() {
        let path = Path::new("train.csv");
        let numbered = of_labels(&[(&[0, 3, 1], path, Place::Line)], None).unwrap();
        assert_eq!(numbered, Classes::numbered(4));
        let named = of_labels(
            &[(&[0, 1], path, Place::Line)],
            Some(names(&["x", "y", "z"]).unwrap()),
        );
        assert_eq!(named.unwrap().all_names(), ["x", "y", "z"]);
        let beyond = of_labels(
            &[(&[0, 2], path, Place::Line)],
            Some(names(&["x", "y"]).unwrap()),
        );
        assert_eq!(
            beyond.unwrap_err().to_string(),
            "train.csv: line 2: label 2 is beyond the 2 classes named in classes.txt"
        );
        let too_many = of_labels(&[(&[5, 1000, 3], path, Place::Line)], None);
        assert_eq!(
            too_many.unwrap_err().to_string(),
            "train.csv: line 2: label 1000 is beyond the 1000 classes a data set may have"
        );
        assert_eq!(
            of_labels(&[(&[999], path, Place::Line)], None).unwrap(),
            Classes::numbered(1000)
        );
    }
}
