//! `mnist select`: the model directories under a directory (a sweep's trained trials) ranked in
//! a leaderboard, and the best one copied out as `model/`, for the stages downstream.

use std::path::PathBuf;

use anyhow::Result;

use crate::leaderboard::Leaderboard;
use crate::model_dir::ModelDir;
use crate::output;

#[derive(Debug, clap::Args)]
pub struct SelectArgs {
    /// Directory whose subdirectories are model directories.
    #[arg(long)]
    pub models: PathBuf,
    /// Directory to write `leaderboard.json`, `leaderboard.md` and the best model (`model/`).
    #[arg(long)]
    pub output: PathBuf,
}

pub fn run(args: &SelectArgs) -> Result<()> {
    let board = Leaderboard::of(&args.models)?;
    let best = board.best();
    ModelDir::new(&best.dir).copy_to(&ModelDir::new(args.output.join("model")))?;
    board.write(&args.output)?;
    output::print(&board.markdown())?;
    eprintln!(
        "selected {} of {} models: validation accuracy {}, test accuracy {:.2}%",
        best.name,
        board.entries.len(),
        best.validation_accuracy
            .map_or("–".into(), |a| format!("{:.2}%", 100.0 * a)),
        100.0 * best.test_accuracy
    );
    Ok(())
}
