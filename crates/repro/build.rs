// tch's own rpath link argument does not reach dependants: add libtorch's lib dir to the rpath of
// this package's test and bench binaries so they run without LD_LIBRARY_PATH (docs: README "GPU").
fn main() {
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
