//! The process-wide TF32 flag under cells run as threads of one process (`--joint-cells`): each
//! cell's `compute::activate` guard restores the flag as it found it, so when the first cell to
//! start is the first to end, it turns TF32 off under a cell still running (whose record says
//! tf32), and the last to end leaves it on. `compute::hold_tf32` keeps the flag for the process.
//! A binary of its own: nothing else in this process touches the flag.

use tch::Device;
use trainer::compute::{activate, hold_tf32, set_tf32_cublas, tf32_cublas, Compute};

#[test]
fn overlapping_cell_guards_keep_tf32_only_under_a_process_hold() {
    assert!(!tf32_cublas(), "ATen's default is TF32 off");
    // Two TF32 cells in threads: A starts, B starts, A ends while B runs.
    let a = activate(Compute::Tf32, Device::Cpu);
    let b = activate(Compute::Tf32, Device::Cpu);
    drop(a);
    assert!(!tf32_cublas(), "the hazard: B now runs without TF32");
    drop(b);
    assert!(tf32_cublas(), "and the flag stays on after both");
    set_tf32_cublas(false);
    // Under a process hold the flag is on while any cell runs, whatever the order of ends.
    let hold = hold_tf32(Compute::Tf32);
    let a = activate(Compute::Tf32, Device::Cpu);
    let b = activate(Compute::Tf32, Device::Cpu);
    drop(a);
    assert!(tf32_cublas());
    let c = activate(Compute::Tf32, Device::Cpu);
    drop(b);
    assert!(tf32_cublas());
    drop(c);
    assert!(tf32_cublas());
    drop(hold);
    assert!(!tf32_cublas(), "the hold restores what it found");
    // An f32 hold keeps strict f32 for f32 cells even where the flag was on before.
    set_tf32_cublas(true);
    let hold = hold_tf32(Compute::F32);
    let a = activate(Compute::F32, Device::Cpu);
    let b = activate(Compute::F32, Device::Cpu);
    drop(a);
    assert!(!tf32_cublas());
    drop(b);
    assert!(!tf32_cublas());
    drop(hold);
    assert!(tf32_cublas());
    set_tf32_cublas(false);
}
