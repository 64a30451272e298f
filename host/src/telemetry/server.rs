//! `/metrics` (Prometheus text), `/healthz` (the process is up) and
//! `/readyz` (manifests were read and exports are scheduled), open to all;
//! and each scrape exporter's path, behind a bearer token when
//! `server.scrapeToken` is set.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::Metrics;
use super::scrape_auth::ScrapeToken;
use crate::export::prometheus::ScrapeStore;

#[derive(Clone)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            ready: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Health,
}

/// `prometheusScrape` exporters, served at their paths.
pub type ScrapeEndpoints = Vec<Arc<ScrapeStore>>;

/// Binds `addr` and serves until `shutdown` resolves. Returns the bound
/// address (useful with port 0). With `scrape_token`, the scrape paths
/// answer 401 to a request without `Authorization: Bearer <token>`.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Health,
    scrape: ScrapeEndpoints,
    scrape_token: Option<ScrapeToken>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<SocketAddr> {
    let scrape_token = scrape_token.map(Arc::new);
    let mut app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, health });
    for store in scrape {
        let path = store.path().to_string();
        let token = scrape_token.clone();
        app = app.route(
            &path,
            get(move |headers: HeaderMap| {
                let store = store.clone();
                let token = token.clone();
                async move {
                    if let Some(token) = token {
                        let given = headers
                            .get(header::AUTHORIZATION)
                            .and_then(|v| v.to_str().ok());
                        if !token.admits(given) {
                            tracing::debug!(path = %store.path(), "scrape refused: no valid bearer token");
                            return (
                                StatusCode::UNAUTHORIZED,
                                [
                                    (header::WWW_AUTHENTICATE, "Bearer"),
                                    (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                                ],
                                "a bearer token is required (server.scrapeToken)\n".to_string(),
                            )
                                .into_response();
                        }
                    }
                    let accept = headers
                        .get(header::ACCEPT)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    // Rendering 100k series takes a while: not on the async threads.
                    let (body, content_type) =
                        tokio::task::spawn_blocking(move || store.render(&accept))
                            .await
                            .unwrap_or_else(|_| {
                                (
                                    String::new(),
                                    crate::export::prometheus::scrape::TEXT_CONTENT_TYPE,
                                )
                            });
                    ([(header::CONTENT_TYPE, content_type)], body).into_response()
                }
            }),
        );
    }
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "the metrics server stopped");
        }
    });
    Ok(bound)
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.health.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
