//! Building blocks shared by the three families: parameter creation, linear and norm layers,
//! padding/causal masks and fused scaled-dot-product attention.

use super::replicas;
use super::tape::{self, LayerRecord};
use tch::{nn, Device, Kind, TchError, Tensor};

/// How fresh parameters are filled: zeros to be overwritten by a checkpoint, or random
/// (normal with `std` for matrices, ones for norm gains, zeros for biases; transformers'
/// `_init_weights` uses the same scheme with `initializer_range`).
#[derive(Debug, Clone, Copy)]
pub enum ParamInit {
    ForLoading,
    Random { std: f64 },
}

/// Creates named, trainable parameters of one dtype on one device.
#[derive(Clone, Copy)]
pub struct ParamFactory {
    pub kind: Kind,
    pub device: Device,
    pub init: ParamInit,
}

impl ParamFactory {
    fn add(&self, path: &nn::Path, name: &str, tensor: Tensor) -> Tensor {
        path.add(name, tensor, true)
    }

    /// A weight matrix or embedding table.
    pub fn matrix(&self, path: &nn::Path, name: &str, dims: &[i64]) -> Result<Tensor, TchError> {
        let t = match self.init {
            ParamInit::ForLoading => Tensor::f_zeros(dims, (self.kind, self.device))?,
            ParamInit::Random { std } => {
                (Tensor::f_randn(dims, (Kind::Float, self.device))? * std).f_to_kind(self.kind)?
            }
        };
        Ok(self.add(path, name, t))
    }

    /// A bias vector (zeros when random).
    pub fn bias(&self, path: &nn::Path, name: &str, dims: &[i64]) -> Result<Tensor, TchError> {
        Ok(self.add(path, name, Tensor::f_zeros(dims, (self.kind, self.device))?))
    }

    /// A norm gain (ones when random).
    pub fn gain(&self, path: &nn::Path, name: &str, dims: &[i64]) -> Result<Tensor, TchError> {
        let t = match self.init {
            ParamInit::ForLoading => Tensor::f_zeros(dims, (self.kind, self.device))?,
            ParamInit::Random { .. } => Tensor::f_ones(dims, (self.kind, self.device))?,
        };
        Ok(self.add(path, name, t))
    }
}

/// `y = x W^T + b` with `W: [out, in]` (the PyTorch layout of every checkpoint), plus
/// `scale * (x A^T) B^T` when a LoRA branch is attached ([`super::adapters`]).
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub lora: Option<LoraBranch>,
}

/// A low-rank update of a linear layer (Hu et al. ICLR 2022): `A: [r, in]`, `B: [out, r]`,
/// `scale = alpha / r`. Each factor runs as its own recorded linear map, so ghost clipping sees
/// the two pieces as ordinary linear layers.
pub struct LoraBranch {
    pub a: Tensor,
    pub b: Tensor,
    pub scale: f64,
}

/// `x M^T`, recorded on the tape as a bias-free linear layer.
fn recorded_product(x: &Tensor, matrix: &Tensor) -> Result<Tensor, TchError> {
    let y = replicas::linear(x, matrix, None)?;
    tape::push(&[Some(matrix)], || LayerRecord::Linear {
        weight: matrix.shallow_clone(),
        bias: None,
        input: x.shallow_clone(),
        output: y.shallow_clone(),
        packed: tape::current_packing(),
    });
    Ok(y)
}

