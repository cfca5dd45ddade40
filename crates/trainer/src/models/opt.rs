//! OPT (Zhang et al. 2022) as transformers' `OPTForCausalLM` computes it: learned positions with
//! an offset of 2 counted over the attention mask, pre-LN blocks (post-LN when
//! `do_layer_norm_before` is false, as in opt-350m), ReLU, causal attention, optional
//! `project_in`/`project_out` when `word_embed_proj_dim != hidden_size`, LM head tied to
//! `embed_tokens`.

use super::adapters::AttentionSite;
use super::config::OptConfig;
use super::layers::{
    batch_dims, embedding, fused_attention, merge_heads, prefix_pattern, with_prefix, LayerNorm,
    Linear, ParamFactory, Prefix, TokenLayout,
};
use super::tape;
use tch::{nn, Kind, TchError, Tensor};

/// OPT's learned positions are stored shifted by 2 (transformers' `OPTLearnedPositionalEmbedding`).
const POSITION_OFFSET: i64 = 2;
/// `nn.LayerNorm`'s default epsilon, which OPT uses everywhere.
const LAYER_NORM_EPS: f64 = 1e-5;

struct Layer {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    self_attn_layer_norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    final_layer_norm: LayerNorm,
    prefix: Option<Prefix>,
}

/// OPT decoder + tied LM head. Parameter names are those of an `OPTForCausalLM` checkpoint
/// without the `model.` prefix (`decoder.*`).
pub struct Opt {
    config: OptConfig,
    embed_tokens: Tensor,
    embed_positions: Tensor,
    project_in: Option<Linear>,
    project_out: Option<Linear>,
    final_layer_norm: Option<LayerNorm>,
    layers: Vec<Layer>,
}

impl Opt {
    /// Create the parameters under `root`.
    pub fn new(config: &OptConfig, root: &nn::Path, f: &ParamFactory) -> Result<Self, TchError> {
        let h = config.hidden_size;
        let e = config.embed_dim();
        let bias = config.enable_bias;
        let dec = root.sub("decoder");
        let embed_tokens = f.matrix(&dec.sub("embed_tokens"), "weight", &[config.vocab_size, e])?;
        let embed_positions = f.matrix(
            &dec.sub("embed_positions"),
            "weight",
            &[config.max_position_embeddings + POSITION_OFFSET, h],
        )?;
        let (project_in, project_out) = if e != h {
            (
                Some(Linear::new(f, &dec.sub("project_in"), e, h, false)?),
                Some(Linear::new(f, &dec.sub("project_out"), h, e, false)?),
            )
        } else {
            (None, None)
        };
        let final_layer_norm = if config.has_final_layer_norm() {
            Some(LayerNorm::new(
                f,
                &dec.sub("final_layer_norm"),
                h,
                LAYER_NORM_EPS,
            )?)
        } else {
            None
        };
        let mut layers = Vec::new();
        for i in 0..config.num_hidden_layers {
            let p = dec.sub("layers").sub(i);
            let att = p.sub("self_attn");
            layers.push(Layer {
                q_proj: Linear::new(f, &att.sub("q_proj"), h, h, bias)?,
                k_proj: Linear::new(f, &att.sub("k_proj"), h, h, bias)?,
                v_proj: Linear::new(f, &att.sub("v_proj"), h, h, bias)?,
                out_proj: Linear::new(f, &att.sub("out_proj"), h, h, bias)?,
                self_attn_layer_norm: LayerNorm::new(
                    f,
                    &p.sub("self_attn_layer_norm"),
                    h,
                    LAYER_NORM_EPS,
                )?,
                fc1: Linear::new(f, &p.sub("fc1"), h, config.ffn_dim, bias)?,
                fc2: Linear::new(f, &p.sub("fc2"), config.ffn_dim, h, bias)?,
                final_layer_norm: LayerNorm::new(f, &p.sub("final_layer_norm"), h, LAYER_NORM_EPS)?,
                prefix: None,
            });
        }
        Ok(Self {
            config: config.clone(),
            embed_tokens,
            embed_positions,
            project_in,
            project_out,
            final_layer_norm,
            layers,
        })
    }

    fn activation(&self, x: &Tensor) -> Result<Tensor, TchError> {
        match self.config.activation_function.as_str() {
            "gelu" => x.f_gelu("none"),
            _ => x.f_relu(),
        }
    }

