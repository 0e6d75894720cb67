//! One cancellation token for the whole process: SIGTERM or SIGINT cancels it (finish
//! in-flight work, then exit); a second signal exits at once. And the set of background tasks
//! that shutdown joins.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGTERM/SIGINT.
pub(crate) fn on_signals() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutting down: finishing calls in flight (signal again to exit now)");
        cancel.cancel();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    Ok(token)
}

/// The process's background tasks (pod event writes, the SecretProviderClass watch, the state
/// journal retry), kept so that shutdown waits for them, up to a deadline, instead of
/// dropping them mid-write when `main` returns. Finished tasks are reaped at each spawn.
#[derive(Debug, Clone, Default)]
pub(crate) struct Background(Arc<Mutex<JoinSet<()>>>);

impl Background {
    /// Runs `task` on the runtime and keeps it to be joined at shutdown.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        while set.try_join_next().is_some() {}
        set.spawn(task);
    }

    /// Tasks not finished yet.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        while set.try_join_next().is_some() {}
        set.len()
    }

    /// True when no task is running.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits for every task spawned so far, at most `deadline`; the ones still running then
    /// are aborted. Returns how many were.
    pub(crate) async fn join(&self, deadline: Duration) -> usize {
        let mut set = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        let all = async {
            while let Some(done) = set.join_next().await {
                if let Err(error) = done
                    && error.is_panic()
                {
                    tracing::error!(%error, "a background task panicked");
                }
            }
        };
        if tokio::time::timeout(deadline, all).await.is_ok() {
            return 0;
        }
        let left = set.len();
        set.abort_all();
        while set.join_next().await.is_some() {}
        tracing::warn!(
            tasks = left,
            ?deadline,
            "background tasks still running at the shutdown deadline; aborted"
        );
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn shutdown_waits_for_background_work_then_aborts_what_hangs() {
        let background = Background::default();
        let finished = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let finished = finished.clone();
            background.spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                finished.fetch_add(1, Ordering::SeqCst);
            });
        }
        background.spawn(std::future::pending());
        assert_eq!(background.len(), 4);
        let started = std::time::Instant::now();
        let aborted = background.join(Duration::from_millis(500)).await;
        assert_eq!(
            finished.load(Ordering::SeqCst),
            3,
            "the writes in flight finished"
        );
        assert_eq!(aborted, 1, "the hanging task was cut at the deadline");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(background.is_empty());
    }
}
