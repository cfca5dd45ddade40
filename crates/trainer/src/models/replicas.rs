//! Replicated weights: one forward evaluates the model at R points of parameter space at once.
//!
//! A two-point ZO step needs the per-example losses at theta + mu z and theta - mu z
//! (docs/paper.md §1.1). Run one after the other, a small model's step is two forwards of about a
//! thousand small kernels each, and on a GPU the step is bound by launching them, not by
//! arithmetic (results/perf/README.md). With [`with_replicas`], the caller stacks each perturbed
//! parameter's R values into one `[R, ...]` tensor and runs the forward once on the batch repeated
//! R times along its first dimension (replica r's rows are the r-th contiguous block, also after
//! packing, since every replica has the same padding). Each layer of [`super::layers`] that meets
//! a replicated weight multiplies replica r's rows by replica r's weight (one batched product),
//! and every other op runs once over all R blocks: half the launches per ZO step for R = 2.
//!
//! Weights are found by the address of the model's tensor (the var-store variable the layer
//! shares). A weight without a replica is shared by all R blocks. Every replica must be read by
//! at least one layer during the forward, else [`with_replicas`] fails: a model that reads a
//! weight outside these layers would otherwise run that weight unperturbed.

use std::cell::RefCell;
use std::collections::HashMap;
use tch::{Kind, TchError, Tensor};

/// Stacked values `[R, ...]` of some of a model's weights, keyed by the weight they replace.
pub struct WeightReplicas {
    count: i64,
    /// Address of the model's tensor -> (its name, the stacked replicas).
    by_address: HashMap<usize, (String, Tensor)>,
}

impl WeightReplicas {
    /// Replicas `count` of each `(name, weight, stacked)`: `stacked` is `[count, weight dims]`,
    /// same dtype and device as `weight`.
    ///
    /// # Errors
    /// `count < 1`, a shape, dtype or device mismatch, an empty weight, or one weight twice.
    pub fn new(count: i64, entries: Vec<(String, &Tensor, Tensor)>) -> Result<Self, TchError> {
        if count < 1 {
            return Err(TchError::Shape(format!(
                "weight replicas: count {count} must be >= 1"
            )));
        }
        let mut by_address = HashMap::with_capacity(entries.len());
        for (name, weight, stacked) in entries {
            let mut expected = vec![count];
            expected.extend(weight.size());
            if stacked.size() != expected
                || stacked.kind() != weight.kind()
                || stacked.device() != weight.device()
            {
                return Err(TchError::Shape(format!(
                    "weight replicas of {name}: {:?} {:?} on {:?}, expected {expected:?} {:?} on {:?}",
                    stacked.size(),
                    stacked.kind(),
                    stacked.device(),
                    weight.kind(),
                    weight.device()
                )));
            }
            if weight.numel() == 0 {
                return Err(TchError::Shape(format!(
                    "weight replicas of {name}: the weight is empty"
                )));
            }
            let address = weight.data_ptr() as usize;
            if let Some((other, _)) = by_address.insert(address, (name.clone(), stacked)) {
                return Err(TchError::Shape(format!(
                    "weight replicas: {name} and {other} are the same tensor"
                )));
            }
        }
        Ok(Self { count, by_address })
    }

    /// R.
    pub fn count(&self) -> i64 {
        self.count
    }
}

struct Active {
    count: i64,
    by_address: HashMap<usize, (String, Tensor)>,
    read: Vec<usize>,
}

thread_local! {
    static ACTIVE: RefCell<Option<Active>> = const { RefCell::new(None) };
}

