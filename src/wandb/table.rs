//! Tables, images in tables and the confusion-matrix chart, in the shapes W&B's UI reads and the
//! SDK 0.31 writes: a logged table is a `run_table` artifact (`<key>.table.json` with typed
//! columns, and each image as `media/images/<hash>.png`), a run file
//! `media/table/<key>_<step>_<hash>.table.json`, and a `table-file` value in the history row
//! and the summary that points at both.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::artifact::{Artifact, Entry, artifact_name as safe};

/// One cell of a table.
#[derive(Debug, Clone)]
pub enum Cell {
    Int(i64),
    Number(f64),
    Text(String),
    Image(Png),
}

/// A grayscale PNG, encoded.
#[derive(Debug, Clone)]
pub struct Png {
    pub bytes: Vec<u8>,
    pub width: usize,
    pub height: usize,
    /// Shown under the image, as the SDK's `wandb.Image(caption=...)`.
    pub caption: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

/// What logging a table under a key makes.
pub struct LoggedTable {
    /// The `table-file` value for the history row and the summary.
    pub value: Value,
    pub artifact: Artifact,
    /// The run file's name and bytes.
    pub run_file: (String, Vec<u8>),
}

impl Table {
    pub fn new(columns: &[&str]) -> Self {
        Self {
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// The table as logged under `key` at history `step` of run `run_id`.
    pub fn log(&self, key: &str, run_id: &str, step: u64) -> LoggedTable {
        let mut artifact = Artifact::new(format!("run-{run_id}-{}", safe(key)), "run_table");
        let mut data = Vec::with_capacity(self.rows.len());
        let mut plain = Vec::with_capacity(self.rows.len());
        for row in &self.rows {
            let mut cells = Vec::with_capacity(row.len());
            let mut plain_cells = Vec::with_capacity(row.len());
            for cell in row {
                let (value, plain_value) = match cell {
                    Cell::Int(n) => (json!(n), json!(n)),
                    Cell::Number(x) => (json!(x), json!(x)),
                    Cell::Text(s) => (json!(s), json!(s)),
                    Cell::Image(png) => {
                        let sha = sha256_hex(&png.bytes);
                        let path = format!("media/images/{}.png", &sha[..20]);
                        artifact
                            .entries
                            .insert(path.clone(), Entry::bytes(png.bytes.clone()));
                        let mut value = json!({
                            "_type": "image-file", "format": "png", "height": png.height,
                            "path": path, "sha256": sha, "width": png.width,
                        });
                        if let Some(caption) = &png.caption {
                            value["caption"] = json!(caption);
                        }
                        // The run file's copy names the type only; the artifact has the image.
                        (value, json!("Image"))
                    }
                };
                cells.push(value);
                plain_cells.push(plain_value);
            }
            data.push(Value::Array(cells));
            plain.push(Value::Array(plain_cells));
        }
        let (ncols, nrows) = (self.columns.len(), self.rows.len());
        let full = json!({
            "_type": "table",
            "column_types": {"params": {"type_map": self.column_types()}, "wb_type": "typedDict"},
            "columns": self.columns,
            "data": data,
            "log_mode": "IMMUTABLE",
            "ncols": ncols,
            "nrows": nrows,
        });
        let entry = format!("{}.table.json", safe(key));
        artifact
            .entries
            .insert(entry.clone(), Entry::bytes(full.to_string().into_bytes()));

        let run_bytes = json!({"columns": self.columns, "data": plain})
            .to_string()
            .into_bytes();
        let sha = sha256_hex(&run_bytes);
        let path = format!("media/table/{}_{step}_{}.table.json", safe(key), &sha[..20]);
        let (artifact_path, latest_path) = artifact.client_paths(&entry);
        let value = json!({
            "_type": "table-file",
            "_latest_artifact_path": latest_path,
            "artifact_path": artifact_path,
            "log_mode": "IMMUTABLE",
            "ncols": ncols,
            "nrows": nrows,
            "path": path,
            "sha256": sha,
            "size": run_bytes.len(),
        });
        LoggedTable {
            value,
            artifact,
            run_file: (path, run_bytes),
        }
    }

    /// Each column's type as the SDK infers it: the first row's cell, or nothing.
    fn column_types(&self) -> Map<String, Value> {
        self.columns
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let cell = self.rows.first().and_then(|row| row.get(i));
                let allowed = match cell {
                    Some(Cell::Image(_)) => json!([IMAGE_TYPE.clone(), {"wb_type": "none"}]),
                    Some(Cell::Text(_)) => json!([{"wb_type": "none"}, {"wb_type": "string"}]),
                    Some(Cell::Int(_) | Cell::Number(_)) | None => {
                        json!([{"wb_type": "none"}, {"wb_type": "number"}])
                    }
                };
                (
                    name.clone(),
                    json!({"params": {"allowed_types": allowed}, "wb_type": "union"}),
                )
            })
            .collect()
    }
}

/// The SDK's type of an image without boxes or masks.
static IMAGE_TYPE: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| {
    let unset = json!({"params": {"is_set": false, "val": {}}, "wb_type": "const"});
    json!({
        "params": {
            "box_class_maps": unset, "box_layers": unset,
            "box_score_keys": {"params": {"is_set": true, "val": []}, "wb_type": "const"},
            "class_map": unset, "mask_class_maps": unset, "mask_layers": unset,
        },
        "wb_type": "image-file",
    })
});

