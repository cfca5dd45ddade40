//! Test support for the optim/train tests: a tiny `LabelWordModel` (embedding mean + tanh +
//! linear head over a small vocabulary) and a learnable synthetic two-class task.
#![allow(dead_code)]

use std::cell::Cell;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{nn::VarStore, Device, Kind, Tensor};
use trainer::batch::Batch;
use trainer::model::LabelWordModel;
use trainer::optim::rng::{stream, Purpose};
use trainer::train::{BatchRequest, Sampling, TrainBatches};

pub const VOCAB: i64 = 32;
pub const HIDDEN: i64 = 8;
pub const SEQ_LEN: i64 = 6;
pub const LABEL_WORDS: [i64; 2] = [30, 31];

/// Embedding [V, H] -> masked mean -> tanh -> head [H, V] + bias [V]; only the label-word
/// columns of the head are used.
pub struct TinyModel {
    vs: VarStore,
    embedding: Tensor,
    head: Tensor,
    bias: Tensor,
    /// After this many forward calls the logits become NaN (for the non-finite-loss test).
    pub poison_after: Option<usize>,
    pub calls: Cell<usize>,
}

fn seeded(rng: &mut ChaCha8Rng, n: usize, scale: f64) -> Vec<f64> {
    (0..n)
        .map(|_| (rng.random::<f64>() * 2.0 - 1.0) * scale)
        .collect()
}

impl TinyModel {
    /// Weights drawn from rand_chacha(seed) (never the global tch RNG), in `kind`.
    pub fn new(seed: u64, kind: Kind) -> Self {
        let mut vs = VarStore::new(Device::Cpu);
        // Variables take the store's kind (var_copy converts), so set it before creating them.
        vs.set_kind(kind);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let root = vs.root();
        let make = |rng: &mut ChaCha8Rng, dims: &[i64], scale: f64| {
            let n = dims.iter().product::<i64>() as usize;
            Tensor::from_slice(&seeded(rng, n, scale))
                .view(dims)
                .to_kind(kind)
        };
        let embedding = root.var_copy("embedding", &make(&mut rng, &[VOCAB, HIDDEN], 0.5));
        let head = (&root / "head").var_copy("weight", &make(&mut rng, &[HIDDEN, VOCAB], 0.5));
        let bias = (&root / "head").var_copy("bias", &make(&mut rng, &[VOCAB], 0.1));
        Self {
            vs,
            embedding,
            head,
            bias,
            poison_after: None,
            calls: Cell::new(0),
        }
    }
}

impl LabelWordModel for TinyModel {
    fn label_word_logits(&self, batch: &Batch) -> Result<Tensor, tch::TchError> {
        self.calls.set(self.calls.get() + 1);
        let kind = self.embedding.kind();
        let (b, l) = (batch.input_ids.size()[0], batch.input_ids.size()[1]);
        let emb = self
            .embedding
            .f_index_select(0, &batch.input_ids.f_view(-1)?)?
            .f_view([b, l, HIDDEN])?;
        let mask = batch.attention_mask.f_to_kind(kind)?.f_unsqueeze(-1)?;
        let hidden = emb
            .f_mul(&mask)?
            .f_sum_dim_intlist(1, false, kind)?
            .f_div(&mask.f_sum_dim_intlist(1, false, kind)?)?
            .f_tanh()?;
        let columns = self.head.f_index_select(1, &batch.label_word_ids)?;
        let logits = hidden
            .f_matmul(&columns)?
            .f_add(&self.bias.f_index_select(0, &batch.label_word_ids)?)?;
        let out_kind = if kind == Kind::Double {
            Kind::Double
        } else {
            Kind::Float
        };
        let logits = logits.f_to_kind(out_kind)?;
        if self.poison_after.is_some_and(|n| self.calls.get() > n) {
            return logits.f_mul_scalar(f64::NAN);
        }
        Ok(logits)
    }
    fn var_store(&self) -> &VarStore {
        &self.vs
    }
    fn var_store_mut(&mut self) -> &mut VarStore {
        &mut self.vs
    }
}

/// Two classes: tokens 2..16 lean to class 0, 16..30 to class 1; the label is the side holding
/// the majority of an example's tokens (ties broken by the first token).
pub struct SyntheticTask {
    pub examples: Vec<(Vec<i64>, i64)>,
    /// Sleep this long per batch (the kill -9 test needs a slow child).
    pub sleep_ms: u64,
}