/// Runs `forward` with `replicas` in effect on this thread (module docs). The forward's batch
/// must be the real batch repeated `replicas.count()` times along its first dimension.
///
/// # Errors
/// `forward`'s error; a replica that no layer read; replicas already in effect (nesting).
pub fn with_replicas<T>(
    replicas: &WeightReplicas,
    forward: impl FnOnce() -> Result<T, TchError>,
) -> Result<T, TchError> {
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            ACTIVE.with(|a| a.borrow_mut().take());
        }
    }
    if super::tape::is_recording() {
        return Err(TchError::Kind(
            "weight replicas under the layer tape: a replicated forward is for ZO steps only"
                .into(),
        ));
    }
    ACTIVE.with(|a| {
        let mut active = a.borrow_mut();
        if active.is_some() {
            return Err(TchError::Kind(
                "weight replicas are already in effect".into(),
            ));
        }
        *active = Some(Active {
            count: replicas.count,
            by_address: replicas
                .by_address
                .iter()
                .map(|(k, (n, t))| (*k, (n.clone(), t.shallow_clone())))
                .collect(),
            read: Vec::new(),
        });
        Ok(())
    })?;
    let clear = Clear;
    let out = forward()?;
    let unread: Vec<String> = ACTIVE.with(|a| {
        let active = a.borrow();
        let active = active
            .as_ref()
            .expect("invariant: set above, cleared only by Clear");
        let mut unread: Vec<String> = active
            .by_address
            .iter()
            .filter(|(address, _)| !active.read.contains(address))
            .map(|(_, (name, _))| name.clone())
            .collect();
        unread.sort();
        unread
    });
    drop(clear);
    if !unread.is_empty() {
        return Err(TchError::Kind(format!(
            "replicated forward: no replica-aware layer read {} (the model uses it some other way)",
            unread.join(", ")
        )));
    }
    Ok(out)
}

/// Whether replicas are in effect on this thread.
pub fn active() -> bool {
    ACTIVE.with(|a| a.borrow().is_some())
}

/// R, when replicas are in effect on this thread.
pub fn active_count() -> Option<i64> {
    ACTIVE.with(|a| a.borrow().as_ref().map(|active| active.count))
}

/// The packed layout's token index (`super::layers::TokenLayout`) when the batch's rows are R
/// replica blocks: every block keeps the same number of rows, so that the layers can multiply
/// block r by replica r. Each block's real positions come first, in order, then as many of its
/// padding positions (in order, each once) as make it as long as the block with the most real
/// tokens. Blocks differ only in a joint forward of several cells (`crate::optim::paired`); a
/// padding row is computed and never read (its key is masked, its position never scored).
/// `real` is the flat `[rows * length]` real-token mask. One device-to-host read.
pub fn balanced_token_index(real: &Tensor, count: i64) -> Result<Tensor, TchError> {
    let blocks = by_replica(real, count)?.f_to_kind(Kind::Int64)?;
    let per_block = blocks.size()[1];
    let longest = blocks
        .f_sum_dim_intlist(1, false, Kind::Int64)?
        .f_max()?
        .f_int64_value(&[])?;
    // Stable descending sort of 1 (real) over 0 (padding): real positions first, in order.
    let order = blocks
        .f_argsort_stable(true, 1, true)?
        .f_narrow(1, 0, longest)?;
    let starts = Tensor::f_arange(count, (Kind::Int64, real.device()))?
        .f_mul_scalar(per_block)?
        .f_view([count, 1])?;
    order.f_add(&starts)?.f_flatten(0, 1)
}

/// The replicas `[R, ...]` of `weight`, if it has some in effect (marks them read).
fn replica_of(weight: &Tensor) -> Option<(i64, Tensor)> {
    ACTIVE.with(|a| {
        let mut active = a.borrow_mut();
        let active = active.as_mut()?;
        let address = weight.data_ptr() as usize;
        let stacked = active.by_address.get(&address)?.1.shallow_clone();
        if !active.read.contains(&address) {
            active.read.push(address);
        }
        Some((active.count, stacked))
    })
}

/// `x [rows, ...]` as `[R, rows / R, ...]`: replica r's rows are the r-th block.
fn by_replica(x: &Tensor, count: i64) -> Result<Tensor, TchError> {
    let mut size = x.size();
    let rows = size.first().copied().unwrap_or(0);
    if count < 1 || rows % count != 0 {
        return Err(TchError::Shape(format!(
            "replicated forward: {rows} rows do not split into {count} replicas"
        )));
    }
    size[0] = rows / count;
    size.insert(0, count);
    x.f_reshape(size.as_slice())
}

