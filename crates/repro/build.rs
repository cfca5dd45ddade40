// 1. tch's own rpath link argument does not reach dependants: add libtorch's lib dir to the rpath so
//    `cargo run` works without LD_LIBRARY_PATH (README "GPU").
// 2. Record the libtorch version built against, for run provenance.
// 3. The commit a bundle build was made from (`scripts/gpu-bundle.sh` sets DPZO_BUILD_COMMIT and
//    DPZO_BUILD_DIRTY; `provenance.rs` reads them with `option_env!`), so a binary run on a host
//    without the repository's git metadata still names its code.
fn main() {
    let mut version = "none".to_string();
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        version = "unknown".into();
        let stamp = std::path::Path::new(&dir).join("../../VERSION");
        if let Ok(v) = std::fs::read_to_string(&stamp) {
            version = v.trim().to_string();
        }
        println!("cargo:rerun-if-changed={}", stamp.display());
    }
    println!("cargo:rustc-env=DPZO_LIBTORCH_VERSION={version}");
    println!("cargo:rerun-if-env-changed=DPZO_BUILD_COMMIT");
    println!("cargo:rerun-if-env-changed=DPZO_BUILD_DIRTY");
}
