//! `repro memory`: peak GPU memory and median step time of every method on the paper's model
//! sizes (random weights from the published configs), one child process per (model, method) so
//! that each peak is measured from a clean caching allocator.
//!
//! Peak memory is device memory (`cuMemGetInfo`: total - free) at the end of the cell minus the
//! reading taken after CUDA and libtorch initialised and before the model was built. libtorch's
//! caching allocator never hands memory back unless asked, so this is its peak reservation plus
//! the cuBLAS workspace: the memory a user has to have. `scripts/perf/reference_pytorch.py`
//! measures PyTorch the same way (and also reports `max_memory_allocated`).
//!
//! Output (under `--out`): `zo_step.csv`, `details.jsonl`, `cells.log` (`files`), `comparison.md`
//! (`compare`) and `provenance.json`. The parts: argument handling and the run (here), the child
//! processes (`child`), the in-process measurement (`cell`), the files (`files`) and the
//! comparison with the paper (`compare`).

mod cell;
mod child;
mod compare;
mod files;

pub use cell::{run_cell, CellArgs};

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::time::Instant;
use trainer::device::DeviceRequest;

use crate::provenance::Provenance;
use cell::{load_config, RunFlags, METHODS};
use files::{model_label, read_details, Outputs};

/// The shapes of docs/gpu.md's reference table: RoBERTa-large f32 64 x 128, OPT f16 16 x 256;
/// SmolLM2 f32 64 x 64 (the shape of the SmolLM2 training runs).
fn default_shape(model: &str) -> (&'static str, i64, i64) {
    if model.starts_with("roberta") {
        ("f32", 64, 128)
    } else if model.starts_with("smollm2") {
        ("f32", 64, 64)
    } else {
        ("f16", 16, 256)
    }
}

#[derive(clap::Args)]
pub struct MemoryArgs {
    /// Published configs by name (roberta-large, opt-1.3b, opt-2.7b) or paths to a config.json;
    /// weights are random (std 0.02).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "roberta-large,opt-1.3b,opt-2.7b"
    )]
    pub models: Vec<String>,
    /// Methods: infer (one label-word forward), zo (MeZO step), dp-zoso (DPZero step + stagewise
    /// proximal anchor, the trainer's default), dp-zoso-noanchor (the released code's no-op
    /// anchor), dp-zopo (1% mask), dp-sgd (ghost clipping: one forward, one backward),
    /// dp-sgd-microbatch (the reference: one backward per example), backprop (AdamW),
    /// backprop-sgd (one forward, one backward and a plain SGD update: DP-SGD's work without the
    /// privacy).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "infer,zo,dp-zoso,dp-zoso-noanchor,dp-zopo,dp-sgd,backprop"
    )]
    pub methods: Vec<String>,
    /// Extra batch sizes at which DP-SGD is measured (memory and time against batch size).
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    pub dp_sgd_batches: Vec<i64>,
    /// Override the batch size of every model.
    #[arg(long)]
    pub batch: Option<i64>,
    /// Override the sequence length of every model.
    #[arg(long)]
    pub seq: Option<i64>,
    /// Override the dtype of every model (f32, f16, bf16).
    #[arg(long)]
    pub dtype: Option<String>,
    #[command(flatten)]
    pub timing: RunFlags,
    /// Output directory.
    #[arg(long, default_value = "results/perf/latest")]
    pub out: PathBuf,
    /// Measure nothing: write `comparison.md` into `--out` from the `details.jsonl` of these
    /// earlier output directories (later ones override earlier cells).
    #[arg(long, value_delimiter = ',')]
    pub compare_only: Option<Vec<PathBuf>>,
    /// With `--compare-only`: earlier output directories (each also given there) measured
    /// before ghost clipping became DP-SGD's default; their `dp-sgd` cells are the micro-batch
    /// method and are read as `dp-sgd-microbatch` (as `repro perf-table --microbatch-dp-sgd`).
    #[arg(long, value_delimiter = ',', requires = "compare_only")]
    pub microbatch_dp_sgd: Vec<PathBuf>,
    /// The paper's memory figure as data.
    #[arg(long, default_value = "paper-tables/memory.csv")]
    pub paper_table: PathBuf,
}

/// `repro memory`: every (model, method) cell in its own process, then `comparison.md`; or, with
/// `--compare-only`, the comparison of earlier output folders.
pub fn run(args: MemoryArgs) -> Result<()> {
    if let Some(dirs) = &args.compare_only {
        for dir in &args.microbatch_dp_sgd {
            if !dirs.contains(dir) {
                bail!(
                    "--microbatch-dp-sgd {}: not among the --compare-only directories",
                    dir.display()
                );
            }
        }
        let cells = read_details(dirs, &args.microbatch_dp_sgd)?;
        compare::write_comparison(&args.out, &cells, &args.paper_table)?;
        return Provenance::collect("cpu").write_to_folder(&args.out);
    }
    for method in &args.methods {
        if !METHODS.contains(&method.as_str()) {
            bail!("--methods {method}: expected among {}", METHODS.join(", "));
        }
    }
    for model in &args.models {
        load_config(model)?;
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let exe = std::env::current_exe().context("locating the repro binary")?;
    let mut outputs = Outputs::new()?;
    // The device the cells ran on, as they report it (the parent never initialises CUDA).
    let mut device_used: Option<String> = None;

    for model in &args.models {
        let label = model_label(model);
        let (dtype, batch, seq) = default_shape(&label);
        let dtype = args.dtype.clone().unwrap_or_else(|| dtype.to_string());
        let batch = args.batch.unwrap_or(batch);
        let seq = args.seq.unwrap_or(seq);
        let mut cells: Vec<(String, i64)> =
            args.methods.iter().map(|m| (m.clone(), batch)).collect();
        if args.methods.iter().any(|m| m == "dp-sgd") {
            for &b in &args.dp_sgd_batches {
                if b != batch {
                    cells.push(("dp-sgd".into(), b));
                }
            }
        }
        for (method, batch) in cells {
            let cell = CellArgs {
                model: model.clone(),
                method: method.clone(),
                dtype: dtype.clone(),
                batch,
                seq,
                timing: args.timing.clone(),
            };
            let started = Instant::now();
            let outcome = child::measure_in_child(&exe, &cell)?;
            outputs.log(&outcome.stderr)?;
            match outcome.result {
                Ok(result) => {
                    device_used.get_or_insert_with(|| result.device.clone());
                    eprintln!(
                        "{label} {method} B={batch}: {:.2} ms, peak {:.1} MiB ({:.0} s)",
                        result.ms_median,
                        result.peak_bytes as f64 / 1048576.0,
                        started.elapsed().as_secs_f64()
                    );
                    outputs.measured(&label, &dtype, &result)?;
                }
                Err(reason) => {
                    eprintln!("{label} {method} B={batch}: failed: {reason}");
                    outputs.failed(&label, &dtype, batch, seq, &method, &reason)?;
                }
            }
        }
    }
    let csv_path = outputs.write(&args.out)?;
    println!("wrote {}", csv_path.display());
    let device = device_used.unwrap_or_else(|| match args.timing.device {
        DeviceRequest::Cpu => "cpu".into(),
        DeviceRequest::Cuda | DeviceRequest::Auto => "cuda".into(),
    });
    Provenance::collect(&device).write_to_folder(&args.out)?;
    let cells = read_details(std::slice::from_ref(&args.out), &[])?;
    compare::write_comparison(&args.out, &cells, &args.paper_table)
}
