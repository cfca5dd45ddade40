//! `repro provenance`: a result folder's `provenance.json` (crate::provenance).

use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

use crate::provenance::{check_date, nvidia_smi, Provenance, FILE};

/// `repro provenance`: writes a result folder's `provenance.json`: this process's (the GPU
/// scripts call it with the script's command), or, with `--reconstructed-from`, exactly the
/// fields given and `null` for the rest (for folders written before the file existed).
#[derive(Args, Debug)]
pub struct ProvenanceArgs {
    /// The folder to write `provenance.json` into.
    #[arg(long)]
    pub out: PathBuf,
    /// The command that produced the folder's results (may be left out only with
    /// `--reconstructed-from`, where no source records it).
    #[arg(long, required_unless_present = "reconstructed_from")]
    pub command: Option<String>,
    /// `cpu` or `cuda`; default: `cuda` where `nvidia-smi` names a GPU, else `cpu`.
    #[arg(long)]
    pub device: Option<String>,
    /// The files the fields are taken from; nothing is detected, fields not given are `null`.
    #[arg(long)]
    pub reconstructed_from: Option<String>,
    /// With `--reconstructed-from`: the commit of the code that ran.
    #[arg(long, requires = "reconstructed_from")]
    pub git_commit: Option<String>,
    /// With `--reconstructed-from`: whether that code had uncommitted changes.
    #[arg(long, requires = "reconstructed_from")]
    pub git_dirty: Option<bool>,
    /// With `--reconstructed-from`: the GPU's name.
    #[arg(long, requires = "reconstructed_from")]
    pub gpu: Option<String>,
    /// With `--reconstructed-from`: the NVIDIA driver version.
    #[arg(long, requires = "reconstructed_from")]
    pub driver: Option<String>,
    /// With `--reconstructed-from`: the libtorch release.
    #[arg(long, requires = "reconstructed_from")]
    pub libtorch: Option<String>,
    /// With `--reconstructed-from`: the UTC date and time (RFC 3339) of the run.
    #[arg(long, requires = "reconstructed_from")]
    pub date: Option<String>,
}

pub fn run(args: ProvenanceArgs) -> Result<()> {
    let device = match args.device.as_deref() {
        Some(d @ ("cpu" | "cuda")) => d.to_string(),
        Some(other) => bail!("--device {other}: expected cpu or cuda"),
        None if args.reconstructed_from.is_some() => {
            bail!("--reconstructed-from needs --device")
        }
        None => {
            if nvidia_smi().0.is_some() {
                "cuda".into()
            } else {
                "cpu".into()
            }
        }
    };
    if let Some(date) = &args.date {
        check_date(date)?;
    }
    let provenance = match &args.reconstructed_from {
        None => Provenance {
            command: args.command.clone(),
            ..Provenance::collect(&device)
        },
        Some(sources) => Provenance {
            git_commit: args.git_commit.clone(),
            git_dirty: args.git_dirty,
            device,
            gpu: args.gpu.clone(),
            driver: args.driver.clone(),
            libtorch: args.libtorch.clone(),
            date: args.date.clone(),
            host: None,
            repro_version: None,
            command: args.command.clone(),
            reconstructed_from: Some(sources.clone()),
        },
    };
    provenance.write_to_folder(&args.out)?;
    println!("wrote {}", args.out.join(FILE).display());
    Ok(())
}
