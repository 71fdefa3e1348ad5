//! The `kefu` binary: the command line of [`kefu::cli`].

use std::process::ExitCode;

/// mimalloc, built with `no_thp` (see Cargo.toml): it does not ask for
/// transparent huge pages, so an idle gateway holds 8 MiB instead of 55 and
/// a burst of connections does not fault, compact and zero 2 MiB pages on
/// the hot path.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    kefu::cli::run(kefu::server::run)
}
