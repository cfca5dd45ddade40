//! `repro throughput kernels`: where a ZO step's GPU time goes, from an Nsight Compute capture of
//! a `throughput steps` process (`ncu --csv --metrics gpu__time_duration.sum`: one row per kernel
//! launch). Kernels are grouped by kind (matrix products, attention, the ZO perturbation passes,
//! norms and reductions, data movement: copies, gathers, fills; other element-wise work) and
//! reported per step.
//!
//! Steps are counted by the perturbation passes: each `perturb_*` launch is one pass over θ, and a
//! chained single-direction DPZero step makes two (`trainer::optim::zo`: the `-2μz` pass and the
//! final restore + update + next `+μz` pass). Only the launches of whole steps, from one pass to
//! a pass a whole number of steps later, are counted ([`per_step`]).

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct KernelsArgs {
    /// The ncu CSV (`ncu --csv --metrics gpu__time_duration.sum …`; lines that are not CSV rows,
    /// such as `==PROF==` messages or the program's own output, are skipped).
    #[arg(long)]
    pub ncu: PathBuf,
    /// Perturbation passes (`perturb_*` launches) per step: 2 for a chained sequential DPZero
    /// step with one direction.
    #[arg(long, default_value_t = 2)]
    pub passes_per_step: usize,
    /// Label of the capture in the `compute` column (e.g. `tf32`).
    #[arg(long)]
    pub label: String,
    /// CSV to append the rows to (created with its header if missing).
    #[arg(long)]
    pub out: PathBuf,
}

/// What a kernel does, judged by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum KernelKind {
    MatrixProducts,
    Attention,
    PerturbationPasses,
    NormsAndReductions,
    CopiesAndGathers,
    Elementwise,
    Other,
}

impl KernelKind {
    pub fn name(self) -> &'static str {
        match self {
            KernelKind::MatrixProducts => "matrix products",
            KernelKind::Attention => "attention",
            KernelKind::PerturbationPasses => "perturbation passes",
            KernelKind::NormsAndReductions => "norms and reductions",
            KernelKind::CopiesAndGathers => "data movement",
            KernelKind::Elementwise => "other element-wise",
            KernelKind::Other => "other",
        }
    }

    /// The kind of a kernel from its (demangled) name: cuBLAS / CUTLASS GEMMs, fused attention
    /// (flash / memory-efficient, which CUTLASS also names), our NVRTC passes
    /// (`trainer/src/perturb/kernel.cu`), ATen's reductions and norms, data movement, and the rest
    /// of ATen's element-wise kernels.
    pub fn of(name: &str) -> KernelKind {
        let n = name.to_ascii_lowercase();
        let has = |words: &[&str]| words.iter().any(|w| n.contains(w));
        if n.starts_with("perturb_") || n.starts_with("pull_") {
            KernelKind::PerturbationPasses
        } else if has(&["fmha", "flash", "attention", "sdpa", "softmax"]) {
            KernelKind::Attention
        } else if has(&["gemm", "xmma", "gemv", "cutlass", "matmul", "splitk"]) {
            KernelKind::MatrixProducts
        } else if has(&[
            "layer_norm",
            "layernorm",
            "rms_norm",
            "rmsnorm",
            "norm_kernel",
            "reduce_kernel",
            "reduction",
        ]) {
            KernelKind::NormsAndReductions
        } else if has(&[
            "copy",
            "gather",
            "scatter",
            "index",
            "catarray",
            "fillfunctor",
            "cat_",
        ]) {
            KernelKind::CopiesAndGathers
        } else if has(&["elementwise", "pointwise"]) {
            KernelKind::Elementwise
        } else {
            KernelKind::Other
        }
    }
}

/// One kernel launch of a capture.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub name: String,
    pub nanoseconds: f64,
}

