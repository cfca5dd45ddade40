//! RoBERTa with its MLM head (Liu et al. 2019), as transformers' `RobertaForMaskedLM` computes it:
//! learned positions offset by `padding_idx`, post-LN blocks, exact (erf) GELU, and an LM head
//! `dense -> gelu -> LayerNorm -> decoder` whose decoder is tied to the word embeddings.

use super::adapters::AttentionSite;
use super::config::RobertaConfig;
use super::layers::{
    batch_dims, embedding, fused_attention, merge_heads, prefix_pattern, with_prefix, LayerNorm,
    Linear, ParamFactory, Prefix, TokenLayout,
};
use super::tape;
use tch::{nn, Kind, TchError, Tensor};

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
    prefix: Option<Prefix>,
}

/// RoBERTa encoder + MLM head. Parameter names are those of a `RobertaForMaskedLM` checkpoint
/// without the `roberta.` prefix (`embeddings.*`, `encoder.layer.N.*`, `lm_head.*`).
pub struct Roberta {
    config: RobertaConfig,
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    token_type_embeddings: Tensor,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
    head_dense: Linear,
    head_norm: LayerNorm,
    head_bias: Tensor,
}

impl Roberta {
    /// Create the parameters under `root`.
    pub fn new(
        config: &RobertaConfig,
        root: &nn::Path,
        f: &ParamFactory,
    ) -> Result<Self, TchError> {
        let h = config.hidden_size;
        let eps = config.layer_norm_eps;
        let emb = root.sub("embeddings");
        let word_embeddings = f.matrix(
            &emb.sub("word_embeddings"),
            "weight",
            &[config.vocab_size, h],
        )?;
        let position_embeddings = f.matrix(
            &emb.sub("position_embeddings"),
            "weight",
            &[config.max_position_embeddings, h],
        )?;
        let token_type_embeddings = f.matrix(
            &emb.sub("token_type_embeddings"),
            "weight",
            &[config.type_vocab_size, h],
        )?;
        let embeddings_norm = LayerNorm::new(f, &emb.sub("LayerNorm"), h, eps)?;
        let mut layers = Vec::new();
        for i in 0..config.num_hidden_layers {
            let p = root.sub("encoder").sub("layer").sub(i);
            let att = p.sub("attention");
            let selfp = att.sub("self");
            layers.push(Layer {
                query: Linear::new(f, &selfp.sub("query"), h, h, true)?,
                key: Linear::new(f, &selfp.sub("key"), h, h, true)?,
                value: Linear::new(f, &selfp.sub("value"), h, h, true)?,
                attention_out: Linear::new(f, &att.sub("output").sub("dense"), h, h, true)?,
                attention_norm: LayerNorm::new(f, &att.sub("output").sub("LayerNorm"), h, eps)?,
                intermediate: Linear::new(
                    f,
                    &p.sub("intermediate").sub("dense"),
                    h,
                    config.intermediate_size,
                    true,
                )?,
                output: Linear::new(
                    f,
                    &p.sub("output").sub("dense"),
                    config.intermediate_size,
                    h,
                    true,
                )?,
                output_norm: LayerNorm::new(f, &p.sub("output").sub("LayerNorm"), h, eps)?,
                prefix: None,
            });
        }
        let head = root.sub("lm_head");
        Ok(Self {
            config: config.clone(),
            word_embeddings,
            position_embeddings,
            token_type_embeddings,
            embeddings_norm,
            layers,
            head_dense: Linear::new(f, &head.sub("dense"), h, h, true)?,
            head_norm: LayerNorm::new(f, &head.sub("layer_norm"), h, eps)?,
            head_bias: f.bias(&head, "bias", &[config.vocab_size])?,
        })
    }

