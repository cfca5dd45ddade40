//! Llama (Touvron et al. 2023) as transformers' `LlamaForCausalLM` computes it: RMSNorm, RoPE in
//! the rotate-half layout, grouped-query attention, SwiGLU MLP, tied or untied LM head.

use super::adapters::AttentionSite;
use super::config::LlamaConfig;
use super::layers::{
    batch_dims, embedding, fused_attention, merge_heads, prefix_pattern, split_heads, with_prefix,
    Linear, ParamFactory, Prefix, RmsNorm, TokenLayout,
};
use super::tape;
use tch::{nn, Kind, TchError, Tensor};

struct Layer {
    input_layernorm: RmsNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    post_attention_layernorm: RmsNorm,
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
    prefix: Option<Prefix>,
}

/// Llama decoder + LM head. Parameter names are those of a `LlamaForCausalLM` checkpoint
/// without the `model.` prefix (`embed_tokens.weight`, `layers.N.*`, `norm.weight`), plus
/// `lm_head.weight` when the head is untied.
pub struct Llama {
    config: LlamaConfig,
    embed_tokens: Tensor,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Option<Tensor>,
    /// `1 / base^(2i / head_dim)`, f32, `[head_dim / 2]`.
    inverse_frequencies: Tensor,
}

impl Llama {
    /// Create the parameters under `root`.
    pub fn new(config: &LlamaConfig, root: &nn::Path, f: &ParamFactory) -> Result<Self, TchError> {
        let h = config.hidden_size;
        let d = config.head_width();
        let q_width = config.num_attention_heads * d;
        let kv_width = config.kv_heads() * d;
        let eps = config.rms_norm_eps;
        let (attn_bias, mlp_bias) = (config.attention_bias, config.mlp_bias);
        let embed_tokens =
            f.matrix(&root.sub("embed_tokens"), "weight", &[config.vocab_size, h])?;
        let mut layers = Vec::new();
        for i in 0..config.num_hidden_layers {
            let p = root.sub("layers").sub(i);
            let att = p.sub("self_attn");
            let mlp = p.sub("mlp");
            let inter = config.intermediate_size;
            layers.push(Layer {
                input_layernorm: RmsNorm::new(f, &p.sub("input_layernorm"), h, eps)?,
                q_proj: Linear::new(f, &att.sub("q_proj"), h, q_width, attn_bias)?,
                k_proj: Linear::new(f, &att.sub("k_proj"), h, kv_width, attn_bias)?,
                v_proj: Linear::new(f, &att.sub("v_proj"), h, kv_width, attn_bias)?,
                o_proj: Linear::new(f, &att.sub("o_proj"), q_width, h, attn_bias)?,
                post_attention_layernorm: RmsNorm::new(
                    f,
                    &p.sub("post_attention_layernorm"),
                    h,
                    eps,
                )?,
                gate_proj: Linear::new(f, &mlp.sub("gate_proj"), h, inter, mlp_bias)?,
                up_proj: Linear::new(f, &mlp.sub("up_proj"), h, inter, mlp_bias)?,
                down_proj: Linear::new(f, &mlp.sub("down_proj"), inter, h, mlp_bias)?,
                prefix: None,
            });
        }
        let norm = RmsNorm::new(f, &root.sub("norm"), h, eps)?;
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(f.matrix(&root.sub("lm_head"), "weight", &[config.vocab_size, h])?)
        };
        // transformers' default RoPE: inv_freq = 1 / base^(arange(0, d, 2) / d), in f32.
        let exponents = Tensor::f_arange_start_step(0, d, 2, (Kind::Float, f.device))? / (d as f64);
        let inverse_frequencies =
            Tensor::f_full([d / 2], config.rope_base(), (Kind::Float, f.device))?
                .f_pow(&exponents)?
                .f_reciprocal()?;
        Ok(Self {
            config: config.clone(),
            embed_tokens,
            layers,
            norm,
            lm_head,
            inverse_frequencies,
        })
    }

    /// `(cos, signed sin)`, each `[B, 1, L, head_dim]` in `kind`, for positions counted over the
    /// mask from `offset` (at the first real token; RoPE is relative, so real tokens see the same
    /// angle differences whatever the padding side). A prefix of `P` cached positions puts the
    /// first real token at `offset = P`, as transformers does after `P` past key/values. The sine's
    /// first half is negated, as [`rotate`] takes it.
    fn rotary_tables(
        &self,
        attention_mask: &Tensor,
        kind: Kind,
        offset: i64,
    ) -> Result<(Tensor, Tensor), TchError> {
        let mask64 = attention_mask.f_to_kind(Kind::Int64)?;
        let positions = (mask64.f_cumsum(1, Kind::Int64)? - 1).f_clamp_min(0)? + offset;
        let angles = positions
            .f_to_kind(Kind::Float)?
            .f_unsqueeze(-1)?
            .f_mul(&self.inverse_frequencies)?;
        let sin = angles.f_sin()?;
        let signed_sin = Tensor::f_cat(&[&sin.f_neg()?, &sin], -1)?.f_unsqueeze(1)?;
        let cos = Tensor::f_cat(&[&angles, &angles], -1)?
            .f_unsqueeze(1)?
            .f_cos()?;
        Ok((cos.f_to_kind(kind)?, signed_sin.f_to_kind(kind)?))
    }

    /// Decoder output `[B, L, H]` after the final RMSNorm.
    pub fn hidden_states(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<Tensor, TchError> {
        let (b, l) = batch_dims(input_ids, attention_mask)?;
        let layout = TokenLayout::for_mask(attention_mask)?;
        let embedded = embedding(&self.embed_tokens, input_ids)?;
        let prefix_len = self
            .layers
            .first()
            .and_then(|l| l.prefix.as_ref())
            .map_or(0, Prefix::len);
        let (cos, sin) = self.rotary_tables(attention_mask, embedded.kind(), prefix_len)?;
        let mask = layout.attention_pattern(attention_mask, true)?;
        let mask = prefix_pattern(mask, prefix_len, b, l, embedded.device())?;
        // Token rows in `layout`; attention runs on `[B, L, ·]` (TokenLayout).
        let mut x = layout.pack(&embedded)?;
        let _packed_layers = layout.region();
        let heads = self.config.num_attention_heads;
        let kv_heads = self.config.kv_heads();
        let group = heads / kv_heads;
        for layer in &self.layers {
            let normed = layer.input_layernorm.forward(&x)?;
            let (q, k, v) = layout.attention_heads(
                &normed,
                [&layer.q_proj, &layer.k_proj, &layer.v_proj],
                heads,
                kv_heads,
            )?;
            let (q, k) = (rotate(&q, &cos, &sin)?, rotate(&k, &cos, &sin)?);
            let (k, v) = with_prefix(layer.prefix.as_ref(), k, v)?;
            let (k, v) = (repeat_kv(&k, group)?, repeat_kv(&v, group)?);
            let attended = layout.pack(&merge_heads(&fused_attention(&q, &k, &v, &mask)?)?)?;
            x = x + layer.o_proj.forward(&attended)?;
            let normed = layer.post_attention_layernorm.forward(&x)?;
            let gated =
                layer.gate_proj.forward(&normed)?.f_silu()? * layer.up_proj.forward(&normed)?;
            x = x + layer.down_proj.forward(&gated)?;
        }
        layout.unpack(&self.norm.forward(&x)?)
    }

    /// The attention blocks, for attaching adapters (names as in the var store).
    pub(crate) fn attention_sites(&mut self) -> Vec<AttentionSite<'_>> {
        self.layers
            .iter_mut()
            .enumerate()
            .map(|(i, layer)| AttentionSite {
                path: format!("layers.{i}.self_attn"),
                query: ("q_proj", &mut layer.q_proj),
                key: ("k_proj", &mut layer.k_proj),
                value: ("v_proj", &mut layer.v_proj),
                prefix: &mut layer.prefix,
            })
            .collect()
    }

    /// Key projections `[1, P, kv_width]` of a `P`-token sequence as the attention uses them:
    /// rotated at positions `0..P` (what transformers caches as past keys).
    pub(crate) fn rotate_leading_keys(&self, keys: &Tensor) -> Result<Tensor, TchError> {
        let p = keys.size()[1];
        let ones = Tensor::f_ones([1, p], (Kind::Int64, keys.device()))?;
        let (cos, sin) = self.rotary_tables(&ones, keys.kind(), 0)?;
        merge_heads(&rotate(
            &split_heads(keys, self.config.kv_heads())?,
            &cos,
            &sin,
        )?)
    }

    /// LM head on hidden states `[..., H]`: all vocabulary logits, or only `rows`.
    pub fn head(&self, hidden: &Tensor, rows: Option<&Tensor>) -> Result<Tensor, TchError> {
        let matrix = self.lm_head.as_ref().unwrap_or(&self.embed_tokens);
        match rows {
            Some(rows) => super::layers::project_rows(hidden, matrix, None, rows),
            None if tape::is_recording() => super::layers::project_rows(
                hidden,
                matrix,
                None,
                &Tensor::f_arange(self.config.vocab_size, (Kind::Int64, hidden.device()))?,
            ),
            None => super::replicas::linear(hidden, matrix, None),
        }
    }
}

/// `x * cos + rotate_half(x) * sin`, with `rotate_half([a, b]) = [-b, a]` over the last dim,
/// computed as `x * cos + [b, a] * signed_sin` (`[b, a]` a roll by half the width; `signed_sin =
/// [-sin, sin]` halves, from [`Llama::rotary_tables`]): three kernels instead of five.
fn rotate(x: &Tensor, cos: &Tensor, signed_sin: &Tensor) -> Result<Tensor, TchError> {
    let half = x.size()[3] / 2;
    x.f_mul(cos)?.f_addcmul(&x.f_roll([half], [3])?, signed_sin)
}

/// `[B, kv, L, d]` -> `[B, kv * group, L, d]`, query head `h` reading kv head `h / group`.
fn repeat_kv(x: &Tensor, group: i64) -> Result<Tensor, TchError> {
    if group == 1 {
        return Ok(x.shallow_clone());
    }
    let s = x.size();
    x.f_unsqueeze(2)?
        .f_expand([s[0], s[1], group, s[2], s[3]], false)?
        .f_reshape([s[0], s[1] * group, s[2], s[3]])
}