/// Nanoseconds per unit of ncu's `Metric Unit` for durations.
fn nanoseconds_per(unit: &str) -> Option<f64> {
    match unit {
        "ns" | "nsecond" => Some(1.0),
        "us" | "usecond" => Some(1e3),
        "ms" | "msecond" => Some(1e6),
        "s" | "second" => Some(1e9),
        _ => None,
    }
}

/// The `gpu__time_duration.sum` rows of an ncu CSV, in launch order. Errors name `path:line`.
pub fn read_ncu(text: &str, path: &Path) -> Result<Vec<Launch>> {
    // Only CSV rows, each with its line number in the file (ncu interleaves `==PROF==` lines).
    let rows: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with('"'))
        .map(|(i, l)| (i + 1, l))
        .collect();
    let Some(header_at) = rows.iter().position(|(_, l)| l.starts_with("\"ID\"")) else {
        bail!(
            "{}: no ncu CSV header (a line starting \"ID\"): was ncu run with --csv?",
            path.display()
        );
    };
    let parse = |line: &str| -> Result<csv::StringRecord> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(line.as_bytes());
        reader
            .records()
            .next()
            .context("an empty row")?
            .context("not a CSV row")
    };
    let (header_line, header) = rows[header_at];
    let header = parse(header).with_context(|| format!("{}:{header_line}", path.display()))?;
    let column = |name: &str| {
        header.iter().position(|h| h == name).with_context(|| {
            format!(
                "{}:{header_line}: the ncu header has no column {name:?}",
                path.display()
            )
        })
    };
    let (kernel, metric, unit, value) = (
        column("Kernel Name")?,
        column("Metric Name")?,
        column("Metric Unit")?,
        column("Metric Value")?,
    );
    let mut launches = Vec::new();
    for &(line_no, line) in &rows[header_at + 1..] {
        let at = || format!("{}:{line_no}", path.display());
        let row = parse(line).with_context(at)?;
        let field = |i: usize| {
            row.get(i)
                .with_context(|| format!("{}: too few columns", at()))
        };
        if field(metric)? != "gpu__time_duration.sum" {
            continue;
        }
        let unit = field(unit)?;
        let scale = nanoseconds_per(unit)
            .with_context(|| format!("{}: unknown duration unit {unit:?}", at()))?;
        let raw = field(value)?;
        let number: f64 = raw
            .replace(',', "")
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .with_context(|| format!("{}: duration {raw:?} is not a number >= 0", at()))?;
        launches.push(Launch {
            name: field(kernel)?.to_string(),
            nanoseconds: number * scale,
        });
    }
    if launches.is_empty() {
        bail!(
            "{}: no gpu__time_duration.sum rows (run ncu with --metrics gpu__time_duration.sum)",
            path.display()
        );
    }
    Ok(launches)
}

/// One kind's share of a capture.
#[derive(Debug, Clone, PartialEq)]
pub struct KindRow {
    pub kind: &'static str,
    pub launches: usize,
    pub launches_per_step: f64,
    pub microseconds_per_step: f64,
    pub share: f64,
}

