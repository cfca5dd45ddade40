//! Each cell of `repro memory` runs in a child process (`repro memory-cell`), so that its peak is
//! measured from a fresh CUDA context and caching allocator.

use anyhow::{Context, Result};
use clap::ValueEnum;
use std::path::Path;
use std::process::Command;

use super::cell::{CellArgs, CellResult};

/// What a child reported: its result, or why it failed (its last stderr line), and its stderr.
pub(super) struct ChildOutcome {
    pub result: std::result::Result<CellResult, String>,
    pub stderr: Vec<u8>,
}

/// Runs `cell` in a child process of `exe` (this binary).
pub(super) fn measure_in_child(exe: &Path, cell: &CellArgs) -> Result<ChildOutcome> {
    let output = Command::new(exe)
        .args(cell_command_line(cell))
        .output()
        .with_context(|| format!("running {} memory-cell", exe.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let parsed = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str::<CellResult>(line).ok());
    let result = match (output.status.success(), parsed) {
        (true, Some(result)) => Ok(result),
        _ => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            Err(stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no output")
                .to_string())
        }
    };
    Ok(ChildOutcome {
        result,
        stderr: output.stderr,
    })
}

/// A value's name on the command line (its `clap::ValueEnum` name).
fn value_name(value: impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

/// The `repro memory-cell` arguments of `cell`.
fn cell_command_line(cell: &CellArgs) -> Vec<String> {
    let flags = [
        ("--model", cell.model.clone()),
        ("--method", cell.method.clone()),
        ("--dtype", cell.dtype.clone()),
        ("--batch", cell.batch.to_string()),
        ("--seq", cell.seq.to_string()),
        ("--repeats", cell.timing.repeats.to_string()),
        ("--warmup", cell.timing.warmup.to_string()),
        ("--normal-math", value_name(cell.timing.normal_math)),
        ("--device", value_name(cell.timing.device)),
    ];
    std::iter::once("memory-cell".to_string())
        .chain(
            flags
                .into_iter()
                .flat_map(|(flag, value)| [flag.to_string(), value]),
        )
        .chain(cell.timing.no_carry.then(|| "--no-carry".to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::cell::RunFlags;
    use super::*;
    use clap::Parser;
    use trainer::device::DeviceRequest;
    use trainer::perturb::NormalMath;

    #[derive(Parser)]
    struct MemoryCell {
        #[command(flatten)]
        cell: CellArgs,
    }

    #[test]
    fn a_cells_command_line_parses_back_to_the_cell() {
        let cell = CellArgs {
            model: "opt-1.3b".into(),
            method: "dp-zopo".into(),
            dtype: "f16".into(),
            batch: 16,
            seq: 256,
            timing: RunFlags {
                repeats: 3,
                warmup: 1,
                normal_math: NormalMath::Exact,
                no_carry: true,
                device: DeviceRequest::Cuda,
            },
        };
        let line = cell_command_line(&cell);
        assert_eq!(line[0], "memory-cell");
        let back = MemoryCell::try_parse_from(
            std::iter::once("repro".to_string()).chain(line.into_iter().skip(1)),
        )
        .unwrap()
        .cell;
        assert_eq!(
            (back.model, back.method, back.dtype, back.batch, back.seq),
            ("opt-1.3b".into(), "dp-zopo".into(), "f16".into(), 16, 256)
        );
        assert_eq!(
            (
                back.timing.repeats,
                back.timing.warmup,
                back.timing.no_carry
            ),
            (3, 1, true)
        );
        assert_eq!(
            (back.timing.normal_math, back.timing.device),
            (NormalMath::Exact, DeviceRequest::Cuda)
        );
    }
}
