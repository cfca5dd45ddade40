//! `repro load-memory`: peak host memory of loading a checkpoint, against the model's size.

use anyhow::Context;
use std::path::PathBuf;
use trainer::device::{self, DeviceRequest};

#[derive(clap::Args)]
pub struct LoadMemoryArgs {
    /// Hugging Face checkpoint directory (config.json + safetensors, single or sharded), or a
    /// Llama `.gguf` file.
    #[arg(long)]
    pub model_dir: PathBuf,
    /// Compute dtype: f32, f16 or bf16.
    #[arg(long, default_value = "bf16")]
    pub dtype: String,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceRequest,
}

/// A `/proc/self/status` field in bytes (`VmRSS`, `VmHWM`; the kernel reports kB).
fn proc_status_bytes(field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")
        .context("reading /proc/self/status (load-memory needs Linux)")?;
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .with_context(|| format!("/proc/self/status has no {field} line"))?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("/proc/self/status: unreadable {line:?}"))?;
    Ok(kib * 1024)
}

/// Peak host memory of loading a checkpoint, against the size of the loaded model: resident
/// set before, its high-water mark during the load (reset first through
/// `/proc/self/clear_refs`, Linux >= 4.0) and the ratio (peak - before) / model bytes.
/// JSON on the last line of stdout.
pub fn run(args: LoadMemoryArgs) -> anyhow::Result<()> {
    let dev = device::select(args.device).map_err(anyhow::Error::msg)?;
    let kind = trainer::models::parse_dtype(&args.dtype)?;
    // Initialise libtorch (allocator, thread pools) before the baseline reading.
    drop(tch::Tensor::zeros([1], (kind, dev)));
    std::fs::write("/proc/self/clear_refs", "5")
        .context("resetting the peak resident set (/proc/self/clear_refs)")?;
    let before = proc_status_bytes("VmRSS")?;
    let started = std::time::Instant::now();
    let model = trainer::models::load_model(&args.model_dir, kind, dev)
        .with_context(|| format!("loading {}", args.model_dir.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    let peak = proc_status_bytes("VmHWM")?;
    let after = proc_status_bytes("VmRSS")?;
    let model_bytes = model.parameter_count() as u64 * kind.elt_size_in_bytes() as u64;
    let ratio = peak.saturating_sub(before) as f64 / model_bytes as f64;
    eprintln!(
        "{}: {:.1} MiB of {} weights; resident {:.1} MiB before, peak {:.1} MiB, after {:.1} \
         MiB: (peak - before) / model = {ratio:.3} ({seconds:.1} s)",
        args.model_dir.display(),
        model_bytes as f64 / 1048576.0,
        args.dtype,
        before as f64 / 1048576.0,
        peak as f64 / 1048576.0,
        after as f64 / 1048576.0,
    );
    println!(
        "{}",
        serde_json::json!({
            "model_dir": args.model_dir.display().to_string(),
            "dtype": args.dtype,
            "device": device::name(dev),
            "model_bytes": model_bytes,
            "rss_before": before,
            "rss_peak": peak,
            "rss_after": after,
            "peak_over_model": ratio,
            "seconds": seconds,
        })
    );
    Ok(())
}
