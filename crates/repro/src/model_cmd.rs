//! Model-level commands: `device`, `logits`.

use trainer::device::{self, DeviceRequest};

#[derive(clap::Args)]
pub struct DeviceArgs {
    /// auto picks CUDA when libtorch_cuda.so loads and a GPU is visible.
    #[arg(long, default_value = "auto")]
    pub device: DeviceRequest,
}

pub fn device(args: DeviceArgs) -> anyhow::Result<()> {
    let dev = device::select(args.device).map_err(anyhow::Error::msg)?;
    println!("device: {}", device::name(dev));
    if dev != tch::Device::Cpu {
        println!("cuda devices: {}", tch::Cuda::device_count());
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct LogitsArgs {}

pub fn logits(_args: LogitsArgs) -> anyhow::Result<()> {
    anyhow::bail!("repro logits is not implemented yet")
}