/// Per-step launches and kernel time by kind (a last row `all`), and the whole steps they cover.
///
/// Only whole steps are counted: the window runs from just after the first perturbation pass to
/// the pass `k · passes_per_step` passes later, for the largest such `k`. Whatever phase of a
/// step the first pass ends, the window then holds exactly `k` steps' kernels.
pub fn per_step(launches: &[Launch], passes_per_step: usize) -> Result<(usize, Vec<KindRow>)> {
    if passes_per_step == 0 {
        bail!("--passes-per-step 0: must be >= 1");
    }
    let passes: Vec<usize> = launches
        .iter()
        .enumerate()
        .filter(|(_, l)| KernelKind::of(&l.name) == KernelKind::PerturbationPasses)
        .map(|(i, _)| i)
        .collect();
    let steps = passes.len().saturating_sub(1) / passes_per_step;
    if steps == 0 {
        bail!(
            "{} perturbation passes (perturb_* kernels) among {} launches: a whole step needs \
             {} (capture more launches, of a ZO step)",
            passes.len(),
            launches.len(),
            passes_per_step + 1
        );
    }
    let window = &launches[passes[0] + 1..=passes[steps * passes_per_step]];
    let mut by_kind: BTreeMap<KernelKind, (usize, f64)> = BTreeMap::new();
    for l in window {
        let entry = by_kind.entry(KernelKind::of(&l.name)).or_default();
        entry.0 += 1;
        entry.1 += l.nanoseconds;
    }
    let total_ns: f64 = window.iter().map(|l| l.nanoseconds).sum();
    let per = steps as f64;
    let row = |kind: &'static str, n: usize, ns: f64| KindRow {
        kind,
        launches: n,
        launches_per_step: n as f64 / per,
        microseconds_per_step: ns / 1e3 / per,
        share: if total_ns > 0.0 { ns / total_ns } else { 0.0 },
    };
    let mut rows: Vec<KindRow> = by_kind
        .iter()
        .map(|(k, &(n, ns))| row(k.name(), n, ns))
        .collect();
    rows.push(row("all", window.len(), total_ns));
    Ok((steps, rows))
}

const HEADER: &str =
    "compute,kind,launches,steps,launches_per_step,kernel_us_per_step,share_of_kernel_time";

