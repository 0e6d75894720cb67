//! The controller's HTTP side: `/metrics`, `/healthz` (alive) and `/readyz` (the API server
//! answered; a standby replica is ready too, so a rollout never waits for the Lease).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use super::metrics::ControllerMetrics;

/// What the endpoints read.
#[derive(Debug, Clone)]
pub(crate) struct HttpState {
    pub(crate) metrics: Arc<ControllerMetrics>,
    pub(crate) ready: Arc<AtomicBool>,
}

fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

/// Serves until `stop` fires.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    stop: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}
