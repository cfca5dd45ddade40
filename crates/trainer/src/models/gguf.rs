//! GGUF files (llama.cpp's format) for Llama-architecture models: metadata, tensor directory,
//! dequantisation (F32, F16, Q4_0, Q4_1, Q8_0) and the conversion to the Hugging Face layout.
//!
//! Facts followed (from the GGUF specification in ggml's docs/gguf.md and llama.cpp's
//! `convert_hf_to_gguf.py`): little-endian; dims are stored innermost first (ne0 = input
//! dim); tensor data starts at the next multiple of `general.alignment` (default 32); Q4_1
//! blocks hold 32 weights as an f16 scale, an f16 minimum and 16 bytes of nibbles (low
//! nibbles are weights 0..16, high nibbles 16..32); Q8_0 blocks an f16 scale and 32 int8;
//! Q/K projection rows are permuted to an interleaved-pair RoPE layout, undone here.

use super::config::{LlamaConfig, ModelConfig};
use super::error::{ModelError, Result};
use super::layers::ParamInit;
use super::Model;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

const MAGIC: u32 = 0x4655_4747; // "GGUF" read as a little-endian u32
const DEFAULT_ALIGNMENT: u64 = 32;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataValue {
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Bool(bool),
    String(String),
    Array(Vec<MetadataValue>),
}

impl MetadataValue {
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Self::Unsigned(v) => Some(*v),
            Self::Signed(v) if *v >= 0 => Some(*v as u64),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Float(v) => Some(*v),
            Self::Unsigned(v) => Some(*v as f64),
            Self::Signed(v) => Some(*v as f64),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[MetadataValue]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// GGML tensor element types this reader dequantises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q8_0,
}

impl GgmlType {
    fn from_id(id: u32) -> Option<Self> {
        match id {
            0 => Some(Self::F32),
            1 => Some(Self::F16),
            2 => Some(Self::Q4_0),
            3 => Some(Self::Q4_1),
            8 => Some(Self::Q8_0),
            _ => None,
        }
    }
    /// (weights per block, bytes per block)
    fn block(self) -> (usize, usize) {
        match self {
            Self::F32 => (1, 4),
            Self::F16 => (1, 2),
            Self::Q4_0 => (32, 18),
            Self::Q4_1 => (32, 20),
            Self::Q8_0 => (32, 34),
        }
    }
}

/// A tensor's directory entry.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// PyTorch order (outermost first), i.e. the GGUF dims reversed.
    pub shape: Vec<i64>,
    pub ggml_type: GgmlType,
    /// Absolute byte offset in the file.
    pub offset: usize,
    pub byte_len: usize,
}

/// A memory-mapped GGUF file.
pub struct GgufFile {
    pub path: PathBuf,
    pub metadata: BTreeMap<String, MetadataValue>,
    pub tensors: Vec<TensorInfo>,
    map: memmap2::Mmap,
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn err(&self, message: String) -> ModelError {
        ModelError::Gguf {
            path: self.path.to_path_buf(),
            message: format!("at byte {}: {message}", self.pos),
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let slice = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(slice)
            }
            None => Err(self.err(format!("truncated file: needs {n} more bytes"))),
        }
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn len(&mut self) -> Result<usize> {
        let n = self.u64()?;
        if n > self.bytes.len() as u64 {
            return Err(self.err(format!("length {n} exceeds the file size")));
        }
        Ok(n as usize)
    }
    fn string(&mut self) -> Result<String> {
        let n = self.len()?;
        let raw = self.take(n)?;
        String::from_utf8(raw.to_vec()).map_err(|e| self.err(format!("invalid UTF-8 string: {e}")))
    }
    fn value(&mut self, type_id: u32) -> Result<MetadataValue> {
        Ok(match type_id {
            0 => MetadataValue::Unsigned(self.array::<1>()?[0] as u64),
            1 => MetadataValue::Signed(self.array::<1>()?[0] as i8 as i64),
            2 => MetadataValue::Unsigned(u16::from_le_bytes(self.array()?) as u64),
            3 => MetadataValue::Signed(i16::from_le_bytes(self.array()?) as i64),
            4 => MetadataValue::Unsigned(self.u32()? as u64),
            5 => MetadataValue::Signed(i32::from_le_bytes(self.array()?) as i64),
            6 => MetadataValue::Float(f32::from_le_bytes(self.array()?) as f64),
            7 => MetadataValue::Bool(self.array::<1>()?[0] != 0),
            8 => MetadataValue::String(self.string()?),
            9 => {
                let element = self.u32()?;
                let n = self.len()?;
                let mut items = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    items.push(self.value(element)?);
                }
                MetadataValue::Array(items)
            }
            10 => MetadataValue::Unsigned(self.u64()?),
            11 => MetadataValue::Signed(i64::from_le_bytes(self.array()?)),
            12 => MetadataValue::Float(f64::from_le_bytes(self.array()?)),
            other => return Err(self.err(format!("unknown metadata value type {other}"))),
        })
    }
}