    /// Encoder output `[B, L, H]` (before the MLM head).
    pub fn hidden_states(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<Tensor, TchError> {
        let (b, l) = batch_dims(input_ids, attention_mask)?;
        let pad = self.config.pad_token_id;
        // Positions count real tokens from padding_idx + 1; padding keeps padding_idx
        // (transformers' `create_position_ids_from_input_ids`).
        let not_pad = input_ids.f_ne(pad)?.f_to_kind(Kind::Int64)?;
        let position_ids = (not_pad.f_cumsum(1, Kind::Int64)? * &not_pad) + pad;
        // Position ids are at most pad + L: only batches that could overflow the table pay a
        // device-to-host read for the exact check.
        let max = if pad + l < self.config.max_position_embeddings {
            pad + l
        } else {
            position_ids.f_max()?.f_int64_value(&[])?
        };
        if max >= self.config.max_position_embeddings {
            return Err(TchError::Shape(format!(
                "sequence needs position id {max}, beyond max_position_embeddings {}",
                self.config.max_position_embeddings
            )));
        }
        let words = embedding(&self.word_embeddings, input_ids)?;
        let positions = embedding(&self.position_embeddings, &position_ids)?;
        // Every token has type 0 (a lookup, so that the row's use is recorded per token).
        let token_type = embedding(&self.token_type_embeddings, &input_ids.f_zeros_like()?)?;
        // Token rows in `layout`; attention runs on `[B, L, ·]` (TokenLayout).
        let layout = TokenLayout::for_mask(attention_mask)?;
        let mut x = layout.pack(
            &self
                .embeddings_norm
                .forward(&(words + positions + token_type))?,
        )?;
        let _packed_layers = layout.region();
        let mask = layout.attention_pattern(attention_mask, false)?;
        let prefix = self.layers.first().and_then(|l| l.prefix.as_ref());
        let mask = prefix_pattern(mask, prefix.map_or(0, Prefix::len), b, l, x.device())?;
        let heads = self.config.num_attention_heads;
        for layer in &self.layers {
            let (q, k, v) = layout.attention_heads(
                &x,
                [&layer.query, &layer.key, &layer.value],
                heads,
                heads,
            )?;
            let (k, v) = with_prefix(layer.prefix.as_ref(), k, v)?;
            let attended = layout.pack(&merge_heads(&fused_attention(&q, &k, &v, &mask)?)?)?;
            x = layer
                .attention_norm
                .forward(&(layer.attention_out.forward(&attended)? + &x))?;
            let inner = layer.intermediate.forward(&x)?.f_gelu("none")?;
            x = layer
                .output_norm
                .forward(&(layer.output.forward(&inner)? + &x))?;
        }
        let x = layout.unpack(&x)?;
        debug_assert_eq!(x.size(), [b, l, self.config.hidden_size]);
        Ok(x)
    }

    /// The attention blocks, for attaching adapters (names as in the var store).
    pub(crate) fn attention_sites(&mut self) -> Vec<AttentionSite<'_>> {
        self.layers
            .iter_mut()
            .enumerate()
            .map(|(i, layer)| AttentionSite {
                path: format!("encoder.layer.{i}.attention"),
                query: ("self.query", &mut layer.query),
                key: ("self.key", &mut layer.key),
                value: ("self.value", &mut layer.value),
                prefix: &mut layer.prefix,
            })
            .collect()
    }

    /// MLM head on hidden states `[..., H]`: all vocabulary logits, or only `rows`.
    pub fn head(&self, hidden: &Tensor, rows: Option<&Tensor>) -> Result<Tensor, TchError> {
        let transformed = self
            .head_norm
            .forward(&self.head_dense.forward(hidden)?.f_gelu("none")?)?;
        match rows {
            Some(rows) => super::layers::project_rows(
                &transformed,
                &self.word_embeddings,
                Some(&self.head_bias),
                rows,
            ),
            None if tape::is_recording() => super::layers::project_rows(
                &transformed,
                &self.word_embeddings,
                Some(&self.head_bias),
                &Tensor::f_arange(self.config.vocab_size, (Kind::Int64, hidden.device()))?,
            ),
            None => {
                super::replicas::linear(&transformed, &self.word_embeddings, Some(&self.head_bias))
            }
        }
    }
}
