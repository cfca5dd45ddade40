//! Loading Hugging Face safetensors checkpoints (single file or sharded) into a model's
//! `VarStore`, one memory-mapped shard at a time.
//!
//! Each tensor is read from the map in runs of at most 16 MiB of rows, copied into its variable
//! under `no_grad` (which converts it to the compute dtype and device), and the run's mapped
//! pages released, so host memory beyond the model holds at most one run at a time.

use super::config::ModelConfig;
use super::error::{ModelError, Result};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use tch::{nn::VarStore, Kind, Tensor};

/// What a tensor name in a checkpoint file stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TensorTarget {
    /// The model parameter with this (prefix-free) name.
    Parameter(String),
    /// A second copy of a parameter under another name (e.g. RoBERTa's
    /// `lm_head.decoder.bias`, which aliases `lm_head.bias`).
    Alias(String),
    /// A tensor the model deliberately does not use (tied copies, poolers, buffers).
    Ignored,
}

/// Maps checkpoint tensor names to parameters, following transformers' base-model prefixes
/// and its `_keys_to_ignore_on_load_unexpected` / tied-weight lists for each family.
pub fn map_tensor_name(config: &ModelConfig, name: &str) -> TensorTarget {
    match config {
        ModelConfig::Roberta(_) => {
            let name = name.strip_prefix("roberta.").unwrap_or(name);
            if name.starts_with("pooler.") || name == "embeddings.position_ids" {
                // RobertaForMaskedLM has no pooler; position_ids is a buffer of old checkpoints.
                TensorTarget::Ignored
            } else if name == "lm_head.decoder.weight" {
                // Tied to embeddings.word_embeddings.weight.
                TensorTarget::Ignored
            } else if name == "lm_head.decoder.bias" {
                TensorTarget::Alias("lm_head.bias".into())
            } else {
                TensorTarget::Parameter(name.to_string())
            }
        }
        ModelConfig::Opt(_) => {
            if name == "lm_head.weight" {
                // Tied to decoder.embed_tokens.weight.
                return TensorTarget::Ignored;
            }
            TensorTarget::Parameter(name.strip_prefix("model.").unwrap_or(name).to_string())
        }
        ModelConfig::Llama(c) => {
            if name == "lm_head.weight" {
                return if c.tie_word_embeddings {
                    TensorTarget::Ignored
                } else {
                    TensorTarget::Parameter(name.to_string())
                };
            }
            if name.ends_with("rotary_emb.inv_freq") {
                // A recomputed buffer saved by old transformers versions.
                return TensorTarget::Ignored;
            }
            TensorTarget::Parameter(name.strip_prefix("model.").unwrap_or(name).to_string())
        }
    }
}

/// The safetensors files of a checkpoint directory: the shards listed by
/// `model.safetensors.index.json`, else `model.safetensors`.
pub fn checkpoint_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|source| ModelError::Io {
            path: index.clone(),
            source,
        })?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| ModelError::Json {
                path: index.clone(),
                source,
            })?;
        let map = value
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ModelError::Safetensors {
                path: index.clone(),
                message: "no weight_map object".into(),
            })?;
        let mut shards = BTreeSet::new();
        for (tensor, file) in map {
            let file = file.as_str().ok_or_else(|| ModelError::Safetensors {
                path: index.clone(),
                message: format!("weight_map[{tensor:?}] is not a file name"),
            })?;
            shards.insert(dir.join(file));
        }
        return Ok(shards.into_iter().collect());
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    Err(ModelError::Safetensors {
        path: dir.to_path_buf(),
        message: "neither model.safetensors nor model.safetensors.index.json found".into(),
    })
}

fn kind_of(dtype: safetensors::Dtype) -> Option<Kind> {
    match dtype {
        safetensors::Dtype::F32 => Some(Kind::Float),
        safetensors::Dtype::F16 => Some(Kind::Half),
        safetensors::Dtype::BF16 => Some(Kind::BFloat16),
        safetensors::Dtype::F64 => Some(Kind::Double),
        _ => None,
    }
}

/// Copy `source` (any float dtype, any device) into the variable `target` under `no_grad`.
pub fn copy_into(target: &Tensor, source: &Tensor) -> std::result::Result<(), tch::TchError> {
    let mut target = target.shallow_clone();
    tch::no_grad(|| target.f_copy_(source))
}

/// Copy little-endian `bytes` holding a `shape` tensor of `kind` into `target`. When the bytes
/// are aligned for `kind` they are read in place (no host copy); otherwise via one copy.
pub(crate) fn copy_bytes_into(
    target: &Tensor,
    bytes: &[u8],
    shape: &[i64],
    kind: Kind,
) -> std::result::Result<(), tch::TchError> {
    let width = kind.elt_size_in_bytes();
    let count: i64 = shape.iter().product();
    if bytes.len() != count as usize * width {
        return Err(tch::TchError::Shape(format!(
            "{} bytes for shape {shape:?} of {kind:?}",
            bytes.len()
        )));
    }
    if (bytes.as_ptr() as usize).is_multiple_of(width) {
        let mut strides = vec![1i64; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * shape[i + 1];
        }
        // SAFETY: `bytes` is aligned for `kind`, holds exactly `count` elements laid out
        // contiguously (checked above), and outlives the borrowed tensor, which is dropped at
        // the end of this function after the copy; it is only read.
        let source = unsafe {
            Tensor::f_from_blob(bytes.as_ptr(), shape, &strides, kind, tch::Device::Cpu)?
        };
        copy_into(target, &source)
    } else {
        copy_into(target, &Tensor::f_from_data_size(bytes, shape, kind)?)
    }
}

