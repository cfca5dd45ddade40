//! `repro perf-table`: rebuilds `results/perf/zo_step.csv` from the GPU run folders it names.
//!
//! Each folder is one call of `scripts/perf/run_gpu.sh`. Within a folder the files are read in
//! [`SOURCES`] order and across folders in the order given; a later row replaces an earlier one
//! with the same (model, dtype, batch, seq, method, impl). So the command line states which
//! measurement wins, and the table is a function of the committed folders.
//!
//! Our `dp-sgd` method was per-example micro-batch clipping until ghost clipping became its
//! default; that method is now `dp-sgd-microbatch`. Folders measured before the change are named
//! in `--microbatch-dp-sgd`, and their `ours` `dp-sgd` rows enter the table as
//! `dp-sgd-microbatch`, so one method name never stands for two algorithms.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

/// Files of a run folder, in the order they override each other: exact normal math (older runs'
/// default), then fast (the default since), the PyTorch reference, the TF32 variants, then the
/// per-model folders of `scripts/gpu/dp_sgd.sh`.
pub const SOURCES: [&str; 11] = [
    "memory-exact/zo_step.csv",
    "mem/zo_step.csv",
    "memory-fast/zo_step.csv",
    "reference.csv",
    "memory-tf32-exact/zo_step.csv",
    "memory-tf32-fast/zo_step.csv",
    "reference-tf32.csv",
    "memory-roberta-large/zo_step.csv",
    "memory-opt-2.7b/zo_step.csv",
    "memory-smollm2-135m/zo_step.csv",
    "memory-opt-1.3b/zo_step.csv",
];

/// The methods of the `zo_step.csv` contract, in the table's order.
pub const METHODS: [&str; 9] = [
    "infer",
    "zo",
    "zo-paired",
    "dp-zoso",
    "dp-zopo",
    "dp-sgd",
    "dp-sgd-microbatch",
    "backprop",
    "backprop-sgd",
];

/// Columns of `zo_step.csv`; the first six identify a row.
pub const HEADER: [&str; 8] = [
    "model",
    "dtype",
    "batch",
    "seq",
    "method",
    "impl",
    "ms_median",
    "peak_bytes",
];

#[derive(Args, Debug)]
pub struct PerfTableArgs {
    /// Run folders, earliest first (comma-separated or repeated); later rows win.
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    pub from: Vec<PathBuf>,
    /// Run folders (each also given in `--from`) measured before ghost clipping became DP-SGD's
    /// default: their `dp-sgd` rows of our implementation are the micro-batch method and enter
    /// the table as `dp-sgd-microbatch`.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub microbatch_dp_sgd: Vec<PathBuf>,
    /// Folder to write `zo_step.csv` into.
    #[arg(long, default_value = "results/perf")]
    pub out: PathBuf,
}

pub fn run(args: PerfTableArgs) -> Result<()> {
    let rows = merged(&args.from, &args.microbatch_dp_sgd)?;
    let path = args.out.join("zo_step.csv");
    atomic_file::write(&path, to_csv(&rows)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {} rows to {}", rows.len(), path.display());
    Ok(())
}

/// One row of `zo_step.csv`, values as measured (text, not re-formatted).
type Row = [String; 8];

/// The merged table of `runs`: rows of the contract's methods with a measured time, the last
/// occurrence of each key winning, sorted by model, batch (largest first), method, impl. Our
/// `dp-sgd` rows of the folders in `microbatch` are renamed `dp-sgd-microbatch`.
pub fn merged(runs: &[PathBuf], microbatch: &[PathBuf]) -> Result<Vec<Row>> {
    for run in runs {
        if !run.is_dir() {
            bail!("run folder {} does not exist", run.display());
        }
    }
    for run in microbatch {
        if !runs.contains(run) {
            bail!(
                "--microbatch-dp-sgd {}: not among the --from folders",
                run.display()
            );
        }
    }
    // Insertion order is kept for keys (a replaced row keeps its first place), as ties of the
    // sort (e.g. f32 and tf32 rows) are resolved by it.
    let mut index: HashMap<[String; 6], usize> = HashMap::new();
    let mut rows: Vec<Row> = Vec::new();
    for run in runs {
        for name in SOURCES {
            let path = run.join(name);
            if !path.exists() {
                continue;
            }
            for mut row in read_rows(&path)? {
                if microbatch.contains(run) && row[4] == "dp-sgd" && row[5] == "ours" {
                    row[4] = "dp-sgd-microbatch".to_string();
                }
                let key: [String; 6] = std::array::from_fn(|i| row[i].clone());
                match index.get(&key) {
                    Some(&at) => rows[at] = row,
                    None => {
                        index.insert(key, rows.len());
                        rows.push(row);
                    }
                }
            }
        }
    }
    let order = |method: &str| METHODS.iter().position(|m| *m == method);
    let mut keyed = Vec::with_capacity(rows.len());
    for row in rows {
        let batch: i64 = row[2]
            .parse()
            .with_context(|| format!("batch {:?} is not an integer", row[2]))?;
        keyed.push((
            (row[0].clone(), -batch, order(&row[4]), row[5].clone()),
            row,
        ));
    }
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(keyed.into_iter().map(|(_, row)| row).collect())
}

/// The rows of one CSV with the `HEADER` columns, keeping the contract's methods and dropping
/// failed measurements (`ms_median` NaN).
fn read_rows(path: &Path) -> Result<Vec<Row>> {
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let headers = reader
        .headers()
        .with_context(|| format!("reading {}", path.display()))?
        .clone();
    let columns: Vec<usize> = HEADER
        .iter()
        .map(|name| {
            headers
                .iter()
                .position(|h| h == *name)
                .with_context(|| format!("{}: no column {name:?}", path.display()))
        })
        .collect::<Result<_>>()?;
    let mut rows = Vec::new();
    for (line, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("reading {}", path.display()))?;
        let row: Row = std::array::from_fn(|i| record.get(columns[i]).unwrap_or("").to_string());
        if !METHODS.contains(&row[4].as_str()) {
            continue;
        }
        let ms: f64 = row[6].parse().with_context(|| {
            format!(
                "{}:{}: ms_median {:?} is not a number",
                path.display(),
                line + 2,
                row[6]
            )
        })?;
        if !ms.is_nan() {
            rows.push(row);
        }
    }
    Ok(rows)
}

fn to_csv(rows: &[Row]) -> Result<Vec<u8>> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    writer.write_record(HEADER)?;
    for row in rows {
        writer.write_record(row)?;
    }
    Ok(writer.into_inner().map_err(|e| e.into_error())?)
}
