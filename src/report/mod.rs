//! What training and evaluation report, and where it goes: running a network over data, the
//! metrics sinks (console, W&B history), pictures, the leaderboard, and the W&B runs of an
//! evaluation or an inference. Uses every layer below it: `formats`, `device`, `wandb`, `files`.

pub mod console;
pub mod evaluate;
pub mod leaderboard;
pub mod metrics;
pub mod model_runs;
pub mod plots;
pub mod text;
pub mod wandb_sink;