impl SyntheticTask {
    pub fn new(n: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let examples = (0..n)
            .map(|_| {
                let lean: bool = rng.random();
                let tokens: Vec<i64> = (0..SEQ_LEN)
                    .map(|_| {
                        let same_side = rng.random::<f64>() < 0.75;
                        let side_one = lean == same_side;
                        let base = if side_one { 16 } else { 2 };
                        base + rng.random_range(0..14)
                    })
                    .collect();
                let ones = tokens.iter().filter(|&&t| t >= 16).count() as i64;
                let label = if 2 * ones > SEQ_LEN || (2 * ones == SEQ_LEN && tokens[0] >= 16) {
                    1
                } else {
                    0
                };
                (tokens, label)
            })
            .collect();
        Self {
            examples,
            sleep_ms: 0,
        }
    }

    /// The examples with the given indices as one batch.
    pub fn batch_of(&self, indices: &[usize]) -> Batch {
        let mut ids = Vec::new();
        let mut labels = Vec::new();
        for &i in indices {
            ids.extend_from_slice(&self.examples[i].0);
            labels.push(self.examples[i].1);
        }
        let b = indices.len() as i64;
        Batch {
            input_ids: Tensor::from_slice(&ids).view([b, SEQ_LEN]),
            attention_mask: Tensor::ones([b, SEQ_LEN], (Kind::Int64, Device::Cpu)),
            positions: Tensor::zeros([b], (Kind::Int64, Device::Cpu)),
            labels: Tensor::from_slice(&labels),
            label_word_ids: Tensor::from_slice(&LABEL_WORDS),
        }
    }

    /// All examples in batches of `size`.
    pub fn batches(&self, size: usize) -> Vec<Batch> {
        let all: Vec<usize> = (0..self.examples.len()).collect();
        all.chunks(size).map(|c| self.batch_of(c)).collect()
    }
}

impl TrainBatches for SyntheticTask {
    fn num_examples(&self) -> usize {
        self.examples.len()
    }

    fn batch(&mut self, request: BatchRequest) -> Result<trainer::batch::TaskBatch, String> {
        if self.sleep_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(self.sleep_ms));
        }
        let mut rng = stream(request.seed, request.step, Purpose::Batches);
        let n = self.examples.len();
        let indices: Vec<usize> = match request.sampling {
            Sampling::Poisson => {
                let q = request.batch_size as f64 / n as f64;
                (0..n).filter(|_| rng.random::<f64>() < q).collect()
            }
            // The fixture draws a fresh fixed-size batch each step for both schemes.
            Sampling::FixedSize | Sampling::Shuffled => {
                let mut order: Vec<usize> = (0..n).collect();
                for i in 0..request.batch_size {
                    let j = rng.random_range(i..n);
                    order.swap(i, j);
                }
                order.truncate(request.batch_size);
                order
            }
        };
        Ok(self.batch_of(&indices).into())
    }
}

/// A snapshot of all parameters (sorted by name) as f64 host vectors.
pub fn snapshot(model: &dyn LabelWordModel) -> Vec<(String, Vec<f64>)> {
    let mut vars: Vec<(String, Tensor)> = model.var_store().variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars.into_iter()
        .map(|(n, t)| {
            (
                n,
                Vec::<f64>::try_from(t.detach().to_kind(Kind::Double).view(-1)).unwrap(),
            )
        })
        .collect()
}

/// Bit patterns of all parameters, for exact comparisons.
pub fn bits(model: &dyn LabelWordModel) -> Vec<(String, Vec<u64>)> {
    snapshot(model)
        .into_iter()
        .map(|(n, v)| (n, v.iter().map(|x| x.to_bits()).collect()))
        .collect()
}

/// A clip norm halfway between the `kept`-th and the next smallest of `|values|`: the `kept`
/// smallest values pass unclipped, every other one is clipped, with a margin either side.
pub fn clip_norm_keeping(values: &[f64], kept: usize) -> f64 {
    let mut magnitudes: Vec<f64> = values.iter().map(|v| v.abs()).collect();
    magnitudes.sort_by(f64::total_cmp);
    0.5 * (magnitudes[kept - 1] + magnitudes[kept])
}

/// A DP ZO step that leaves theta where it is (step size 0) and only reports: `directions`
/// directions at scale `mu`, clipped at `clip_norm`, noise `noise_std`, no proximal term.
pub fn reporting_dp_step(
    mu: f64,
    directions: usize,
    clip_norm: f64,
    noise_std: f64,
    normaliser: Option<f64>,
) -> trainer::optim::zo::ZoStepSettings<'static> {
    trainer::optim::zo::ZoStepSettings {
        zo_eps: mu,
        step_size: 0.0,
        num_directions: directions,
        privacy: Some(trainer::optim::zo::ZoPrivacy {
            clip_norm,
            noise_std,
        }),
        normaliser,
        proximal: None,
        forward: Default::default(),
    }
}