pub fn run(args: &KernelsArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.ncu)
        .with_context(|| format!("cannot read {}", args.ncu.display()))?;
    let launches = read_ncu(&text, &args.ncu)?;
    let (steps, rows) = per_step(&launches, args.passes_per_step)
        .with_context(|| args.ncu.display().to_string())?;
    let mut out = match std::fs::read_to_string(&args.out) {
        Ok(existing) if !existing.is_empty() => {
            if existing.lines().next() != Some(HEADER) {
                bail!(
                    "{}: its header is not {HEADER:?}; write to a new file",
                    args.out.display()
                );
            }
            existing
        }
        _ => format!("{HEADER}\n"),
    };
    for r in &rows {
        out.push_str(&format!(
            "{},{},{},{steps},{:.1},{:.1},{:.4}\n",
            args.label, r.kind, r.launches, r.launches_per_step, r.microseconds_per_step, r.share
        ));
        println!(
            "{:>26}: {:>6.1} launches, {:>8.1} us per step ({:.1}%)",
            r.kind,
            r.launches_per_step,
            r.microseconds_per_step,
            100.0 * r.share
        );
    }
    println!("{steps} whole steps captured");
    atomic_file::write(&args.out, out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    println!("wrote {}", args.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kernel names as an H200 capture of our RoBERTa forward printed them
    /// (`results/perf/h200-2026-11-30c/run-f/ncu-forward-ours.csv.gz`), and our NVRTC passes.
    #[test]
    fn kernels_are_sorted_by_what_they_do() {
        let cases = [
            ("sm90_xmma_gemm_f32f32_tf32f32_f32_tn_n_tilesize128x128x32_warpgroupsize1x1x1_execute_segment_k_off_kernel__5x_cublas", KernelKind::MatrixProducts),
            ("sm80_xmma_gemm_f32f32_tf32f32_f32_tn_n_tilesize32x32x64_stage3_warpsize2x2x1_tensor16x8x8_aligna4_alignc4_execute_kernel__5x_cublas", KernelKind::MatrixProducts),
            ("fmha_cutlassF_f32_aligned_64x64_rf_sm80", KernelKind::Attention),
            ("void <unnamed>::softmax_warp_forward<float, float, float, 1, 1, 0>", KernelKind::Attention),
            ("perturb_dense_f32", KernelKind::PerturbationPasses),
            ("perturb_masked_bf16", KernelKind::PerturbationPasses),
            ("void at::<unnamed>::vectorized_layer_norm_kernel<float, float, 0>", KernelKind::NormsAndReductions),
            ("void at::reduce_kernel<512, 1, at::ReduceOp<long, at::func_wrapper_t<long, at::MaxNanFunctor<long>>, unsigned int, long, 4, 4>>", KernelKind::NormsAndReductions),
            ("void at::vectorized_gather_kernel<16, long>", KernelKind::CopiesAndGathers),
            ("void at::<unnamed>::CatArrayBatchedCopy_alignedK_contig<at::<unnamed>::OpaqueType<8>, unsigned int, 1, 128, 1, 16>", KernelKind::CopiesAndGathers),
            ("void at::vectorized_elementwise_kernel<4, at::FillFunctor<float>, std::array<char *, 1>>", KernelKind::CopiesAndGathers),
            ("void at::<unnamed>::indexSelectSmallIndex<float, long, unsigned int, 2, 2, -2, true>", KernelKind::CopiesAndGathers),
            ("void at::vectorized_elementwise_kernel<4, at::CUDAFunctor_add<float>, std::array<char *, 3>>", KernelKind::Elementwise),
            ("void at::vectorized_elementwise_kernel<4, at::GeluCUDAKernelImpl(at::TensorIteratorBase &, at::native::GeluType)", KernelKind::Elementwise),
            // The normal draws of an RNG are not a norm.
            ("void at::<unnamed>::distribution_elementwise_grid_stride_kernel<float, 4, void templates::normal_and_transform<float, float, at::CUDAGeneratorImpl *>>", KernelKind::Elementwise),
            ("void at::tensor_kernel_scan_innermost_dim<long, std::plus<long>>", KernelKind::Other),
        ];
        for (name, kind) in cases {
            assert_eq!(KernelKind::of(name), kind, "{name}");
        }
        // Every kind's name is a CSV field as it stands.
        for (_, kind) in cases {
            assert!(!kind.name().contains([',', '"', '\n']), "{}", kind.name());
        }
    }

    /// A capture in ncu's CSV layout (the header and rows as the H200 capture above has them),
    /// with `==PROF==` lines and program output around it, thousands separators and two units.
    const CAPTURE: &str = r#"==PROF== Connected to process 1815 (/root/repro)
{"steps": 3}
"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size","Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"
"0","1815","repro","127.0.0.1","perturb_dense_f32","1","7","(256, 1, 1)","(1024, 1, 1)","0","9.0","Command line profiler metrics","gpu__time_duration.sum","us","1,200.5"
"1","1815","repro","127.0.0.1","sm90_xmma_gemm_f32f32_tf32f32_f32_tn_n_tile","1","7","(128, 1, 1)","(50, 1, 1)","0","9.0","Command line profiler metrics","gpu__time_duration.sum","ns","3,000"
==PROF== Profiling "fmha" - 2: 0%....50%....100% - 1 pass
"2","1815","repro","127.0.0.1","fmha_cutlassF_f32_aligned_64x64_rf_sm80","1","7","(128, 1, 1)","(8, 1, 1)","0","9.0","Command line profiler metrics","gpu__time_duration.sum","ns","500"
"3","1815","repro","127.0.0.1","perturb_dense_f32","1","7","(256, 1, 1)","(1024, 1, 1)","0","9.0","Command line profiler metrics","gpu__time_duration.sum","ns","1,199,500"
"4","1815","repro","127.0.0.1","sm90_xmma_gemm_f32f32_tf32f32_f32_tn_n_tile","1","7","(128, 1, 1)","(50, 1, 1)","0","9.0","Command line profiler metrics","gpu__time_duration.sum","ns","5,000"
"5","1815","repro","127.0.0.1","void at::vectorized_elementwise_kernel<4, at::CUDAFunctor_add<float>>","1","7","(128, 1, 1)","(50, 1, 1)","0","9.0","Command line profiler metrics","gpu__time_duration.sum","ns","800"
"6","1815","repro","127.0.0.1","perturb_dense_f32","1","7","(256, 1, 1)","(1024, 1, 1)","0","9.0","Command line profiler metrics","gpu__time_duration.sum","ns","1,000"
==PROF== Disconnected from process 1815
"#;

    #[test]
    fn a_capture_is_read_and_split_per_step() {
        let launches = read_ncu(CAPTURE, Path::new("cap.csv")).unwrap();
        assert_eq!(launches.len(), 7);
        assert_eq!(launches[0].nanoseconds, 1_200_500.0);
        assert_eq!(launches[3].nanoseconds, 1_199_500.0);
        // Passes at launches 0, 3 and 6; at 2 per step the window 1..=6 is one whole step (the
        // first pass, which closes a step begun before the capture, is left out).
        let (steps, rows) = per_step(&launches, 2).unwrap();
        assert_eq!(steps, 1);
        let get = |rows: &[KindRow], kind: &str| rows.iter().find(|r| r.kind == kind).cloned();
        let passes = get(&rows, "perturbation passes").unwrap();
        assert_eq!(passes.launches, 2);
        assert!((passes.microseconds_per_step - 1200.5).abs() < 1e-9);
        let products = get(&rows, "matrix products").unwrap();
        assert_eq!(products.launches, 2);
        assert!((products.microseconds_per_step - 8.0).abs() < 1e-9);
        assert!((get(&rows, "attention").unwrap().microseconds_per_step - 0.5).abs() < 1e-9);
        let all = get(&rows, "all").unwrap();
        assert_eq!(all.launches, 6);
        assert!((all.microseconds_per_step - 1209.8).abs() < 1e-9);
        let shares: f64 = rows
            .iter()
            .filter(|r| r.kind != "all")
            .map(|r| r.share)
            .sum();
        assert!((shares - 1.0).abs() < 1e-12);
        // One pass per step: the same window is two steps, half of everything per step.
        let (steps, rows) = per_step(&launches, 1).unwrap();
        assert_eq!(steps, 2);
        assert!((get(&rows, "all").unwrap().microseconds_per_step - 604.9).abs() < 1e-9);
        // Three passes per step: no whole step between the first pass and a later one.
        let err = per_step(&launches, 3).unwrap_err();
        assert!(
            format!("{err:#}").contains("a whole step needs 4"),
            "{err:#}"
        );
    }

    #[test]
    fn bad_captures_are_refused_naming_the_line() {
        let path = Path::new("cap.csv");
        let err = read_ncu("==PROF== nothing\n", path).unwrap_err();
        assert!(format!("{err:#}").contains("no ncu CSV header"), "{err:#}");
        let bad_unit = CAPTURE.replace("\"us\",\"1,200.5\"", "\"cycle\",\"12\"");
        let err = read_ncu(&bad_unit, path).unwrap_err();
        assert!(
            format!("{err:#}").contains("cap.csv:4: unknown duration unit \"cycle\""),
            "{err:#}"
        );
        let bad_value = CAPTURE.replace("\"ns\",\"500\"", "\"ns\",\"n/a\"");
        let err = read_ncu(&bad_value, path).unwrap_err();
        assert!(
            format!("{err:#}").contains("cap.csv:7: duration \"n/a\""),
            "{err:#}"
        );
        let other_metric = CAPTURE.replace("gpu__time_duration.sum", "sm__cycles_elapsed.avg");
        let err = read_ncu(&other_metric, path).unwrap_err();
        assert!(
            format!("{err:#}").contains("no gpu__time_duration.sum rows"),
            "{err:#}"
        );
        let no_pass: Vec<Launch> = read_ncu(CAPTURE, path)
            .unwrap()
            .into_iter()
            .filter(|l| !l.name.starts_with("perturb"))
            .collect();
        let err = per_step(&no_pass, 2).unwrap_err();
        assert!(
            format!("{err:#}").contains("0 perturbation passes (perturb_* kernels) among 4"),
            "{err:#}"
        );
        assert!(per_step(&read_ncu(CAPTURE, path).unwrap(), 0).is_err());
    }
}
