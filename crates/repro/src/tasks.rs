//! The task registry of the experiment layer: `experiments/tasks.toml`, compiled into the
//! binary (so `repro` runs from any directory) and handed to the trainer parsed.

use anyhow::Result;
use trainer::data::TaskRegistry;

/// `experiments/tasks.toml` as of this build.
const TASKS_TOML: &str = include_str!("../../../experiments/tasks.toml");

/// The tasks of `experiments/tasks.toml`.
pub fn registry() -> Result<TaskRegistry> {
    Ok(TaskRegistry::parse(
        TASKS_TOML,
        "<built-in experiments/tasks.toml>",
    )?)
}
