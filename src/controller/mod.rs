//! `keymount controller`: Kubernetes Secrets from a store without any pod mount. Each
//! `SecretSync` (secrets-store-sync-controller's API) names a SecretProviderClass and a
//! ServiceAccount; the controller fetches with a token of that ServiceAccount through the
//! node's own provider code and keeps one Secret, owned by the SecretSync, fresh.

pub mod crd;
pub(crate) mod desired;
pub(crate) mod http;
pub(crate) mod identity;
pub(crate) mod lease;
pub(crate) mod metrics;
pub(crate) mod outcome;
pub(crate) mod reconcile;
pub(crate) mod secret;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use kube::Api;
use kube::runtime::controller::{Config, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

use self::crd::SecretSync;
use self::reconcile::Syncer;
use crate::class::SecretProviderClass;

pub use self::reconcile::REFRESH_ANNOTATION;

/// How often the memory of SecretSyncs that no longer exist is cleared.
const FORGET_EVERY: Duration = Duration::from_secs(300);

/// Watches every SecretSync (and the classes they use) and syncs them until `stop`.
pub(crate) async fn run(syncer: Arc<Syncer>, concurrency: u16, stop: CancellationToken) {
    let client = syncer.client.clone();
    let controller = Controller::new(
        Api::<SecretSync>::all(client.clone()),
        watcher::Config::default(),
    )
    .with_config(Config::default().concurrency(concurrency));
    let store = controller.store();
    let users = store.clone();
    // A class that changes makes every SecretSync using it due at once.
    let controller = controller.watches(
        Api::<SecretProviderClass>::all(client),
        watcher::Config::default(),
        move |class: SecretProviderClass| {
            let namespace = class.metadata.namespace.clone();
            let name = class.metadata.name.clone().unwrap_or_default();
            users
                .state()
                .into_iter()
                .filter(|s| {
                    s.metadata.namespace == namespace && s.spec.secret_provider_class_name == name
                })
                .map(|s| ObjectRef::from_obj(s.as_ref()))
                .collect::<Vec<_>>()
        },
    );
    let forget = {
        let (syncer, store, stop) = (syncer.clone(), store.clone(), stop.clone());
        async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(FORGET_EVERY) => {}
                }
                let alive: std::collections::HashSet<(String, String)> = store
                    .state()
                    .iter()
                    .map(|s| {
                        (
                            s.metadata.namespace.clone().unwrap_or_default(),
                            s.metadata.name.clone().unwrap_or_default(),
                        )
                    })
                    .collect();
                syncer.forget_except(|key| alive.contains(key));
            }
        }
    };
    let stopping = stop.clone();
    let run = controller
        .graceful_shutdown_on(async move { stopping.cancelled().await })
        .run(reconcile::reconcile, reconcile::on_error, syncer)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(error = %crate::text::error_chain(&error), "controller event");
            }
        });
    tokio::join!(run, forget);
}