/// `[R, rows, ...]` -> `[R * rows, ...]`.
fn merged(x: &Tensor) -> Result<Tensor, TchError> {
    x.f_flatten(0, 1)
}

/// Replica r's broadcastable view of a per-feature vector `v` (`[W]`, or stacked `[R, W]`) for
/// `x` laid out as `[R, rows, ..., W]` with `extra` dimensions between rows and W.
fn per_replica_vector(stacked: &Tensor, x_dims: usize) -> Result<Tensor, TchError> {
    let size = stacked.size();
    let mut view = vec![size[0]];
    view.extend(std::iter::repeat_n(1, x_dims - 2));
    view.push(size[1]);
    stacked.f_view(view.as_slice())
}

/// `x W^T + b` with `W [out, in]` and `b [out]`, each replicated or shared. Shared by
/// [`super::layers::Linear`] and the LM heads.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor, TchError> {
    if !active() {
        // The sequential forward's path: no lookups, no extra tensor handles.
        return x.f_linear(weight, bias);
    }
    product(x, weight, bias, None)
}

/// `x W^T + b` over the output rows `rows` of `W` and `b` (all of them for `None`), each of
/// `W` and `b` replicated or shared: replica r's rows of `x` meet replica r's `W` and `b`.
fn product(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    rows: Option<&Tensor>,
) -> Result<Tensor, TchError> {
    // Output rows of a shared `[out, ...]` tensor, or of each replica of a stacked one.
    let select = |t: &Tensor, dim: i64| match rows {
        Some(rows) => t.f_index_select(dim, rows),
        None => Ok(t.shallow_clone()),
    };
    let weight_replicas = active().then(|| replica_of(weight)).flatten();
    let bias_replicas = bias.and_then(|b| active().then(|| replica_of(b)).flatten());
    let count = match (&weight_replicas, &bias_replicas) {
        (None, None) if rows.is_none() => return x.f_linear(weight, bias),
        (None, None) => {
            let bias = bias.map(|b| select(b, 0)).transpose()?;
            return x.f_linear(&select(weight, 0)?, bias.as_ref());
        }
        (Some((r, _)), _) | (None, Some((r, _))) => *r,
    };
    // [R, M, in] for x of any rank: the rows before the last dimension, replica-major.
    let in_dim = *x.size().last().unwrap_or(&0);
    let xs = by_replica(&x.f_reshape([-1, in_dim])?, count)?;
    let y = match &weight_replicas {
        Some((_, w)) => xs.f_matmul(&select(w, 1)?.f_transpose(1, 2)?)?,
        None => xs.f_linear::<&Tensor>(&select(weight, 0)?, None)?,
    };
    let y = match (bias, &bias_replicas) {
        (_, Some((_, b))) => y.f_add(&select(b, 1)?.f_unsqueeze(1)?)?,
        (Some(b), None) => y.f_add(&select(b, 0)?)?,
        (None, None) => y,
    };
    let mut size = x.size();
    let last = size.len() - 1;
    size[last] = y.size()[2];
    merged(&y)?.f_reshape(size.as_slice())
}

/// `op(x, v)` for a per-feature vector `v [W]` on `x [..., W]`, replicated or shared.
fn per_feature(
    x: &Tensor,
    v: &Tensor,
    op: fn(&Tensor, &Tensor) -> Result<Tensor, TchError>,
) -> Result<Tensor, TchError> {
    match active().then(|| replica_of(v)).flatten() {
        None => op(x, v),
        Some((count, stacked)) => {
            let rows = by_replica(x, count)?;
            merged(&op(&rows, &per_replica_vector(&stacked, rows.dim())?)?)
        }
    }
}

/// `x * g` for a per-feature gain `g [W]` on `x [..., W]` (norms), replicated or shared.
pub fn scale(x: &Tensor, gain: &Tensor) -> Result<Tensor, TchError> {
    per_feature(x, gain, Tensor::f_mul)
}

