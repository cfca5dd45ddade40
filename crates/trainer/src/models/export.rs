//! Writing a model in the Hugging Face layout (`config.json`, `model.safetensors`, optionally
//! `tokenizer.json`), e.g. to turn the SmolLM2 GGUF into a checkpoint directory.

use super::config::ModelConfig;
use super::error::{ModelError, Result};
use super::Model;
use crate::model::LabelWordModel;
use std::collections::HashMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// A tensor's bytes in the form the `safetensors` writer takes.
struct Bytes {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl safetensors::View for &Bytes {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// The checkpoint name of a parameter (transformers' `*ForMaskedLM` / `*ForCausalLM` prefixes).
pub fn checkpoint_name(config: &ModelConfig, parameter: &str) -> String {
    match config {
        ModelConfig::Roberta(_) if !parameter.starts_with("lm_head.") => {
            format!("roberta.{parameter}")
        }
        ModelConfig::Opt(_) => format!("model.{parameter}"),
        ModelConfig::Llama(_) if !parameter.starts_with("lm_head.") => format!("model.{parameter}"),
        _ => parameter.to_string(),
    }
}

fn config_json(config: &ModelConfig, kind: Kind) -> Result<serde_json::Value> {
    let (mut value, architecture) = match config {
        ModelConfig::Roberta(c) => (serde_json::to_value(c), "RobertaForMaskedLM"),
        ModelConfig::Opt(c) => (serde_json::to_value(c), "OPTForCausalLM"),
        ModelConfig::Llama(c) => (serde_json::to_value(c), "LlamaForCausalLM"),
    };
    let value = value
        .as_mut()
        .map_err(|e| ModelError::BadInput(format!("config does not serialise: {e}")))?
        .as_object_mut()
        .ok_or_else(|| ModelError::BadInput("config is not a JSON object".into()))?;
    value.retain(|_, v| !v.is_null());
    value.insert("model_type".into(), config.model_type().into());
    value.insert("architectures".into(), serde_json::json!([architecture]));
    let dtype = match kind {
        Kind::Half => "float16",
        Kind::BFloat16 => "bfloat16",
        _ => "float32",
    };
    value.insert("torch_dtype".into(), dtype.into());
    if let ModelConfig::Opt(c) = config {
        value.insert("word_embed_proj_dim".into(), c.embed_dim().into());
    }
    Ok(serde_json::Value::Object(value.clone()))
}

/// Write `model` to `dir` in the Hugging Face layout with its current dtype, plus
/// `tokenizer.json` and `tokenizer_config.json` (its special tokens) when given. Tied matrices
/// are written once, as transformers does. Each file is written atomically.
pub fn export_hf(
    model: &Model,
    dir: &Path,
    tokenizer: Option<(&serde_json::Value, &serde_json::Value)>,
) -> Result<()> {
    if let Some(adapter) = model.adapter() {
        return Err(ModelError::BadInput(format!(
            "the model carries an adapter ({adapter:?}): export the adapter (export_peft_lora), \
             not the base with adapter tensors mixed in"
        )));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ModelError::Io {
            path: path.clone(),
            source,
        }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let config = config_json(model.config(), model.kind())?;
    let config_path = dir.join("config.json");
    atomic_file::write(
        &config_path,
        serde_json::to_string_pretty(&config).unwrap_or_default(),
    )
    .map_err(io(&config_path))?;
    if let Some((tokenizer, special)) = tokenizer {
        let path = dir.join("tokenizer.json");
        atomic_file::write(&path, tokenizer.to_string()).map_err(io(&path))?;
        let path = dir.join("tokenizer_config.json");
        atomic_file::write(
            &path,
            serde_json::to_string_pretty(special).unwrap_or_default(),
        )
        .map_err(io(&path))?;
    }
    let named: Vec<(String, Tensor)> = model
        .var_store()
        .variables()
        .into_iter()
        .map(|(name, tensor)| (checkpoint_name(model.config(), &name), tensor))
        .collect();
    write_safetensors(&dir.join("model.safetensors"), named)
}

/// Writes `tensors` (moved to the CPU, sorted by name) as one safetensors file, atomically.
fn write_safetensors(path: &Path, named: Vec<(String, Tensor)>) -> Result<()> {
    let mut tensors: Vec<(String, Bytes)> = Vec::new();
    for (name, tensor) in named {
        let cpu: Tensor = tensor.f_to_device(Device::Cpu)?.f_contiguous()?;
        let (dtype, width) = match cpu.kind() {
            Kind::Float => (safetensors::Dtype::F32, 4),
            Kind::Half => (safetensors::Dtype::F16, 2),
            Kind::BFloat16 => (safetensors::Dtype::BF16, 2),
            other => {
                return Err(ModelError::BadInput(format!(
                    "{name}: dtype {other:?} not exportable"
                )))
            }
        };
        let count = cpu.numel();
        let mut data = vec![0u8; count * width];
        cpu.f_copy_data_u8(&mut data, count)?;
        let shape = cpu.size().iter().map(|&d| d as usize).collect();
        tensors.push((name, Bytes { dtype, shape, data }));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let metadata: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let bytes = safetensors::serialize(tensors.iter().map(|(n, b)| (n.clone(), b)), Some(metadata))
        .map_err(|e| ModelError::Safetensors {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    atomic_file::write(path, bytes).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Write a model's LoRA adapter in PEFT's layout (huggingface/peft, "PEFT checkpoint format"):
/// `adapter_model.safetensors` with keys `base_model.model.<transformers module path>.lora_A.weight`
/// / `lora_B.weight` (`[r, in]`, `[out, r]`), and `adapter_config.json` (`peft_type` LORA, `r`,
/// `lora_alpha`, `target_modules`, no dropout, no bias). `base_model` names the base checkpoint
/// (`base_model_name_or_path`). Each file is written atomically.
///
/// # Errors
/// A model without a LoRA adapter, or an I/O failure.
pub fn export_peft_lora(model: &Model, dir: &Path, base_model: Option<&str>) -> Result<()> {
    let Some(super::adapters::AdapterConfig::Lora {
        rank,
        alpha,
        targets,
    }) = model.adapter()
    else {
        return Err(ModelError::BadInput(format!(
            "PEFT LoRA export needs a model with a LoRA adapter, this one has {:?}",
            model.adapter()
        )));
    };
    let named: Vec<(String, Tensor)> = model
        .var_store()
        .variables()
        .into_iter()
        .filter(|(name, _)| name.ends_with(".lora_A.weight") || name.ends_with(".lora_B.weight"))
        .map(|(name, tensor)| {
            let key = format!(
                "base_model.model.{}",
                checkpoint_name(model.config(), &name)
            );
            (key, tensor)
        })
        .collect();
    // transformers' module names of the targeted projections.
    let target_modules: Vec<&str> = targets
        .iter()
        .map(|t| {
            use super::adapters::LoraTarget::*;
            match (model.config(), t) {
                (ModelConfig::Roberta(_), Query) => "query",
                (ModelConfig::Roberta(_), Key) => "key",
                (ModelConfig::Roberta(_), Value) => "value",
                (_, Query) => "q_proj",
                (_, Key) => "k_proj",
                (_, Value) => "v_proj",
            }
        })
        .collect();
    let config = serde_json::json!({
        "peft_type": "LORA",
        "base_model_name_or_path": base_model,
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "target_modules": target_modules,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "modules_to_save": null,
        "task_type": null,
    });
    std::fs::create_dir_all(dir).map_err(|source| ModelError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let config_path = dir.join("adapter_config.json");
    atomic_file::write(
        &config_path,
        serde_json::to_string_pretty(&config).unwrap_or_default(),
    )
    .map_err(|source| ModelError::Io {
        path: config_path.clone(),
        source,
    })?;
    write_safetensors(&dir.join("adapter_model.safetensors"), named)
}

/// Convert a Llama GGUF file into a Hugging Face checkpoint directory in `kind`
/// (config.json, model.safetensors, tokenizer.json rebuilt from the GGUF vocabulary).
pub fn export_gguf_to_hf(gguf_path: &Path, dir: &Path, kind: Kind) -> Result<()> {
    let model = super::gguf::load_gguf_model(gguf_path, kind, Device::Cpu)?;
    let file = super::gguf::GgufFile::open(gguf_path)?;
    let tokenizer = super::tokenizer::gguf_tokenizer_json(&file)?;
    let special = super::tokenizer::gguf_tokenizer_config(&file)?;
    export_hf(&model, dir, Some((&tokenizer, &special)))
}
