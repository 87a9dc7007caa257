//! weir's binary: `weir serve` (the default) and `weir bench`.

use anyhow::Context;
use clap::Parser;
use std::future::IntoFuture;
use weir::api::{router, AppState};
use weir::config::{Cli, Command, LogFormat, Preload, ServeArgs};
use weir::manager::{ModelDecl, ModelManager};
use weir::store::pypi::DEFAULT_MODEL;

/// Logs to stderr as text or JSON lines (`--log-format`), filtered by `RUST_LOG` (default info).
fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        fmt.json()
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        fmt.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown signal");
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let cpu = weir::cpu::CpuInfo::get();
    tracing::info!(model = %cpu.model, cpus = cpu.logical_cpus, flags = %cpu.flags(), kernels = cpu.kernels(), "cpu");
    let limits = args.validate().map_err(anyhow::Error::msg)?;
    let options = args.server_options().map_err(anyhow::Error::msg)?;
    let metrics = std::sync::Arc::new(weir::metrics::Metrics::new());
    let mut decls = args.model_decls().map_err(anyhow::Error::msg)?;
    let dummy = limits.load_format == weir::models::weights::LoadFormat::Dummy;
    if decls.is_empty() && dummy {
        anyhow::bail!("--load-format dummy needs --model ID=PATH to a config.json");
    }
    // with no model declared, serve the default one (fetched once, loaded at start)
    let default_only = decls.is_empty();
    if default_only {
        let path = DEFAULT_MODEL
            .fetch(&args.cache_dir(), &args.pip_index_url)
            .await
            .context("fetching the default model")?;
        decls.push(ModelDecl::new(weir::store::ModelSpec {
            id: DEFAULT_MODEL.id.to_string(),
            source: path.display().to_string(),
        }));
    }
    args.attach_loras(&mut decls).map_err(anyhow::Error::msg)?;
    // a config weir cannot serve right refuses to start, in one line naming the model and field
    for d in &decls {
        weir::manager::loader::check_local_config(&d.spec.source)
            .map_err(|e| anyhow::anyhow!("model {}: {e}", d.spec.id))?;
    }
    let preload_plan = args.preload_plan(default_only);
    let manager_limits = args.manager_limits(limits).map_err(anyhow::Error::msg)?;
    let models = ModelManager::new(decls, manager_limits, args.sources(), metrics.clone())
        .map_err(anyhow::Error::msg)?;
    let kv_events = match args.kv_events().map_err(anyhow::Error::msg)? {
        // a router reads one replica's events as one model's cache
        Some(_) if models.ids().count() > 1 => {
            anyhow::bail!("KV cache events describe one model's cache: serve one model per replica with --kv-events-config")
        }
        Some(cfg) => {
            let sink = weir::kv_events::start(cfg).map_err(anyhow::Error::msg)?;
            models.publish_kv_events(sink.clone());
            Some(sink)
        }
        None => None,
    };
    let preload: Vec<String> = match preload_plan {
        Preload::All => models.ids().map(String::from).collect(),
        Preload::Models(ids) => ids,
    };
    let grace = options.shutdown_grace;
    let state = AppState::new(models.clone(), metrics, options);
    // HTTP first (`/health` live, `/ready` 503 "loading"), then the preloads
    state
        .preloaded
        .store(false, std::sync::atomic::Ordering::Release);
    let (draining, preloaded) = (state.draining.clone(), state.preloaded.clone());
    let batches = state.clone();
    let app = router(state);
    let addr = format!("{}:{}", args.host, args.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tracing::info!(%addr, "serving");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .into_future(),
    );
    for id in preload {
        models
            .get_or_load(&id)
            .await
            .map_err(|e| anyhow::anyhow!("preloading model {id}: {e}"))?;
    }
    preloaded.store(true, std::sync::atomic::Ordering::Release);
    tracing::info!("ready");
    batches.resume_batches();
    shutdown_signal().await;
    // Drain: refuse new requests, let the running ones finish within the grace period.
    draining.store(true, std::sync::atomic::Ordering::Release);
    let deadline = tokio::time::Instant::now() + grace;
    let mut left = models.requests_in_flight();
    tracing::info!(in_flight = left, grace_s = grace.as_secs_f64(), "draining");
    while left > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        left = models.requests_in_flight();
    }
    if left > 0 {
        tracing::warn!(
            in_flight = left,
            "grace period over: ending the rest with an error"
        );
    }
    // Stopping the engines ends what is left with an error event; then the server closes.
    tokio::task::spawn_blocking(move || {
        models.shutdown();
        // the engines' last events (their caches cleared) reach the subscribers
        if let Some(sink) = kv_events {
            sink.flush(std::time::Duration::from_secs(1));
        }
    })
    .await?;
    let _ = stop_tx.send(());
    server.await??;
    tracing::info!("stopped");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    weir::cpu::require_build_features().map_err(anyhow::Error::msg)?;
    let cli = Cli::parse();
    let json_logs = match &cli.command {
        Some(Command::Serve(a)) => a.log_format == LogFormat::Json,
        _ => cli.serve.log_format == LogFormat::Json,
    };
    init_tracing(json_logs);
    weir::models::pool::init_cpu_threads();
    match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(args)) => serve(args).await,
        Some(Command::Bench(args)) => {
            let out = args.output.clone();
            let summary = weir::bench::run(args).await?;
            let json = serde_json::to_string_pretty(&summary)?;
            println!("{json}");
            if let Some(path) = out {
                std::fs::write(&path, &json)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(())
        }
    }
}