/// `x + b` for a per-feature bias `b [W]` on `x [..., W]`, replicated or shared.
pub fn shift(x: &Tensor, bias: &Tensor) -> Result<Tensor, TchError> {
    per_feature(x, bias, Tensor::f_add)
}

/// Whether `weight` has replicas in effect (without marking them read): the layers' fused
/// kernels take one weight, so a replicated one takes the unfused path.
pub fn is_replicated(weight: &Tensor) -> bool {
    active()
        && ACTIVE.with(|a| {
            a.borrow().as_ref().is_some_and(|active| {
                active
                    .by_address
                    .contains_key(&(weight.data_ptr() as usize))
            })
        })
}

/// Rows of `table [V, H]` at `ids [rows, ...]`, replicated or shared: replica r's ids index
/// replica r's table (one lookup in the `[R V, H]` stack).
pub fn embedding(table: &Tensor, ids: &Tensor) -> Result<Tensor, TchError> {
    match active().then(|| replica_of(table)).flatten() {
        None => Tensor::f_embedding(table, ids, -1, false, false),
        Some((count, stacked)) => {
            let size = stacked.size();
            let (vocab, width) = (size[1], size[2]);
            let shifts = Tensor::f_arange(count, (Kind::Int64, ids.device()))?
                .f_mul_scalar(vocab)?
                .f_view([count, 1])?;
            let shifted = by_replica(&ids.f_reshape([ids.size()[0], -1])?, count)?
                .f_reshape([count, -1])?
                .f_add(&shifts)?
                .f_reshape(ids.size().as_slice())?;
            Tensor::f_embedding(
                &stacked.f_reshape([count * vocab, width])?,
                &shifted,
                -1,
                false,
                false,
            )
        }
    }
}

