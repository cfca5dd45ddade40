//! `repro`: regenerates the results of Liu et al., "Differentially Private Zeroth-Order Methods for
//! Scalable Large Language Model Fine-tuning" (NDSS 2025) next to the published numbers.

use clap::{Parser, Subcommand};

#[cfg(feature = "torch")]
mod eval_cmd;
#[cfg(feature = "torch")]
mod memory_cmd;
#[cfg(feature = "torch")]
mod model_cmd;
mod perf_table;
mod privacy;
mod provenance;
mod target;
mod tasks;
mod theory_cmd;
#[cfg(feature = "torch")]
mod throughput_cmd;

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
    Theory(theory_cmd::TheoryArgs),
    /// RoBERTa-large results (the paper's figure), regenerated and compared cell by cell.
    #[cfg(feature = "torch")]
    Table2(target::TargetArgs),
    /// OPT-2.7B results (MeZO protocol), compared with the paper's published deltas.
    #[cfg(feature = "torch")]
    Table3(target::TargetArgs),
    /// Rebuild `results/perf/zo_step.csv` from the GPU run folders it names (later ones win).
    PerfTable(perf_table::PerfTableArgs),
    /// Write a result folder's provenance.json (commit, device, driver, date, command).
    Provenance(provenance::ProvenanceArgs),
    /// Re-render a target's summary, comparison and plot from its run records, running nothing.
    Check(target::CheckArgs),
    /// Zero-shot accuracy of a checkpoint on one task's test split.
    #[cfg(feature = "torch")]
    Eval(eval_cmd::EvalArgs),
    /// Peak GPU memory and step time of every method (random weights, published configs).
    #[cfg(feature = "torch")]
    Memory(memory_cmd::MemoryArgs),
    /// Throughput and fidelity of reduced-precision compute for a grid's small cells.
    #[cfg(feature = "torch")]
    Throughput(throughput_cmd::ThroughputArgs),
    /// One cell of `memory`, measured in this process (used by `memory`; JSON on stdout).
    #[cfg(feature = "torch")]
    #[command(hide = true)]
    MemoryCell(memory_cmd::CellArgs),
    /// Print the device this binary selects (`cpu`, or `cuda` on a GPU host).
    #[cfg(feature = "torch")]
    Device(model_cmd::DeviceArgs),
    /// Full-vocabulary logits at one position for one sequence (parity contract).
    #[cfg(feature = "torch")]
    Logits(model_cmd::LogitsArgs),
    /// Peak host memory of loading a checkpoint, against the model's size (JSON on stdout).
    #[cfg(feature = "torch")]
    LoadMemory(model_cmd::LoadMemoryArgs),
    /// Convert a Llama GGUF file into a Hugging Face checkpoint directory.
    #[cfg(feature = "torch")]
    ExportHf(model_cmd::ExportHfArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Privacy(args) => privacy::run(args),
        Command::Theory(args) => theory_cmd::run(args),
        Command::Check(args) => target::check(args),
        Command::PerfTable(args) => perf_table::run(args),
        Command::Provenance(args) => provenance::run(args),
        #[cfg(feature = "torch")]
        Command::Table2(args) => target::run_paper_target("table2", args),
        #[cfg(feature = "torch")]
        Command::Table3(args) => target::run_paper_target("table3", args),
        #[cfg(feature = "torch")]
        Command::Eval(args) => eval_cmd::run(args),
        #[cfg(feature = "torch")]
        Command::Memory(args) => memory_cmd::run(args),
        #[cfg(feature = "torch")]
        Command::MemoryCell(args) => memory_cmd::cell(args),
        #[cfg(feature = "torch")]
        Command::Throughput(args) => throughput_cmd::run(args),
        #[cfg(feature = "torch")]
        Command::Device(args) => model_cmd::device(args),
        #[cfg(feature = "torch")]
        Command::Logits(args) => model_cmd::logits(args),
        #[cfg(feature = "torch")]
        Command::LoadMemory(args) => model_cmd::load_memory(args),
        #[cfg(feature = "torch")]
        Command::ExportHf(args) => model_cmd::export_hf(args),
    };
    if let Err(err) = result {
        // One line on stderr, non-zero exit: scripts rely on this contract.
        eprintln!("error: {}", format!("{err:#}").replace('\n', " "));
        std::process::exit(1);
    }
}
