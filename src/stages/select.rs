//! `mnist select`: the model directories under a directory (a sweep's trained trials) ranked in
//! a leaderboard, and the best one copied out as `model/`, for the stages downstream.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::files::output;
use crate::formats::model_dir::ModelDir;
use crate::report::leaderboard::Leaderboard;

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
    let board = rank(&args.models, &args.output, &args.output.join("model"))?;
    let best = board.best();
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

/// Ranks the model directories under `models`, copies the best to `best`, writes the
/// leaderboard into `output` and prints it.
pub fn rank(models: &Path, output: &Path, best: &Path) -> Result<Leaderboard> {
    let board = Leaderboard::of(models)?;
    ModelDir::new(&board.best().dir).copy_to(&ModelDir::new(best))?;
    board.write(output)?;
    output::print(&board.markdown())?;
    Ok(board)
}
