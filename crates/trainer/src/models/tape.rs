//! A per-thread record of every parametrised layer a forward runs through, for per-example
//! gradient norms without per-example gradients (ghost clipping, Li et al. ICLR 2022; Bu et al.
//! ICML 2023 book-keeping: see [`crate::optim::ghost`]).
//!
//! While [`record`] runs a closure, each layer of [`super::layers`] whose parameters require a
//! gradient pushes its input (or the quantity its parameters multiply) and its output. Outside
//! [`record`] nothing is kept and the layers run their usual fused kernels.

use std::cell::RefCell;
use tch::Tensor;

/// The real tokens of a packed forward (`super::layers::TokenLayout`): `index [N]` holds their
/// flat positions in a `[rows, length]` batch (row-major).
pub struct PackedRows {
    pub index: Tensor,
    pub rows: i64,
    pub length: i64,
}

impl PackedRows {
    /// `[rows, length, W]` -> `[N, W]`, the real tokens.
    pub fn pack(&self, x: &Tensor) -> Result<Tensor, tch::TchError> {
        x.f_flatten(0, 1)?.f_index_select(0, &self.index)
    }

    /// `[N, W]` -> `[rows, length, W]`, zeros at padding.
    pub fn unpack(&self, x: &Tensor) -> Result<Tensor, tch::TchError> {
        let width = x.size()[1];
        Tensor::f_zeros([self.rows * self.length, width], (x.kind(), x.device()))?
            .f_index_copy(0, &self.index, x)?
            .f_view([self.rows, self.length, width])
    }

    /// A copy sharing the index's storage.
    pub fn shallow_clone(&self) -> PackedRows {
        PackedRows {
            index: self.index.shallow_clone(),
            rows: self.rows,
            length: self.length,
        }
    }
}

/// One use of parameters in a forward.
pub enum LayerRecord {
    /// `output = input W^T + b`, `input [B, ..., in]`, `output [B, ..., out]`; with `packed`,
    /// `input [N, in]` and `output [N, out]` hold the real tokens only.
    Linear {
        weight: Tensor,
        bias: Option<Tensor>,
        input: Tensor,
        output: Tensor,
        packed: Option<PackedRows>,
    },
    /// `output = normed * weight (+ bias)` (LayerNorm or RMSNorm), `normed [B, ..., H]`; with
    /// `packed`, `normed [N, H]` and `output [N, H]`.
    Norm {
        weight: Tensor,
        bias: Option<Tensor>,
        normed: Tensor,
        output: Tensor,
        packed: Option<PackedRows>,
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
    /// The packing of the token rows that the layers run on now, while a [`packed_region`] lasts.
    static REGION: RefCell<Option<PackedRows>> = const { RefCell::new(None) };
}

/// Ends a [`packed_region`], even by unwinding.
pub struct PackedRegion(bool);

impl Drop for PackedRegion {
    fn drop(&mut self) {
        if self.0 {
            REGION.with(|r| r.borrow_mut().take());
        }
    }
}

/// Marks the layers run until the guard drops as running on `rows`' real tokens, so that their
/// records say so (`packed`). `None`: nothing marked (a padded forward).
pub fn packed_region(rows: Option<&PackedRows>) -> PackedRegion {
    match rows {
        Some(rows) if is_recording() => {
            REGION.with(|r| *r.borrow_mut() = Some(rows.shallow_clone()));
            PackedRegion(true)
        }
        _ => PackedRegion(false),
    }
}

/// The packing of the rows the layers run on now (inside a [`packed_region`]).
pub fn current_packing() -> Option<PackedRows> {
    REGION.with(|r| r.borrow().as_ref().map(PackedRows::shallow_clone))
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