impl Linear {
    /// Parameters `path.weight` `[out, in]` and, when `with_bias`, `path.bias` `[out]`.
    pub fn new(
        f: &ParamFactory,
        path: &nn::Path,
        in_dim: i64,
        out_dim: i64,
        with_bias: bool,
    ) -> Result<Self, TchError> {
        let weight = f.matrix(path, "weight", &[out_dim, in_dim])?;
        let bias = if with_bias {
            Some(f.bias(path, "bias", &[out_dim])?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            lora: None,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        let y = replicas::linear(x, &self.weight, self.bias.as_ref())?;
        tape::push(&[Some(&self.weight), self.bias.as_ref()], || {
            LayerRecord::Linear {
                weight: self.weight.shallow_clone(),
                bias: self.bias.as_ref().map(Tensor::shallow_clone),
                input: x.shallow_clone(),
                output: y.shallow_clone(),
                packed: tape::current_packing(),
            }
        });
        match &self.lora {
            None => Ok(y),
            Some(lora) => {
                let low = recorded_product(x, &lora.a)?;
                let update = recorded_product(&low, &lora.b)?;
                y.f_add(&update.f_mul_scalar(lora.scale)?)
            }
        }
    }
}

/// LayerNorm with gain `weight` and `bias`.
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(f: &ParamFactory, path: &nn::Path, dim: i64, eps: f64) -> Result<Self, TchError> {
        Ok(Self {
            weight: f.gain(path, "weight", &[dim])?,
            bias: f.bias(path, "bias", &[dim])?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        let dim = *self.weight.size().last().unwrap_or(&0);
        let replicated =
            replicas::is_replicated(&self.weight) || replicas::is_replicated(&self.bias);
        if replicated {
            let normed = x.f_layer_norm::<&Tensor>([dim], None, None, self.eps, true)?;
            return replicas::shift(&replicas::scale(&normed, &self.weight)?, &self.bias);
        }
        if !tape::is_recording() {
            return x.f_layer_norm([dim], Some(&self.weight), Some(&self.bias), self.eps, true);
        }
        // Recording: the normalised input is kept, so the affine part runs unfused.
        let normed = x.f_layer_norm::<&Tensor>([dim], None, None, self.eps, true)?;
        let y = normed.f_mul(&self.weight)?.f_add(&self.bias)?;
        tape::push(&[Some(&self.weight), Some(&self.bias)], || {
            LayerRecord::Norm {
                weight: self.weight.shallow_clone(),
                bias: Some(self.bias.shallow_clone()),
                normed: normed.shallow_clone(),
                output: y.shallow_clone(),
                packed: tape::current_packing(),
            }
        });
        Ok(y)
    }
}

/// RMSNorm as in transformers' `LlamaRMSNorm`: normalise in f32, cast back, then scale.
pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f64,
}

impl RmsNorm {
    pub fn new(f: &ParamFactory, path: &nn::Path, dim: i64, eps: f64) -> Result<Self, TchError> {
        Ok(Self {
            weight: f.gain(path, "weight", &[dim])?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        let kind = x.kind();
        let plain_f32 = kind == Kind::Float
            && self.weight.kind() == Kind::Float
            && !crate::compute::autocast_enabled(x.device());
        let replicated = replicas::is_replicated(&self.weight);
        if plain_f32 && replicated {
            // Replicated gain (super::replicas): the fused norm without a gain, then each
            // replica's gain.
            let normed = x.f_rms_norm::<&Tensor>(self.weight.size(), None, self.eps)?;
            return replicas::scale(&normed, &self.weight);
        }
        if plain_f32 && !tape::is_recording() {
            // All in f32 already: ATen's fused RMSNorm computes the same normalisation, up to
            // the order of rounding (one kernel on CUDA instead of six). Autocast is left out,
            // so that its op lists cannot change the precision of the norm.
            return x.f_rms_norm(self.weight.size(), Some(&self.weight), self.eps);
        }
        let acc = crate::compute::accumulation_kind(kind);
        let x32 = x.f_to_kind(acc)?;
        let mean_square = x32.f_square()?.f_mean_dim(-1, true, acc)?;
        let normed = (x32 * (mean_square + self.eps).f_rsqrt()?).f_to_kind(kind)?;
        let y = replicas::scale(&normed, &self.weight)?;
        tape::push(&[Some(&self.weight)], || LayerRecord::Norm {
            weight: self.weight.shallow_clone(),
            bias: None,
            normed: normed.shallow_clone(),
            output: y.shallow_clone(),
            packed: tape::current_packing(),
        });
        Ok(y)
    }
}

/// Rows of an embedding `table [V, H]` at `ids [B, L]` -> `[B, L, H]`.
pub fn embedding(table: &Tensor, ids: &Tensor) -> Result<Tensor, TchError> {
    let y = replicas::embedding(table, ids)?;
    tape::push(&[Some(table)], || LayerRecord::Embedding {
        table: table.shallow_clone(),
        ids: ids.shallow_clone(),
        output: y.shallow_clone(),
    });
    Ok(y)
}

/// Checks a `[B, L]` id tensor against its `[B, L]` mask and returns `(B, L)`.
pub fn batch_dims(input_ids: &Tensor, attention_mask: &Tensor) -> Result<(i64, i64), TchError> {
    let ids = input_ids.size();
    let mask = attention_mask.size();
    if ids.len() != 2 || ids != mask {
        return Err(TchError::Shape(format!(
            "input_ids {ids:?} and attention_mask {mask:?} must both be [B, L]"
        )));
    }
    Ok((ids[0], ids[1]))
}

/// Boolean attention mask `[B, 1, L, L]` (true = may attend) from a `[B, L]` padding mask.
///
/// Padded keys are hidden; with `causal`, so are later keys. Every query also sees itself, so a
/// padded query row is never fully masked (a fully masked row would give NaN, which would then
/// reach real rows through 0 * NaN in the next layer). Real rows are unaffected: their own
/// position is always an allowed key.
pub fn attention_bool_mask(attention_mask: &Tensor, causal: bool) -> Result<Tensor, TchError> {
    let size = attention_mask.size();
    let (b, l) = (size[0], size[1]);
    let device = attention_mask.device();
    let keys = attention_mask
        .f_ne(0)?
        .f_view([b, 1, 1, l])?
        .f_expand([b, 1, l, l], false)?;
    let mut allowed = if causal {
        let lower = Tensor::f_ones([l, l], (Kind::Bool, device))?.f_tril(0)?;
        keys.f_logical_and(&lower)?
    } else {
        keys.f_contiguous()?
    };
    allowed = allowed.f_logical_or(&Tensor::f_eye(l, (Kind::Bool, device))?)?;
    Ok(allowed)
}

/// `[B, L, heads * d]` -> `[B, heads, L, d]`.
pub fn split_heads(x: &Tensor, heads: i64) -> Result<Tensor, TchError> {
    let size = x.size();
    let (b, l, width) = (size[0], size[1], size[2]);
    x.f_view([b, l, heads, width / heads])?.f_transpose(1, 2)
}

/// `[B, heads, L, d]` -> `[B, L, heads * d]`.
pub fn merge_heads(x: &Tensor) -> Result<Tensor, TchError> {
    let size = x.size();
    let (b, h, l, d) = (size[0], size[1], size[2], size[3]);
    x.f_transpose(1, 2)?.f_contiguous()?.f_view([b, l, h * d])
}

/// Where a forward keeps its per-token rows between the attention blocks.
///
/// Every layer but attention acts on each token alone (norms, projections, MLP, residuals), so
/// its work on padding is wasted: a batch of 64 SST-2 prompts padded to its longest is two-thirds
/// padding (`results/perf/cpu-2026-12-04-packed-tokens/`). A packed forward keeps only the real
/// tokens, `[N, W]`, and lays them back into `[B, L, W]` (zeros at padding) just for attention,
/// whose padded keys are masked anyway. Real tokens get the same values as in the padded layout up
/// to the rounding of products of another shape. Under ghost clipping's recording the records of
/// the packed layers carry the packing ([`tape::PackedRows`]), so that per-example norms can lay
/// them out by example again.
pub enum TokenLayout {
    /// `[B, L, W]`, and the batch has no padding.
    Unpadded,
    /// `[B, L, W]`, padding included (packing is off, or a recorded forward on a GPU).
    Padded,
    /// `[N, W]`: the real tokens.
    Packed(tape::PackedRows),
}

thread_local! {
    static PACKING: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Runs `forward` with packing off on this thread (every forward in the padded layout), for
/// parity tests and side-by-side timings ([`TokenLayout`]).
pub fn with_padded_layout<T>(forward: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            PACKING.with(|p| p.set(self.0));
        }
    }
    let _restore = Restore(PACKING.with(|p| p.replace(false)));
    forward()
}

/// Whether ghost clipping's recorded forwards skip padding on `device`: on the CPU, not on a GPU
/// ([`TokenLayout::for_mask`] says why).
pub fn recorded_forwards_pack(device: tch::Device) -> bool {
    !device.is_cuda()
}

impl TokenLayout {
    /// The layout of a batch with `[B, L]` padding mask `attention_mask`: packed when it has
    /// padding and packing is on, except for ghost clipping's recorded forwards on a GPU. There
    /// the scatters that lay packed rows out by example again cost more than the padding saves:
    /// DP-SGD of SmolLM2 on SST-2 ran 6.5 steps/s packed against 8.5 padded on the H200
    /// (results/perf/h200-2026-12-05-packed-tokens/), while on the CPU packed is 1.3-1.4x faster
    /// (results/perf/cpu-2026-12-04-packed-tokens/). One device-to-host read (two
    /// when a joint forward's balanced index keeps every position).
    pub fn for_mask(attention_mask: &Tensor) -> Result<Self, TchError> {
        let real = attention_mask.f_flatten(0, 1)?.f_ne(0)?;
        let recorded_padded =
            tape::is_recording() && !recorded_forwards_pack(attention_mask.device());
        if recorded_padded || !PACKING.with(std::cell::Cell::get) {
            let unpadded = real.f_all()?.f_int64_value(&[])? != 0;
            return Ok(if unpadded {
                TokenLayout::Unpadded
            } else {
                TokenLayout::Padded
            });
        }
        let size = attention_mask.size();
        let (rows, length) = (size[0], size[1]);
        let (index, balanced) = match replicas::active_count() {
            Some(count) if count > 1 => (replicas::balanced_token_index(&real, count)?, true),
            _ => (real.f_nonzero()?.f_squeeze_dim(1)?, false),
        };
        if index.size()[0] < rows * length {
            return Ok(TokenLayout::Packed(tape::PackedRows {
                index,
                rows,
                length,
            }));
        }
        // A balanced index keeps every position once one replica block is all real tokens,
        // though another block may be padded (a joint forward of cells of other lengths): that
        // batch is padded, and its attention needs the mask.
        let unpadded = !balanced || real.f_all()?.f_int64_value(&[])? != 0;
        Ok(if unpadded {
            TokenLayout::Unpadded
        } else {
            TokenLayout::Padded
        })
    }

    /// `[B, L, W]` -> this layout's rows.
    pub fn pack(&self, x: &Tensor) -> Result<Tensor, TchError> {
        match self {
            TokenLayout::Unpadded | TokenLayout::Padded => Ok(x.shallow_clone()),
            TokenLayout::Packed(rows) => rows.pack(x),
        }
    }

    /// This layout's rows -> `[B, L, W]`, zeros at padding.
    pub fn unpack(&self, x: &Tensor) -> Result<Tensor, TchError> {
        match self {
            TokenLayout::Unpadded | TokenLayout::Padded => Ok(x.shallow_clone()),
            TokenLayout::Packed(rows) => rows.unpack(x),
        }
    }

    /// The query, key and value projections of the rows `x`, split into heads: `[B, heads, L,
    /// d]` for the query and `[B, kv_heads, L, d]` for the key and value. When packed, the three
    /// are laid back into `[B, L, ·]` by one scatter.
    pub fn attention_heads(
        &self,
        x: &Tensor,
        [query, key, value]: [&Linear; 3],
        heads: i64,
        kv_heads: i64,
    ) -> Result<(Tensor, Tensor, Tensor), TchError> {
        let (q, k, v) = (query.forward(x)?, key.forward(x)?, value.forward(x)?);
        let (q, k, v) = match self {
            TokenLayout::Unpadded | TokenLayout::Padded => (q, k, v),
            TokenLayout::Packed(rows) => {
                let widths = [q.size()[1], k.size()[1], v.size()[1]];
                let all = rows.unpack(&Tensor::f_cat(&[&q, &k, &v], 1)?)?;
                let [q, k, v]: [Tensor; 3] = all
                    .f_split_with_sizes(widths, 2)?
                    .try_into()
                    .map_err(|_| TchError::Shape("q, k, v: split into other than 3".into()))?;
                (q, k, v)
            }
        };
        Ok((
            split_heads(&q, heads)?,
            split_heads(&k, kv_heads)?,
            split_heads(&v, kv_heads)?,
        ))
    }

    /// Marks the layers run from here until the guard drops as running in this layout (for the
    /// tape's records; nothing to mark unless packed and recording).
    pub fn region(&self) -> tape::PackedRegion {
        match self {
            TokenLayout::Packed(rows) => tape::packed_region(Some(rows)),
            _ => tape::packed_region(None),
        }
    }

    /// The attention pattern of this batch's padding mask `attention_mask`:
    /// [`AttentionPattern::Unpadded`] when every position is real, else the explicit mask.
    /// transformers' SDPA paths drop an all-ones mask the same way.
    pub fn attention_pattern(
        &self,
        attention_mask: &Tensor,
        causal: bool,
    ) -> Result<AttentionPattern, TchError> {
        match self {
            TokenLayout::Unpadded => Ok(AttentionPattern::Unpadded { causal }),
            _ => Ok(AttentionPattern::Masked(attention_bool_mask(
                attention_mask,
                causal,
            )?)),
        }
    }
}

/// Which keys each query may see, as the fused attention kernel takes it.
pub enum AttentionPattern {
    /// No padding in the batch: SDPA's own causal flag (or none), so that it may pick its fastest
    /// kernel (flash attention for f16/bf16) with no mask tensor to read.
    Unpadded { causal: bool },
    /// An explicit boolean mask `[B, 1, L, L]` ([`attention_bool_mask`]).
    Masked(Tensor),
}

/// Fused attention `softmax(q k^T / sqrt(d) + mask) v` (`Tensor::scaled_dot_product_attention`).
pub fn fused_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    pattern: &AttentionPattern,
) -> Result<Tensor, TchError> {
    let (mask, causal) = match pattern {
        AttentionPattern::Unpadded { causal } => (None, *causal),
        AttentionPattern::Masked(mask) => (Some(mask), false),
    };
    Tensor::f_scaled_dot_product_attention(q, k, v, mask, 0.0, causal, None, false)
}

/// Trainable keys and values prepended to one attention layer's keys and values (prefix-tuning,
/// Li & Liang ACL 2021, in MeZO's form without reparametrisation): `[P, kv_width]` each, in the
/// projected space (after the key/value projections, before heads are split; for RoPE models
/// after the rotation). Every query attends to all `P` prefix positions.
pub struct Prefix {
    pub keys: Tensor,
    pub values: Tensor,
}

impl Prefix {
    /// Number of prefix positions `P`.
    pub fn len(&self) -> i64 {
        self.keys.size()[0]
    }

    /// True when `P = 0` (never for an attached prefix).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `k, v: [B, kv_heads, L, d]` -> `[B, kv_heads, P + L, d]`, the prefix first. The
    /// per-example copies are row lookups of the prefix tables (`ids [B, P] = 0..P`), recorded
    /// as embedding uses, so each example's gradient of the prefix is its own rows' gradient.
    pub fn extend(&self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor), TchError> {
        let size = k.size();
        let (b, kv_heads) = (size[0], size[1]);
        let p = self.len();
        let ids = Tensor::f_arange(p, (Kind::Int64, k.device()))?
            .f_unsqueeze(0)?
            .f_expand([b, p], false)?;
        let keys = split_heads(&embedding(&self.keys, &ids)?, kv_heads)?;
        let values = split_heads(&embedding(&self.values, &ids)?, kv_heads)?;
        Ok((
            Tensor::f_cat(&[&keys, k], 2)?,
            Tensor::f_cat(&[&values, v], 2)?,
        ))
    }
}

/// `(k, v)` with the layer's prefix in front when it has one ([`Prefix::extend`]), as they are
/// otherwise.
pub fn with_prefix(
    prefix: Option<&Prefix>,
    k: Tensor,
    v: Tensor,
) -> Result<(Tensor, Tensor), TchError> {
    match prefix {
        Some(prefix) => prefix.extend(&k, &v),
        None => Ok((k, v)),
    }
}

/// The attention pattern with `prefix` always-visible keys in front of the `L` real ones
/// (`prefix = 0`: unchanged). Without padding and without causality no mask is needed.
pub fn prefix_pattern(
    pattern: AttentionPattern,
    prefix: i64,
    b: i64,
    l: i64,
    device: Device,
) -> Result<AttentionPattern, TchError> {
    if prefix == 0 {
        return Ok(pattern);
    }
    let base = match pattern {
        AttentionPattern::Unpadded { causal: false } => return Ok(pattern),
        AttentionPattern::Unpadded { causal: true } => {
            Tensor::f_ones([l, l], (Kind::Bool, device))?
                .f_tril(0)?
                .f_view([1, 1, l, l])?
                .f_expand([b, 1, l, l], false)?
        }
        AttentionPattern::Masked(mask) => mask,
    };
    let visible = Tensor::f_ones([b, 1, l, prefix], (Kind::Bool, device))?;
    Ok(AttentionPattern::Masked(Tensor::f_cat(
        &[&visible, &base],
        3,
    )?))
}

/// Checks that every named 1-D index tensor lies in `0..bound`, reading all their minima and
/// maxima to the host in one transfer (one synchronisation, however many tensors).
pub fn check_indices(checks: &[(&str, &Tensor, i64)]) -> Result<(), TchError> {
    let present: Vec<&(&str, &Tensor, i64)> = checks.iter().filter(|c| c.1.numel() > 0).collect();
    if present.is_empty() {
        return Ok(());
    }
    let mut extremes = Vec::with_capacity(2 * present.len());
    for (_, values, _) in &present {
        extremes.push(values.f_min()?.f_to_kind(Kind::Int64)?);
        extremes.push(values.f_max()?.f_to_kind(Kind::Int64)?);
    }
    let host = Tensor::f_stack(&extremes, 0)?.f_to_device(Device::Cpu)?;
    for (i, (name, _, bound)) in present.iter().enumerate() {
        let min = host.f_int64_value(&[2 * i as i64])?;
        let max = host.f_int64_value(&[2 * i as i64 + 1])?;
        if min < 0 || max >= *bound {
            return Err(TchError::Shape(format!(
                "{name} span {min}..={max}, outside 0..{bound}"
            )));
        }
    }
    Ok(())
}

/// Hidden states `[B, L, H]` at one position per row -> `[B, H]`.
pub fn gather_positions(hidden: &Tensor, positions: &Tensor) -> Result<Tensor, TchError> {
    let l = hidden.size().get(1).copied().unwrap_or(0);
    check_indices(&[("positions", positions, l)])?;
    gather_checked_positions(hidden, positions)
}

/// [`gather_positions`] for positions already checked to lie in `0..L` ([`check_indices`]):
/// only the shapes are checked here (on the host).
pub fn gather_checked_positions(hidden: &Tensor, positions: &Tensor) -> Result<Tensor, TchError> {
    let size = hidden.size();
    let (b, h) = (size[0], size[2]);
    let pos = positions.size();
    if pos != [b] {
        return Err(TchError::Shape(format!("positions {pos:?} must be [{b}]")));
    }
    let index = positions
        .f_to_kind(Kind::Int64)?
        .f_view([b, 1, 1])?
        .f_expand([b, 1, h], false)?;
    hidden.f_gather(1, &index, false)?.f_squeeze_dim(1)
}

/// Logits of selected rows of an output matrix: `hidden [B, H]`, `matrix [V, H]`,
/// `rows [n]` -> `[B, n]` (+ the matching entries of `bias`). The callers (`Model::head`,
/// `Model::label_word_logits`) check that `rows` lie in `0..V` ([`check_indices`]) first; here
/// only the shape is checked.
pub fn project_rows(
    hidden: &Tensor,
    matrix: &Tensor,
    bias: Option<&Tensor>,
    rows: &Tensor,
) -> Result<Tensor, TchError> {
    let n = rows.size();
    if n.len() != 1 {
        return Err(TchError::Shape(format!("label_word_ids {n:?} must be 1-D")));
    }
    let y = replicas::select_rows(hidden, matrix, bias, rows)?;
    tape::push(&[Some(matrix), bias], || LayerRecord::Rows {
        matrix: matrix.shallow_clone(),
        bias: bias.map(Tensor::shallow_clone),
        rows: rows.shallow_clone(),
        input: hidden.shallow_clone(),
        output: y.shallow_clone(),
    });
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The unpadded pattern (SDPA's own causal flag, no mask tensor) attends exactly like the
    /// explicit boolean mask of an all-ones padding mask, bidirectional and causal; a padded
    /// batch keeps the explicit mask.
    #[test]
    fn unpadded_pattern_matches_the_explicit_mask() {
        tch::manual_seed(7);
        let (b, heads, l, d) = (2, 3, 5, 4);
        let q = Tensor::randn([b, heads, l, d], (Kind::Float, Device::Cpu));
        let k = Tensor::randn([b, heads, l, d], (Kind::Float, Device::Cpu));
        let v = Tensor::randn([b, heads, l, d], (Kind::Float, Device::Cpu));
        let ones = Tensor::ones([b, l], (Kind::Int64, Device::Cpu));
        let layout = TokenLayout::for_mask(&ones).unwrap();
        assert!(matches!(layout, TokenLayout::Unpadded));
        for causal in [false, true] {
            let pattern = layout.attention_pattern(&ones, causal).unwrap();
            assert!(matches!(pattern, AttentionPattern::Unpadded { causal: c } if c == causal));
            let explicit = AttentionPattern::Masked(attention_bool_mask(&ones, causal).unwrap());
            let a = fused_attention(&q, &k, &v, &pattern).unwrap();
            let e = fused_attention(&q, &k, &v, &explicit).unwrap();
            let diff = (a - e).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "causal {causal}: max diff {diff:e}");
        }
        let padded = Tensor::from_slice(&[1i64, 1, 1, 0, 0, 1, 1, 1, 1, 1]).view([b, l]);
        for layout in [
            TokenLayout::for_mask(&padded).unwrap(),
            with_padded_layout(|| TokenLayout::for_mask(&padded)).unwrap(),
        ] {
            assert!(matches!(
                layout.attention_pattern(&padded, true).unwrap(),
                AttentionPattern::Masked(_)
            ));
        }
    }
}
