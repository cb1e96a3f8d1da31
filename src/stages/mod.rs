//! One module per command, the top layer; each reads as the stage: open the inputs, do the
//! work, write the outputs atomically. Uses every layer below; a stage may call another's
//! public step (`sweep --run` ranks its trials as `select` does).

pub mod devices;
pub mod export;
pub mod fetch;
pub mod image;
pub mod infer;
pub mod parse;
pub mod select;
pub mod stats;
pub mod sweep;
pub mod train;