/// Drop the mapped pages of `data` (a slice of `map`) from this process once copied, so the
/// resident size grows by the model, not by the model plus its file. Advisory: errors ignored.
pub(crate) fn release_pages(map: &memmap2::Mmap, data: &[u8]) {
    const PAGE: usize = 4096;
    let start = (data.as_ptr() as usize).saturating_sub(map.as_ptr() as usize);
    let aligned_start = start / PAGE * PAGE;
    let end = (start + data.len()).min(map.len());
    if end <= aligned_start {
        return;
    }
    // SAFETY: the map is a read-only file mapping; MADV_DONTNEED only drops resident pages,
    // which fault back in with the same file content if read again, so no live borrow of the
    // map observes a change.
    let _ = unsafe {
        map.unchecked_advise_range(
            memmap2::UncheckedAdvice::DontNeed,
            aligned_start,
            end - aligned_start,
        )
    };
}

/// The most file bytes of one tensor resident at once while loading: larger tensors are copied
/// in runs of whole rows (dimension 0) and each run's pages released before the next.
const LOAD_CHUNK_BYTES: usize = 16 << 20;

/// [`copy_bytes_into`] then [`release_pages`], in runs of rows of at most [`LOAD_CHUNK_BYTES`]
/// (one row when a row is larger), so that loading holds the model plus one run, not the model
/// plus its largest tensor (e.g. a 50k x 2560 embedding, 250 MiB in f16).
fn copy_in_chunks(
    map: &memmap2::Mmap,
    target: &Tensor,
    bytes: &[u8],
    shape: &[i64],
    kind: Kind,
) -> std::result::Result<(), tch::TchError> {
    let rows = shape.first().copied().unwrap_or(1);
    if shape.is_empty() || rows <= 1 || bytes.len() <= LOAD_CHUNK_BYTES {
        copy_bytes_into(target, bytes, shape, kind)?;
        release_pages(map, bytes);
        return Ok(());
    }
    let row_bytes = bytes.len() / rows as usize;
    let rows_per_run = (LOAD_CHUNK_BYTES / row_bytes.max(1)).max(1) as i64;
    let mut run_shape = shape.to_vec();
    let mut start = 0i64;
    while start < rows {
        let n = rows_per_run.min(rows - start);
        let run = &bytes[start as usize * row_bytes..(start + n) as usize * row_bytes];
        run_shape[0] = n;
        copy_bytes_into(&target.f_narrow(0, start, n)?, run, &run_shape, kind)?;
        release_pages(map, run);
        start += n;
    }
    Ok(())
}

/// Fill every variable of `var_store` from the checkpoint `files`. A tensor that maps to no
/// variable, a variable left unfilled, a shape mismatch or a duplicate is an error naming it.
pub fn load_safetensors(
    var_store: &VarStore,
    config: &ModelConfig,
    files: &[PathBuf],
) -> Result<()> {
    let variables: HashMap<String, Tensor> = var_store.variables();
    let mut filled: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut aliased: BTreeSet<String> = BTreeSet::new();
    for file in files {
        let handle = std::fs::File::open(file).map_err(|source| ModelError::Io {
            path: file.clone(),
            source,
        })?;
        // SAFETY: the map is read-only and lives until the end of this iteration; a checkpoint
        // modified by another process while we read it is outside this loader's contract.
        let map = unsafe { memmap2::Mmap::map(&handle) }.map_err(|source| ModelError::Io {
            path: file.clone(),
            source,
        })?;
        let tensors =
            safetensors::SafeTensors::deserialize(&map).map_err(|e| ModelError::Safetensors {
                path: file.clone(),
                message: e.to_string(),
            })?;
        let mut names: Vec<String> = tensors.names().into_iter().map(str::to_string).collect();
        names.sort();
        for name in names {
            let (target, is_alias) = match map_tensor_name(config, &name) {
                TensorTarget::Ignored => continue,
                TensorTarget::Parameter(p) => {
                    if let Some(other) = filled.get(&p) {
                        return Err(ModelError::DuplicateTensor {
                            path: file.clone(),
                            name,
                            other: other.clone(),
                        });
                    }
                    (p, false)
                }
                TensorTarget::Alias(p) => (p, true),
            };
            let variable = variables
                .get(&target)
                .ok_or_else(|| ModelError::UnexpectedTensor {
                    path: file.clone(),
                    name: name.clone(),
                })?;
            let view = tensors.tensor(&name).map_err(|e| ModelError::Safetensors {
                path: file.clone(),
                message: format!("{name}: {e}"),
            })?;
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            if shape != variable.size() {
                return Err(ModelError::ShapeMismatch {
                    path: file.clone(),
                    name,
                    expected: variable.size(),
                    found: shape,
                });
            }
            let kind = kind_of(view.dtype()).ok_or_else(|| ModelError::UnsupportedDtype {
                path: file.clone(),
                name: name.clone(),
                dtype: format!("{:?}", view.dtype()),
            })?;
            copy_in_chunks(&map, variable, view.data(), &shape, kind)?;
            if is_alias {
                aliased.insert(target);
            } else {
                filled.insert(target, file.clone());
            }
        }
    }
    let mut missing: Vec<String> = variables
        .keys()
        .filter(|name| !filled.contains_key(*name) && !aliased.contains(*name))
        .cloned()
        .collect();
    if !missing.is_empty() {
        missing.sort();
        let path = files
            .first()
            .and_then(|f| f.parent())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        return Err(ModelError::MissingTensors {
            path,
            names: missing,
        });
    }
    Ok(())
}
