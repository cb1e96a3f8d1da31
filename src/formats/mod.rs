//! What the stages read and write: IDX, pixel CSV and PNG images over one leaf of image sets
//! and labels (`data`), the data sets, the training config, the training curves, the model
//! directory and its exports. Uses `files`, `pachyderm`, `wandb` (the config's `[wandb]` settings) and `device`
//! (the card records what trained the model).

pub mod classes;
pub mod config;
pub mod curves;
pub mod data;
pub mod dataset;
pub mod exports;
pub mod idx;
pub mod model_dir;
pub mod pixels_csv;
pub mod png_digit;