/// Logits of `rows` of an output matrix `[V, H]` (plus those entries of `bias`), each
/// replicated or shared: [`linear`] restricted to those output rows. Used by
/// [`super::layers::project_rows`].
pub fn select_rows(
    x: &Tensor,
    matrix: &Tensor,
    bias: Option<&Tensor>,
    rows: &Tensor,
) -> Result<Tensor, TchError> {
    product(x, matrix, bias, Some(rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn stack(a: &Tensor, b: &Tensor) -> Tensor {
        Tensor::stack(&[a, b], 0)
    }

    fn close(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    /// Two blocks of two rows of length 3 (block 0: 4 real tokens, block 1: 2): each block's
    /// real positions in order, block 1 filled up to 4 with its first padding positions.
    #[test]
    fn balanced_index_keeps_each_blocks_real_tokens_first_and_equal_lengths() {
        let real = Tensor::from_slice(&[
            true, true, false, true, true, false, // block 0
            true, false, false, false, true, false, // block 1
        ]);
        let index = balanced_token_index(&real, 2).unwrap();
        assert_eq!(
            Vec::<i64>::try_from(&index).unwrap(),
            vec![0, 1, 3, 4, 6, 10, 7, 8]
        );
    }

    /// Each layer kind, replicated, computes replica r's rows with replica r's weight, for
    /// 2-D and 3-D inputs; a shared weight is used as is.
    #[test]
    fn each_replica_block_uses_its_own_weight() {
        tch::manual_seed(3);
        let opts = (Kind::Float, Device::Cpu);
        let w = Tensor::randn([5, 4], opts);
        let (w0, w1) = (Tensor::randn([5, 4], opts), Tensor::randn([5, 4], opts));
        let b = Tensor::randn([5], opts);
        let (b0, b1) = (Tensor::randn([5], opts), Tensor::randn([5], opts));
        let g = Tensor::randn([4], opts);
        let (g0, g1) = (Tensor::randn([4], opts), Tensor::randn([4], opts));
        let table = Tensor::randn([7, 4], opts);
        let (t0, t1) = (Tensor::randn([7, 4], opts), Tensor::randn([7, 4], opts));
        let rows = Tensor::from_slice(&[6i64, 2]);
        let replicas = WeightReplicas::new(
            2,
            vec![
                ("w".into(), &w, stack(&w0, &w1)),
                ("b".into(), &b, stack(&b0, &b1)),
                ("g".into(), &g, stack(&g0, &g1)),
                ("table".into(), &table, stack(&t0, &t1)),
            ],
        )
        .unwrap();
        for x_size in [vec![3i64, 4], vec![3, 2, 4]] {
            let (x0, x1) = (Tensor::randn(&x_size, opts), Tensor::randn(&x_size, opts));
            let x = Tensor::cat(&[&x0, &x1], 0);
            let ids0 = Tensor::randint(7, [3, 2], (Kind::Int64, Device::Cpu));
            let ids1 = Tensor::randint(7, [3, 2], (Kind::Int64, Device::Cpu));
            let ids = Tensor::cat(&[&ids0, &ids1], 0);
            let outputs = with_replicas(&replicas, || {
                Ok((
                    linear(&x, &w, Some(&b))?,
                    scale(&x, &g)?,
                    shift(&x, &g)?,
                    embedding(&table, &ids)?,
                    select_rows(&x, &table, None, &rows)?,
                ))
            })
            .unwrap();
            let expected = (
                Tensor::cat(&[x0.linear(&w0, Some(&b0)), x1.linear(&w1, Some(&b1))], 0),
                Tensor::cat(&[&x0 * &g0, &x1 * &g1], 0),
                Tensor::cat(&[&x0 + &g0, &x1 + &g1], 0),
                Tensor::cat(
                    &[
                        Tensor::embedding(&t0, &ids0, -1, false, false),
                        Tensor::embedding(&t1, &ids1, -1, false, false),
                    ],
                    0,
                ),
                Tensor::cat(
                    &[
                        x0.linear::<&Tensor>(&t0.index_select(0, &rows), None),
                        x1.linear::<&Tensor>(&t1.index_select(0, &rows), None),
                    ],
                    0,
                ),
            );
            assert!(close(&outputs.0, &expected.0) < 1e-5, "linear {x_size:?}");
            assert!(close(&outputs.1, &expected.1) < 1e-6, "scale {x_size:?}");
            assert!(close(&outputs.2, &expected.2) < 1e-6, "shift {x_size:?}");
            assert!(
                close(&outputs.3, &expected.3) == 0.0,
                "embedding {x_size:?}"
            );
            assert!(close(&outputs.4, &expected.4) < 1e-5, "rows {x_size:?}");
        }
        // Outside `with_replicas` the same calls use the shared weights.
        let x = Tensor::randn([3, 4], opts);
        assert!(close(&linear(&x, &w, Some(&b)).unwrap(), &x.linear(&w, Some(&b))) == 0.0);
        assert!(!active());
    }

    /// A replica no layer reads is an error naming it, so a model that bypasses the layers
    /// cannot run a perturbed weight unperturbed; rows that do not split are an error too.
    #[test]
    fn an_unread_replica_and_a_bad_row_count_are_errors() {
        let opts = (Kind::Float, Device::Cpu);
        let (w, v) = (Tensor::ones([2, 2], opts), Tensor::ones([2], opts));
        let replicas = WeightReplicas::new(
            2,
            vec![
                ("w".into(), &w, Tensor::ones([2, 2, 2], opts)),
                ("v".into(), &v, Tensor::ones([2, 2], opts)),
            ],
        )
        .unwrap();
        let err = with_replicas(&replicas, || linear(&Tensor::ones([4, 2], opts), &w, None))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no replica-aware layer read v"), "{err}");
        assert!(!active(), "cleared after an error");
        let err = with_replicas(&replicas, || linear(&Tensor::ones([3, 2], opts), &w, None))
            .unwrap_err()
            .to_string();
        assert!(err.contains("3 rows do not split into 2"), "{err}");
        let bad = WeightReplicas::new(2, vec![("w".into(), &w, Tensor::ones([3, 2, 2], opts))]);
        assert!(bad.is_err());
    }
}
