//! `repro device`: the device this binary selects.

use trainer::device::{self, DeviceRequest};

#[derive(clap::Args)]
pub struct DeviceArgs {
    /// auto picks CUDA when libtorch_cuda.so loads and a GPU is visible.
    #[arg(long, default_value = "auto")]
    pub device: DeviceRequest,
}

pub fn run(args: DeviceArgs) -> anyhow::Result<()> {
    let dev = device::select(args.device).map_err(anyhow::Error::msg)?;
    println!("device: {}", device::name(dev));
    if dev != tch::Device::Cpu {
        println!("cuda devices: {}", tch::Cuda::device_count());
    }
    Ok(())
}