impl GgufFile {
    /// Memory-map and parse the header, metadata and tensor directory of `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let io = |source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: read-only map; the file is not expected to change while the model loads.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        let mut r = Reader {
            bytes: &map,
            pos: 0,
            path,
        };
        let magic = r.u32()?;
        if magic != MAGIC {
            return Err(r.err(format!("magic {magic:#x} is not GGUF")));
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(r.err(format!(
                "GGUF version {version} (this reader knows 2 and 3)"
            )));
        }
        let n_tensors = r.len()?;
        let n_metadata = r.len()?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_metadata {
            let key = r.string()?;
            let type_id = r.u32()?;
            let value = r.value(type_id)?;
            metadata.insert(key, value);
        }
        let mut raw = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = r.string()?;
            let n_dims = r.u32()? as usize;
            if n_dims > 4 {
                return Err(r.err(format!("tensor {name}: {n_dims} dims")));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                dims.push(r.u64()?);
            }
            let type_id = r.u32()?;
            let offset = r.u64()?;
            raw.push((name, dims, type_id, offset));
        }
        let alignment = metadata
            .get("general.alignment")
            .and_then(|v| v.as_u64())
            .unwrap_or(DEFAULT_ALIGNMENT)
            .max(1);
        let data_start = (r.pos as u64).div_ceil(alignment) * alignment;
        let mut tensors = Vec::with_capacity(raw.len());
        for (name, dims, type_id, offset) in raw {
            let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| ModelError::Gguf {
                path: path.to_path_buf(),
                message: format!("tensor {name}: ggml type {type_id} is not supported (F32, F16, Q4_0, Q4_1, Q8_0 are)"),
            })?;
            let count: u64 = dims.iter().product();
            let (per_block, block_bytes) = ggml_type.block();
            if !count.is_multiple_of(per_block as u64) {
                return Err(ModelError::Gguf {
                    path: path.to_path_buf(),
                    message: format!("tensor {name}: {count} weights is not a whole number of {per_block}-blocks"),
                });
            }
            let byte_len = count / per_block as u64 * block_bytes as u64;
            let start = data_start + offset;
            if start + byte_len > map.len() as u64 {
                return Err(ModelError::Gguf {
                    path: path.to_path_buf(),
                    message: format!(
                        "tensor {name}: data {start}..{} beyond the file end {}",
                        start + byte_len,
                        map.len()
                    ),
                });
            }
            let shape = dims.iter().rev().map(|&d| d as i64).collect();
            tensors.push(TensorInfo {
                name,
                shape,
                ggml_type,
                offset: start as usize,
                byte_len: byte_len as usize,
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            metadata,
            tensors,
            map,
        })
    }

    fn meta(&self, key: &str) -> Result<&MetadataValue> {
        self.metadata.get(key).ok_or_else(|| ModelError::Gguf {
            path: self.path.clone(),
            message: format!("metadata key {key} is missing"),
        })
    }

    fn meta_u64(&self, key: &str) -> Result<u64> {
        self.meta(key)?.as_u64().ok_or_else(|| ModelError::Gguf {
            path: self.path.clone(),
            message: format!("metadata {key} is not an unsigned integer"),
        })
    }

    fn meta_f64(&self, key: &str) -> Result<f64> {
        self.meta(key)?.as_f64().ok_or_else(|| ModelError::Gguf {
            path: self.path.clone(),
            message: format!("metadata {key} is not a number"),
        })
    }

    /// A string array from the metadata (e.g. `tokenizer.ggml.tokens`).
    pub fn string_array(&self, key: &str) -> Result<Vec<String>> {
        let items = self.meta(key)?.as_array().ok_or_else(|| ModelError::Gguf {
            path: self.path.clone(),
            message: format!("metadata {key} is not an array"),
        })?;
        items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ModelError::Gguf {
                        path: self.path.clone(),
                        message: format!("metadata {key} holds a non-string"),
                    })
            })
            .collect()
    }

    /// An unsigned-integer array from the metadata (e.g. `tokenizer.ggml.token_type`).
    pub fn integer_array(&self, key: &str) -> Result<Vec<i64>> {
        let items = self.meta(key)?.as_array().ok_or_else(|| ModelError::Gguf {
            path: self.path.clone(),
            message: format!("metadata {key} is not an array"),
        })?;
        items
            .iter()
            .map(|v| match v {
                MetadataValue::Signed(x) => Ok(*x),
                MetadataValue::Unsigned(x) => Ok(*x as i64),
                _ => Err(ModelError::Gguf {
                    path: self.path.clone(),
                    message: format!("metadata {key} holds a non-integer"),
                }),
            })
            .collect()
    }

    /// An unsigned metadata value, if present.
    pub fn optional_u64(&self, key: &str) -> Option<u64> {
        self.metadata.get(key).and_then(|v| v.as_u64())
    }

    /// The Hugging Face `LlamaConfig` equivalent to this file's `llama.*` metadata.
    pub fn llama_config(&self) -> Result<LlamaConfig> {
        let arch = self
            .meta("general.architecture")?
            .as_str()
            .unwrap_or("<not a string>");
        if arch != "llama" {
            return Err(ModelError::Gguf {
                path: self.path.clone(),
                message: format!("general.architecture {arch:?}: only llama is supported"),
            });
        }
        let hidden = self.meta_u64("llama.embedding_length")? as i64;
        let heads = self.meta_u64("llama.attention.head_count")? as i64;
        let kv_heads = self
            .optional_u64("llama.attention.head_count_kv")
            .map_or(heads, |v| v as i64);
        let vocab = match self.optional_u64("llama.vocab_size") {
            Some(v) => v as i64,
            None => self.string_array("tokenizer.ggml.tokens")?.len() as i64,
        };
        let head_dim = self
            .optional_u64("llama.attention.key_length")
            .or_else(|| self.optional_u64("llama.rope.dimension_count"))
            .map_or(hidden / heads.max(1), |v| v as i64);
        if self.metadata.contains_key("llama.rope.scaling.type") {
            return Err(ModelError::Gguf {
                path: self.path.clone(),
                message: "llama.rope.scaling.type is set: only unscaled RoPE is implemented".into(),
            });
        }
        let tied = !self.tensors.iter().any(|t| t.name == "output.weight");
        Ok(LlamaConfig {
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: self.meta_u64("llama.feed_forward_length")? as i64,
            num_hidden_layers: self.meta_u64("llama.block_count")? as i64,
            num_attention_heads: heads,
            num_key_value_heads: Some(kv_heads),
            head_dim: Some(head_dim),
            hidden_act: "silu".into(),
            rms_norm_eps: self.meta_f64("llama.attention.layer_norm_rms_epsilon")?,
            rope_theta: Some(
                self.metadata
                    .get("llama.rope.freq_base")
                    .and_then(|v| v.as_f64())
                    .unwrap_or(10000.0),
            ),
            rope_parameters: None,
            rope_scaling: None,
            attention_bias: false,
            mlp_bias: false,
            tie_word_embeddings: tied,
            max_position_embeddings: self
                .optional_u64("llama.context_length")
                .map_or(2048, |v| v as i64),
        })
    }

    /// Dequantise one tensor to f32 (shape in PyTorch order).
    pub fn dequantize(&self, info: &TensorInfo) -> Result<Tensor> {
        let bytes = &self.map[info.offset..info.offset + info.byte_len];
        let values = dequantize_bytes(info.ggml_type, bytes)?.f_reshape(&info.shape)?;
        super::checkpoint::release_pages(&self.map, bytes);
        Ok(values)
    }
}

