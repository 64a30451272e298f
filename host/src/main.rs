use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use kusto_metrics::cli::{Cli, Command, GuestArgs};
use kusto_metrics::transform::{Limits, Runtime, cache};
use kusto_metrics::{telemetry, test_transform};

// Measured: glibc malloc made native OTLP building ~1.5x slower and the first
// instantiation after a large batch 20-40x slower.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_logging(cli.log_format, &cli.log_level);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::TestTransform(args) => {
            let runtime = runtime(&args.guest)?;
            let options = test_transform::Options {
                transform: args.transform,
                input: args.input,
                module: args.module,
                pretty: !args.compact,
            };
            let (stdout, summary) = test_transform::run(&runtime, &options)?;
            eprint!("{summary}");
            let mut out = std::io::stdout().lock();
            writeln!(out, "{stdout}").context("writing to stdout")?;
            Ok(())
        }
    }
}

fn runtime(args: &GuestArgs) -> anyhow::Result<Runtime> {
    let cache_dir = if args.no_cache {
        None
    } else {
        args.cache_dir.clone().or_else(cache::default_cache_dir)
    };
    let limits = Limits {
        max_memory: args.guest_memory_mib << 20,
        deadline: args.guest_deadline,
        ..Limits::default()
    };
    Runtime::new(cache_dir, limits).context("starting the WebAssembly runtime")
}
