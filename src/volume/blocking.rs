//! Runs the publish steps that may sleep in the kernel (mkdir and rmdir on the kubelet's disk,
//! mount(2), umount(2)) on tokio's blocking pool, so a call waiting for a disk discard or an
//! RCU grace period does not stall the runtime's workers and every other call. The file
//! writes go to the volume's tmpfs and stay on the worker.

/// Runs `work` on the blocking pool and waits for it; a panic in `work` resumes here.
pub(super) async fn off_runtime<T, F>(work: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}
