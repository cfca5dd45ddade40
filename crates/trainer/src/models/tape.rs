//! A per-thread record of every parametrised layer a forward runs through, for per-example
//! gradient norms without per-example gradients (ghost clipping, Li et al. ICLR 2022; Bu et al.
//! ICML 2023 book-keeping: see [`crate::optim::ghost`]).
//!
//! While [`record`] runs a closure, each layer of [`super::layers`] whose parameters require a
//! gradient pushes its input (or the quantity its parameters multiply) and its output. Outside
//! [`record`] nothing is kept and the layers run their usual fused kernels.

use std::cell::RefCell;
use tch::Tensor;

/// One use of parameters in a forward.
pub enum LayerRecord {
    /// `output = input W^T + b`, `input [B, ..., in]`, `output [B, ..., out]`.
    Linear {
        weight: Tensor,
        bias: Option<Tensor>,
        input: Tensor,
        output: Tensor,
    },
    /// `output = normed * weight (+ bias)` (LayerNorm or RMSNorm), `normed [B, ..., H]`.
    Norm {
        weight: Tensor,
        bias: Option<Tensor>,
        normed: Tensor,
        output: Tensor,
    },
    /// `output[b, t] = table[ids[b, t]]`, `ids [B, T]`, `output [B, T, H]`.
    Embedding {
        table: Tensor,
        ids: Tensor,
        output: Tensor,
    },
    /// `output = input matrix[rows]^T + bias[rows]`: an output head restricted to some rows
    /// (`rows [n]`, `input [B, ..., H]`, `output [B, ..., n]`).
    Rows {
        matrix: Tensor,
        bias: Option<Tensor>,
        rows: Tensor,
        input: Tensor,
        output: Tensor,
    },
}

thread_local! {
    static TAPE: RefCell<Option<Vec<LayerRecord>>> = const { RefCell::new(None) };
}

/// Clears the tape when [`record`] ends, even by unwinding.
struct Recording;

impl Drop for Recording {
    fn drop(&mut self) {
        TAPE.with(|t| t.borrow_mut().take());
    }
}

/// True while a [`record`] runs on this thread.
pub fn is_recording() -> bool {
    TAPE.with(|t| t.borrow().is_some())
}

/// Runs `forward` and returns its value with the layers it ran through, in order.
///
/// # Errors
/// A nested call (the tape is already recording on this thread).
pub fn record<T>(forward: impl FnOnce() -> T) -> Result<(T, Vec<LayerRecord>), tch::TchError> {
    if is_recording() {
        return Err(tch::TchError::Kind(
            "layer recording is already active on this thread".into(),
        ));
    }
    TAPE.with(|t| *t.borrow_mut() = Some(Vec::new()));
    let guard = Recording;
    let value = forward();
    let records = TAPE.with(|t| t.borrow_mut().take()).unwrap_or_default();
    drop(guard);
    Ok((value, records))
}

/// Appends `entry` when recording and one of `params` requires a gradient.
pub fn push(params: &[Option<&Tensor>], entry: impl FnOnce() -> LayerRecord) {
    if !is_recording() || !params.iter().flatten().any(|p| p.requires_grad()) {
        return;
    }
    let entry = entry();
    TAPE.with(|t| {
        if let Some(tape) = t.borrow_mut().as_mut() {
            tape.push(entry);
        }
    });
}
