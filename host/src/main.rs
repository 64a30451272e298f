use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;

use kusto_metrics::cli::{Cli, Command, GuestArgs, GuestCommand, GuestNewArgs, RunArgs};
use kusto_metrics::config::HostConfig;
use kusto_metrics::config::host_config::Overrides;
use kusto_metrics::schedule::{self, Runner};
use kusto_metrics::state::status::StatusStore;
use kusto_metrics::telemetry::Metrics;
use kusto_metrics::telemetry::server::{self, Health};
use kusto_metrics::transform::{Limits, Runtime, cache};
use kusto_metrics::{telemetry, test_transform};

// Measured: glibc malloc made native OTLP building ~1.5x slower and the first
// instantiation after a large batch 20-40x slower.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // oci-client's HTTP stack uses rustls without a built-in crypto
    // provider; ring is the one the rest of the binary uses.
    let _ = rustls::crypto::ring::default_provider().install_default();
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
        Command::Run(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .max_blocking_threads(kusto_metrics::config::host_config::MAX_BLOCKING_THREADS)
                .build()
                .context("starting the async runtime")?;
            let all_ok = runtime.block_on(run_exports(args))?;
            if !all_ok {
                anyhow::bail!(
                    "some exports failed (see the log above); their rows go out on a later run"
                );
            }
            Ok(())
        }
        Command::Crds(args) => {
            let Some(dir) = args.dir else {
                let mut out = std::io::stdout().lock();
                write!(out, "{}", kusto_metrics::api::crds::stream())
                    .context("writing to stdout")?;
                return Ok(());
            };
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for (name, yaml) in kusto_metrics::api::crds::all() {
                let path = dir.join(name);
                std::fs::write(&path, yaml)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(())
        }
        Command::Guest(GuestCommand::New(args)) => guest_new(args),
        Command::TestTransform(args) => {
            let runtime = runtime(&args.guest)?;
            let options = test_transform::Options {
                transform: args.transform,
                input: args.input,
                module: args.module,
                pretty: !args.compact,
                expect: args.expect,
                registries: kusto_metrics::transform::modules::config::RegistriesConfig {
                    insecure: args.insecure_registries,
                    docker_config: args.docker_config,
                    timeout: args.registry_timeout,
                    ..Default::default()
                },
                blob_dir: args.guest.cache_dir.as_ref().map(|d| d.join("modules")),
                namespace: args.namespace,
            };
            let ran = test_transform::run(&runtime, &options)?;
            eprint!("{}", ran.summary);
            match (&options.expect, ran.mismatch) {
                (None, _) => {
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{}", ran.output).context("writing to stdout")?;
                    Ok(())
                }
                (Some(path), None) => {
                    eprintln!("the output matches {}", path.display());
                    Ok(())
                }
                (Some(_), Some(report)) => anyhow::bail!(report),
            }
        }
    }
}

fn guest_new(args: GuestNewArgs) -> anyhow::Result<()> {
    use kusto_metrics::guest_new::{self, SdkSource};
    let sdk = match (args.sdk_path, args.sdk_git) {
        (Some(path), _) => SdkSource::Path(std::path::absolute(&path).unwrap_or(path)),
        (None, Some(url)) => SdkSource::Git {
            url,
            rev: args.sdk_rev,
        },
        (None, None) => SdkSource::built_from_checkout().context(
            "this binary was not built from a kusto-metrics checkout that is still here: \
             say where the SDK is with --sdk-git URL (the kusto-metrics repository) or --sdk-path DIR",
        )?,
    };
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    let options = guest_new::Options {
        name: args.name,
        lang: args.lang,
        dir,
        sdk,
    };
    let files = guest_new::write(&options)?;
    let shown = options.dir.display();
    eprintln!("wrote {shown}: {}", files.join(", "));
    eprintln!(
        "next: cd {shown} && KUSTO_METRICS={} ./test.sh",
        std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "kusto-metrics".into())
    );
    Ok(())
}

async fn run_exports(args: RunArgs) -> anyhow::Result<bool> {
    let overrides = Overrides {
        kusto_endpoints: args.kusto_endpoints.clone(),
        kusto_auth: args.kusto_auth,
        settle_delay: args.settle_delay,
        cluster_labels: args.cluster_labels.clone(),
        metric_name_prefix: args.metric_name_prefix.clone(),
        resource_attributes: args.resource_attributes.clone(),
    };
    let config = Arc::new(HostConfig::load_with(&args.config, &overrides)?);
    if args.once && config.kubernetes.is_some() {
        anyhow::bail!(
            "{}: {}",
            config.path.display(),
            kusto_metrics::schedule::cluster::ONCE_REFUSED
        );
    }
    if config.tenancy.is_none() {
        tracing::info!(config = %config.path.display(), "no tenancy policy (tenancy:) is set: every namespace may read every database the host can");
    }
    let cache_dir = config.cache_dir.clone().or_else(cache::default_cache_dir);
    let wasm =
        Runtime::new(cache_dir, config.guest_limits).context("starting the WebAssembly runtime")?;
    let metrics = Arc::new(Metrics::new());
    let health = Health::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let statuses = match &config.kubernetes {
        None => None,
        Some(k) => {
            let client = kube::Client::try_default().await.context(
                "connecting to the Kubernetes API (in-cluster, or KUBECONFIG); set `manifests` in the config to run from a folder instead",
            )?;
            Some(Arc::new(StatusStore::new(client, &k.identity())))
        }
    };
    let runner = Runner::new(config.clone(), wasm, metrics.clone(), statuses)?;
    if let Some(addr) = config.listen {
        let bound = server::serve(
            addr,
            metrics.clone(),
            health.clone(),
            runner.scrape_endpoints(),
            config.scrape_token.clone(),
            stopped(stop_rx.clone()),
        )
        .await
        .with_context(|| format!("serving /metrics on {addr}"))?;
        tracing::info!(address = %bound, scrape_token = config.scrape_token.as_ref().map(|t| t.origin()), "serving /metrics, /healthz, /readyz");
    }
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    schedule::run(config, runner, health, args.once, stopped(stop_rx)).await
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
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