    /// Decoder output `[B, L, hidden_size]` after the final LayerNorm (before `project_out`).
    pub fn hidden_states(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<Tensor, TchError> {
        let (b, l) = batch_dims(input_ids, attention_mask)?;
        let mask64 = attention_mask.f_to_kind(Kind::Int64)?;
        // Position of a real token = (number of real tokens up to it) - 1; padding gets -1.
        let position_ids = (mask64.f_cumsum(1, Kind::Int64)? * &mask64) - 1 + POSITION_OFFSET;
        // A row of L tokens needs at most L positions: only longer-than-table batches pay a
        // device-to-host read for the exact check.
        let max = if l <= self.config.max_position_embeddings {
            0
        } else {
            position_ids.f_max()?.f_int64_value(&[])?
        };
        if max >= self.config.max_position_embeddings + POSITION_OFFSET {
            return Err(TchError::Shape(format!(
                "sequence needs {} positions, beyond max_position_embeddings {}",
                max - POSITION_OFFSET + 1,
                self.config.max_position_embeddings
            )));
        }
        let mut x = embedding(&self.embed_tokens, input_ids)?;
        if let Some(project_in) = &self.project_in {
            x = project_in.forward(&x)?;
        }
        x = x + embedding(&self.embed_positions, &position_ids)?;
        // Token rows in `layout`; attention runs on `[B, L, ·]` (TokenLayout).
        let layout = TokenLayout::for_mask(attention_mask)?;
        let mut x = layout.pack(&x)?;
        let _packed_layers = layout.region();
        let mask = layout.attention_pattern(attention_mask, true)?;
        let prefix = self.layers.first().and_then(|l| l.prefix.as_ref());
        let mask = prefix_pattern(mask, prefix.map_or(0, Prefix::len), b, l, x.device())?;
        let heads = self.config.num_attention_heads;
        let pre_ln = self.config.do_layer_norm_before;
        for layer in &self.layers {
            let residual = x.shallow_clone();
            let normed = if pre_ln {
                layer.self_attn_layer_norm.forward(&x)?
            } else {
                x
            };
            let (q, k, v) = layout.attention_heads(
                &normed,
                [&layer.q_proj, &layer.k_proj, &layer.v_proj],
                heads,
                heads,
            )?;
            let (k, v) = with_prefix(layer.prefix.as_ref(), k, v)?;
            let attended = layout.pack(&merge_heads(&fused_attention(&q, &k, &v, &mask)?)?)?;
            x = residual + layer.out_proj.forward(&attended)?;
            if !pre_ln {
                x = layer.self_attn_layer_norm.forward(&x)?;
            }
            let residual = x.shallow_clone();
            let normed = if pre_ln {
                layer.final_layer_norm.forward(&x)?
            } else {
                x
            };
            let inner = self.activation(&layer.fc1.forward(&normed)?)?;
            x = residual + layer.fc2.forward(&inner)?;
            if !pre_ln {
                x = layer.final_layer_norm.forward(&x)?;
            }
        }
        if let Some(norm) = &self.final_layer_norm {
            x = norm.forward(&x)?;
        }
        layout.unpack(&x)
    }

    /// The attention blocks, for attaching adapters (names as in the var store).
    pub(crate) fn attention_sites(&mut self) -> Vec<AttentionSite<'_>> {
        self.layers
            .iter_mut()
            .enumerate()
            .map(|(i, layer)| AttentionSite {
                path: format!("decoder.layers.{i}.self_attn"),
                query: ("q_proj", &mut layer.q_proj),
                key: ("k_proj", &mut layer.k_proj),
                value: ("v_proj", &mut layer.v_proj),
                prefix: &mut layer.prefix,
            })
            .collect()
    }

    /// LM head on hidden states `[..., hidden_size]`: `project_out` if any, then the tied
    /// embedding, for all vocabulary rows or only `rows`.
    pub fn head(&self, hidden: &Tensor, rows: Option<&Tensor>) -> Result<Tensor, TchError> {
        let projected = match &self.project_out {
            Some(p) => p.forward(hidden)?,
            None => hidden.shallow_clone(),
        };
        match rows {
            Some(rows) => super::layers::project_rows(&projected, &self.embed_tokens, None, rows),
            None if tape::is_recording() => super::layers::project_rows(
                &projected,
                &self.embed_tokens,
                None,
                &Tensor::f_arange(self.config.vocab_size, (Kind::Int64, hidden.device()))?,
            ),
            None => super::replicas::linear(&projected, &self.embed_tokens, None),
        }
    }
}
