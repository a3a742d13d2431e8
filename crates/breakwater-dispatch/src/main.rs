//! The `breakwater` binary: see [`breakwater_dispatch`].
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    breakwater_dispatch::cli::main()
}
