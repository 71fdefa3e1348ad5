//! The `kefu` binary: the command line of [`kefu::cli`].

use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    kefu::cli::run(kefu::server::run)
}