/// `[blocks, 2]` little-endian f16 bytes -> `[blocks, 1]` f32.
fn block_f16(blocks: &Tensor, at: i64) -> std::result::Result<Tensor, tch::TchError> {
    blocks
        .f_narrow(1, at, 2)?
        .f_contiguous()?
        .f_view_dtype(Kind::Half)?
        .f_to_kind(Kind::Float)
}

/// 4-bit codes of `[blocks, 16]` bytes in weight order: byte j holds weight j in its low
/// nibble and weight j + 16 in its high nibble -> `[blocks, 32]` f32 codes in 0..16.
fn nibbles(bytes: &Tensor) -> std::result::Result<Tensor, tch::TchError> {
    let codes = bytes.f_to_kind(Kind::Float)?;
    let low = codes.f_remainder(16)?;
    let high = codes.f_floor_divide_scalar(16)?;
    Tensor::f_cat(&[low, high], 1)
}

/// Dequantise raw GGML data of `ggml_type` (whole blocks, little-endian) to a 1-D f32 tensor.
/// Runs as tensor ops (a few ms for a 49152 x 576 matrix).
pub fn dequantize_bytes(
    ggml_type: GgmlType,
    bytes: &[u8],
) -> std::result::Result<Tensor, tch::TchError> {
    let (_, block_bytes) = ggml_type.block();
    let blocks = (bytes.len() / block_bytes) as i64;
    let raw = Tensor::f_from_data_size(bytes, &[blocks, block_bytes as i64], Kind::Uint8)?;
    let values = match ggml_type {
        GgmlType::F32 => raw.f_view_dtype(Kind::Float)?,
        GgmlType::F16 => raw.f_view_dtype(Kind::Half)?.f_to_kind(Kind::Float)?,
        GgmlType::Q8_0 => {
            let codes = raw
                .f_narrow(1, 2, 32)?
                .f_contiguous()?
                .f_view_dtype(Kind::Int8)?;
            codes.f_to_kind(Kind::Float)? * block_f16(&raw, 0)?
        }
        GgmlType::Q4_0 => (nibbles(&raw.f_narrow(1, 2, 16)?)? - 8.0) * block_f16(&raw, 0)?,
        GgmlType::Q4_1 => {
            nibbles(&raw.f_narrow(1, 4, 16)?)? * block_f16(&raw, 0)? + block_f16(&raw, 2)?
        }
    };
    values.f_flatten(0, -1)
}

