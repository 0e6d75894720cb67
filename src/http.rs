//! The HTTP side: `/metrics` (Prometheus text), `/healthz` (alive), `/readyz` (socket serving
//! and class cache synced).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::csi::registration::{KubeletRegistration, KubeletStatus};
use crate::metrics::Metrics;
use crate::volume::VolumeService;

/// What the endpoints read.
#[derive(Debug, Clone)]
pub(crate) struct HttpState {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) volumes: Arc<VolumeService>,
    /// Set once the CSI socket is bound and served.
    pub(crate) serving: Arc<AtomicBool>,
    /// keymount's own registration with kubelet (`--register-with-kubelet`).
    pub(crate) registration: Option<Arc<KubeletRegistration>>,
}

/// The router (exposed for tests).
pub(crate) fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    state
        .metrics
        .state_journal_writable(state.volumes.states().journal_writable());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn readyz(State(state): State<HttpState>) -> (StatusCode, std::borrow::Cow<'static, str>) {
    let refused = state.registration.as_ref().and_then(|r| match r.status() {
        KubeletStatus::Refused(error) => Some(error),
        KubeletStatus::Waiting | KubeletStatus::Registered => None,
    });
    if !state.serving.load(Ordering::Acquire) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "CSI socket not serving (starting, or shutting down)".into(),
        )
    } else if let Some(error) = refused {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("kubelet refused keymount's registration: {error}").into(),
        )
    } else if !state.volumes.is_ready() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "SecretProviderClass cache not synced yet".into(),
        )
    } else if !state.volumes.states().journal_writable() {
        // Still ready: publishes work, with the volume state in memory until it can be written.
        (
            StatusCode::OK,
            "ready (volume state journal not writable: state kept in memory)".into(),
        )
    } else {
        (StatusCode::OK, "ready".into())
    }
}

/// Parses upstream's `:8095` form as well as `127.0.0.1:8095`.
pub(crate) fn parse_addr(addr: &str) -> Result<SocketAddr, std::net::AddrParseError> {
    if addr.starts_with(':') {
        format!("0.0.0.0{addr}").parse()
    } else {
        addr.parse()
    }
}

/// Serves until `shutdown` fires.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
