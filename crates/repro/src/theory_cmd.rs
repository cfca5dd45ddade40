//! `repro theory …`: synthetic-quadratic checks of the zeroth-order and DP claims.

#[derive(clap::Args)]
pub struct TheoryArgs {}

pub fn run(_args: TheoryArgs) -> anyhow::Result<()> {
    anyhow::bail!("repro theory is not implemented yet")
}
