//! The `breakwater` binary: see [`breakwater_dispatch`].
#![forbid(unsafe_code)]

/// mimalloc rather than the system allocator: a delivery allocates and frees
/// many small buffers across threads, where glibc's malloc spent about a
/// seventh of the service's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    breakwater_dispatch::cli::main()
}
