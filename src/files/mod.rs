//! Files, the bottom layer: outputs written atomically, and the files under a directory. Uses
//! nothing else of the crate.

pub mod input_files;
pub mod output;
pub mod walk;
