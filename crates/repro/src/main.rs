//! `repro`: regenerates the results of Liu et al., "Differentially Private Zeroth-Order Methods for
//! Scalable Large Language Model Fine-tuning" (NDSS 2025) next to the published numbers.

use clap::{error::ErrorKind, Parser, Subcommand};

mod commands;
mod provenance;
mod target;
#[cfg(feature = "torch")]
mod tasks;

use commands::{compact_records, perf_table, privacy, theory};
#[cfg(feature = "torch")]
use commands::{device, eval, export_hf, load_memory, logits, mask_anatomy, memory, throughput};

#[derive(Parser)]
#[command(name = "repro", version, about = "Reproduce DP-ZOSO / DP-ZOPO results")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Privacy accounting: epsilon, delta, sigma, per-step RDP and the paper's sigma table.
    Privacy(privacy::PrivacyArgs),
    /// The zeroth-order and DP claims on synthetic quadratics: curves, plots and checks.
    Theory(theory::TheoryArgs),
    /// RoBERTa-large results (the paper's figure), regenerated and compared cell by cell.
    #[cfg(feature = "torch")]
    Table2(target::TargetArgs),
    /// OPT-2.7B results (MeZO protocol), compared with the paper's published deltas.
    #[cfg(feature = "torch")]
    Table3(target::TargetArgs),
    /// Rebuild `results/perf/zo_step.csv` from the GPU run folders it names (later ones win).
    PerfTable(perf_table::PerfTableArgs),
    /// Write a result folder's provenance.json (commit, device, driver, date, command).
    Provenance(commands::provenance::ProvenanceArgs),
    /// Ablations of DP-ZOSO / DP-ZOPO (experiments/ablations.toml), each variant against its
    /// reference with a 95% CI.
    #[cfg(feature = "torch")]
    Ablations(target::TargetArgs),
    /// Re-render a target's summary, comparison and plot from its run records, running nothing.
    Check(target::CheckArgs),
    /// Move the per-step trainer record of every run record under a folder into its sidecar
    /// (`<stem>.steps.jsonl.gz`), verified lossless; idempotent.
    CompactRecords(compact_records::CompactRecordsArgs),
    /// Zero-shot accuracy of a checkpoint on one task's test split.
    #[cfg(feature = "torch")]
    Eval(eval::EvalArgs),
    /// Where DP-ZOPO's data-free mask falls in the model, and how much of it the task's
    /// training data gives a gradient (released, largest-score, magnitude and random selections).
    #[cfg(feature = "torch")]
    MaskAnatomy(mask_anatomy::MaskAnatomyArgs),
    /// Peak GPU memory and step time of every method (random weights, published configs).
    #[cfg(feature = "torch")]
    Memory(memory::MemoryArgs),
    /// Throughput and fidelity of reduced-precision compute for a grid's small cells.
    #[cfg(feature = "torch")]
    Throughput(throughput::ThroughputArgs),
    /// One cell of `memory`, measured in this process (used by `memory`; JSON on stdout).
    #[cfg(feature = "torch")]
    #[command(hide = true)]
    MemoryCell(memory::CellArgs),
    /// Print the device this binary selects (`cpu`, or `cuda` on a GPU host).
    #[cfg(feature = "torch")]
    Device(device::DeviceArgs),
    /// Full-vocabulary logits at one position for one sequence (parity contract).
    #[cfg(feature = "torch")]
    Logits(logits::LogitsArgs),
    /// Peak host memory of loading a checkpoint, against the model's size (JSON on stdout).
    #[cfg(feature = "torch")]
    LoadMemory(load_memory::LoadMemoryArgs),
    /// Convert a Llama GGUF file into a Hugging Face checkpoint directory.
    #[cfg(feature = "torch")]
    ExportHf(export_hf::ExportHfArgs),
}

fn main() {
    let cli = Cli::try_parse().unwrap_or_else(|err| match err.kind() {
        // A bad value (e.g. `--device tpu`) is one line on stderr like every other error.
        ErrorKind::InvalidValue | ErrorKind::ValueValidation => {
            eprintln!("{}", one_line_usage_error(&err.render().to_string()));
            std::process::exit(2);
        }
        _ => err.exit(),
    });
    let result = match cli.command {
        Command::Privacy(args) => privacy::run(args),
        Command::Theory(args) => theory::run(args),
        Command::Check(args) => target::check(args),
        Command::PerfTable(args) => perf_table::run(args),
        Command::CompactRecords(args) => compact_records::run(args),
        Command::Provenance(args) => commands::provenance::run(args),
        #[cfg(feature = "torch")]
        Command::Table2(args) => target::run_paper_target("table2", args),
        #[cfg(feature = "torch")]
        Command::Table3(args) => target::run_paper_target("table3", args),
        #[cfg(feature = "torch")]
        Command::Ablations(args) => target::run_paper_target("ablations", args),
        #[cfg(feature = "torch")]
        Command::Eval(args) => eval::run(args),
        #[cfg(feature = "torch")]
        Command::Memory(args) => memory::run(args),
        #[cfg(feature = "torch")]
        Command::MemoryCell(args) => memory::run_cell(args),
        #[cfg(feature = "torch")]
        Command::Throughput(args) => throughput::run(args),
        #[cfg(feature = "torch")]
        Command::MaskAnatomy(args) => mask_anatomy::run(args),
        #[cfg(feature = "torch")]
        Command::Device(args) => device::run(args),
        #[cfg(feature = "torch")]
        Command::Logits(args) => logits::run(args),
        #[cfg(feature = "torch")]
        Command::LoadMemory(args) => load_memory::run(args),
        #[cfg(feature = "torch")]
        Command::ExportHf(args) => export_hf::run(args),
    };
    if let Err(err) = result {
        // One line on stderr, non-zero exit: scripts rely on this contract.
        eprintln!("error: {}", error_line(&err));
        std::process::exit(1);
    }
}

/// The error and its causes on one line, `outer: inner`. A cause whose text its parent already
/// shows (a typed error whose message interpolates its `#[from]` source) is not repeated.
fn error_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    let mut parent = String::new();
    for cause in err.chain() {
        let text = cause.to_string().replace('\n', " ");
        if !parent.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        parent = text;
    }
    line
}

/// clap's message for a bad value without its blank lines and the `--help` hint.
fn one_line_usage_error(rendered: &str) -> String {
    rendered
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A typed error whose message shows its source, as trainer's `#[error("libtorch: {0}")]`.
    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "libtorch: {}", self.0)
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_source_shown_by_its_parent_is_not_repeated() {
        let io = std::io::Error::other("disk full");
        let err = anyhow::Error::from(Outer(io)).context("writing x.csv");
        assert_eq!(error_line(&err), "writing x.csv: libtorch: disk full");
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_line(&plain), "outer: inner");
    }

    #[test]
    fn a_bad_value_is_one_line_naming_it() {
        let err = match Cli::try_parse_from(["repro", "perf-table", "--from", "x", "--nope"]) {
            Err(e) => e,
            Ok(_) => panic!("parsed"),
        };
        assert_eq!(err.kind(), ErrorKind::UnknownArgument);
        let rendered = "error: invalid value 'tpu' for '--device <DEVICE>'\n  [possible values: \
                        auto, cpu, cuda]\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line_usage_error(rendered),
            "error: invalid value 'tpu' for '--device <DEVICE>' [possible values: auto, cpu, cuda]"
        );
    }
}