/// Undo llama.cpp's Q/K row permutation: GGUF rows of each head are ordered as interleaved
/// pairs `(i, half + i)`; Hugging Face's rotate-half layout keeps the halves contiguous.
pub fn unpermute_rope_rows(weight: &Tensor, heads: i64) -> Result<Tensor> {
    let size = weight.size();
    let (rows, cols) = (size[0], size[1]);
    let head_dim = rows / heads;
    Ok(weight
        .f_reshape([heads, head_dim / 2, 2, cols])?
        .f_transpose(1, 2)?
        .f_reshape([rows, cols])?)
}

/// The Hugging Face parameter name of a GGUF Llama tensor, with the heads count when its rows
/// need [`unpermute_rope_rows`].
fn hf_name(gguf_name: &str, config: &LlamaConfig) -> Option<(String, Option<i64>)> {
    match gguf_name {
        "token_embd.weight" => return Some(("embed_tokens.weight".into(), None)),
        "output_norm.weight" => return Some(("norm.weight".into(), None)),
        "output.weight" => return Some(("lm_head.weight".into(), None)),
        _ => {}
    }
    let rest = gguf_name.strip_prefix("blk.")?;
    let (layer, local) = rest.split_once('.')?;
    let layer: u64 = layer.parse().ok()?;
    let (suffix, heads) = match local {
        "attn_norm.weight" => ("input_layernorm.weight", None),
        "attn_q.weight" => ("self_attn.q_proj.weight", Some(config.num_attention_heads)),
        "attn_k.weight" => ("self_attn.k_proj.weight", Some(config.kv_heads())),
        "attn_v.weight" => ("self_attn.v_proj.weight", None),
        "attn_output.weight" => ("self_attn.o_proj.weight", None),
        "ffn_norm.weight" => ("post_attention_layernorm.weight", None),
        "ffn_gate.weight" => ("mlp.gate_proj.weight", None),
        "ffn_up.weight" => ("mlp.up_proj.weight", None),
        "ffn_down.weight" => ("mlp.down_proj.weight", None),
        _ => return None,
    };
    Some((format!("layers.{layer}.{suffix}"), heads))
}

/// Load a Llama model from a GGUF file: dequantise each tensor to f32, convert Q/K to the
/// rotate-half layout, and copy it into the parameter in `kind` on `device`.
pub fn load_gguf_model(path: &Path, kind: Kind, device: Device) -> Result<Model> {
    let file = GgufFile::open(path)?;
    let config = file.llama_config()?;
    let model = Model::build(
        &ModelConfig::Llama(config.clone()),
        kind,
        device,
        ParamInit::ForLoading,
    )?;
    let variables: HashMap<String, Tensor> =
        crate::model::LabelWordModel::var_store(&model).variables();
    let mut filled = std::collections::BTreeSet::new();
    for info in &file.tensors {
        let (name, heads) =
            hf_name(&info.name, &config).ok_or_else(|| ModelError::UnexpectedTensor {
                path: path.to_path_buf(),
                name: info.name.clone(),
            })?;
        let variable = variables
            .get(&name)
            .ok_or_else(|| ModelError::UnexpectedTensor {
                path: path.to_path_buf(),
                name: info.name.clone(),
            })?;
        if info.shape != variable.size() {
            return Err(ModelError::ShapeMismatch {
                path: path.to_path_buf(),
                name: info.name.clone(),
                expected: variable.size(),
                found: info.shape.clone(),
            });
        }
        let mut values = file.dequantize(info)?;
        if let Some(heads) = heads {
            values = unpermute_rope_rows(&values, heads)?;
        }
        super::checkpoint::copy_into(variable, &values)?;
        filled.insert(name);
    }
    let mut missing: Vec<String> = variables
        .keys()
        .filter(|n| !filled.contains(*n))
        .cloned()
        .collect();
    if !missing.is_empty() {
        missing.sort();
        return Err(ModelError::MissingTensors {
            path: path.to_path_buf(),
            names: missing,
        });
    }
    Ok(model)
}
