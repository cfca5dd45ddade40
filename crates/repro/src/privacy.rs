//! `repro privacy …`: the accountant's command-line contract.

#[derive(clap::Args)]
pub struct PrivacyArgs {}

pub fn run(_args: PrivacyArgs) -> anyhow::Result<()> {
    anyhow::bail!("repro privacy is not implemented yet")
}
