//! The `kefu-loadgen` binary: the command line of [`kefu_loadgen::cli`].

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    kefu_loadgen::run(kefu_loadgen::cli::Cli::parse())
}
