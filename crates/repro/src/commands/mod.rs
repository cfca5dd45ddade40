//! One module per `repro` subcommand (`table2`, `table3` and `check` are the paper targets of
//! `crate::target`). `main.rs` parses the command line and calls the module's `run`.

pub mod compact_records;
#[cfg(feature = "torch")]
pub mod device;
#[cfg(feature = "torch")]
pub mod eval;
#[cfg(feature = "torch")]
pub mod export_hf;
pub mod kernels;
#[cfg(feature = "torch")]
pub mod load_memory;
#[cfg(feature = "torch")]
pub mod logits;
#[cfg(feature = "torch")]
pub mod mask_anatomy;
#[cfg(feature = "torch")]
pub mod memory;
pub mod perf_table;
pub mod privacy;
pub mod provenance;
pub mod theory;
#[cfg(feature = "torch")]
pub mod throughput;