/// The most rows W&B keeps of a table logged in a run (the SDK's `Table.MAX_ARTIFACT_ROWS`).
const MAX_TABLE_ROWS: usize = 200_000;

/// The confusion matrix as `wandb.plot.confusion_matrix` logs it: a table of (actual,
/// predicted, count) for every pair of classes, and the chart drawn from the table logged under
/// `<key>_table`, to go in the config at `_wandb.visualize.<key>`. Where every pair would be
/// more rows than W&B keeps (over 447 classes), the pairs never predicted are left out, as the
/// chart leaves them blank anyway; the SDK would cut the table short instead.
pub fn confusion_matrix(
    key: &str,
    classes: &[String],
    counts: &[Vec<usize>],
    title: &str,
) -> (Table, Value) {
    let mut table = Table::new(&["Actual", "Predicted", "nPredictions"]);
    let every_pair = classes.len().pow(2) <= MAX_TABLE_ROWS;
    for (actual, row) in classes.iter().zip(counts) {
        for (predicted, &count) in classes.iter().zip(row) {
            if count == 0 && !every_pair {
                continue;
            }
            table.rows.push(vec![
                Cell::Text(actual.clone()),
                Cell::Text(predicted.clone()),
                Cell::Number(count as f64),
            ]);
        }
    }
    let field = |name: &str| json!({"name": name, "fields": []});
    let chart = json!({
        "panel_type": "Vega2",
        "panel_config": {
            "panelDefId": "wandb/confusion_matrix/v1",
            "fieldSettings": {"Actual": "Actual", "Predicted": "Predicted", "nPredictions": "nPredictions"},
            "stringSettings": {"title": title},
            "transform": {"name": "tableWithLeafColNames"},
            "userQuery": {"queryFields": [{
                "name": "runSets",
                "args": [{"name": "runSets", "value": "${runSets}"}],
                "fields": [
                    field("id"), field("name"), field("_defaultColorIndex"),
                    {"name": "summaryTable", "args": [{"name": "tableKey", "value": format!("{key}_table")}], "fields": []},
                ],
            }]},
        },
    });
    (table, chart)
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_with_an_image_is_an_artifact_a_run_file_and_a_value() {
        let mut table = Table::new(&["image", "true", "confidence"]);
        let png = Png {
            bytes: vec![1, 2, 3],
            width: 28,
            height: 28,
            caption: None,
        };
        table
            .rows
            .push(vec![Cell::Image(png), Cell::Int(7), Cell::Number(0.5)]);
        let logged = table.log("eval/mistakes", "abc", 3);
        assert_eq!(logged.artifact.name, "run-abc-eval-mistakes");
        assert_eq!(logged.artifact.kind, "run_table");
        let names: Vec<&String> = logged.artifact.entries.keys().collect();
        assert_eq!(names.len(), 2);
        assert!(names[0].starts_with("eval-mistakes.table.json"));
        assert!(names[1].starts_with("media/images/") && names[1].ends_with(".png"));
        let (name, bytes) = &logged.run_file;
        assert!(name.starts_with("media/table/eval-mistakes_3_"), "{name}");
        let plain: Value = serde_json::from_slice(bytes).unwrap();
        assert_eq!(plain["data"], json!([["Image", 7, 0.5]]));
        assert_eq!(logged.value["path"], json!(name));
        assert_eq!(logged.value["size"], bytes.len());
        assert_eq!(logged.value["nrows"], 1);
        assert!(
            logged.value["artifact_path"]
                .as_str()
                .unwrap()
                .ends_with("/eval-mistakes.table.json")
        );
    }

    #[test]
    fn the_confusion_matrix_lists_every_pair() {
        let classes: Vec<String> = ["0", "1"].map(String::from).to_vec();
        let (table, chart) = confusion_matrix("cm", &classes, &[vec![5, 1], vec![0, 4]], "t");
        assert_eq!(table.rows.len(), 4);
        let fields = &chart["panel_config"]["userQuery"]["queryFields"][0]["fields"];
        assert_eq!(fields[3]["args"][0]["value"], "cm_table");
    }

    #[test]
    fn a_confusion_matrix_too_big_for_a_table_keeps_the_pairs_predicted() {
        let square = |n: usize| -> Vec<Vec<usize>> {
            (0..n)
                .map(|i| (0..n).map(|j| usize::from(i == j || j == 0)).collect())
                .collect()
        };
        let names = |n: usize| -> Vec<String> { (0..n).map(|i| format!("c{i}")).collect() };
        let (small, _) = confusion_matrix("cm", &names(447), &square(447), "t");
        assert_eq!(small.rows.len(), 447 * 447);
        let (large, _) = confusion_matrix("cm", &names(448), &square(448), "t");
        // The diagonal and the first column, the first cell counted once.
        assert_eq!(large.rows.len(), 448 + 447);
    }
}
