//! The state journal's one writer: a thread of its own owns the open journal and takes the
//! changes in order from a channel. For each it appends the line, applies the change to the
//! records in memory and rewrites the journal when dead lines pile up, then answers; so the
//! journal and the records agree in order, no append or rewrite runs on the async runtime's
//! workers, and a caller goes on once its change is written (or, the disk refusing, kept in
//! memory only) as before. Readers of the records are never held up by the disk: the change
//! is applied under the write lock, the file work happens under a read lock.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::{Change, Shared, StateError, VolumeRecord, at};
use crate::volume::journal::{self, Journal};

/// A request to the writer thread, with where its answer goes.
enum Request {
    Change(Change, oneshot::Sender<()>),
    Retry(oneshot::Sender<bool>),
}

/// The writer thread; dropping the handle lets the thread finish and waits for it.
#[derive(Debug)]
pub(super) struct Writer {
    requests: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Writer {
    /// Starts the writer of the journal in `dir`, which first loads the records (see
    /// [`super::VolumeStates::load`]).
    pub(super) async fn start(dir: PathBuf) -> Result<(Self, Arc<Shared>), StateError> {
        let (requests, inbox) = mpsc::channel();
        let (loaded, on_load) = oneshot::channel();
        let named = dir.clone();
        let thread = std::thread::Builder::new()
            .name("state-journal".into())
            .spawn(move || match Slot::load(dir) {
                Ok((slot, shared)) => {
                    let _ = loaded.send(Ok(Arc::clone(&shared)));
                    slot.serve(&shared, inbox);
                }
                Err(error) => {
                    let _ = loaded.send(Err(error));
                }
            })
            .map_err(at("start the writer of", &named))?;
        let shared = match on_load.await {
            Ok(loaded) => loaded?,
            Err(_) => match thread.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(()) => unreachable!("the writer answers before it returns"),
            },
        };
        let writer = Self {
            requests: Some(requests),
            thread: Some(thread),
            shared: Arc::clone(&shared),
        };
        Ok((writer, shared))
    }

    /// Hands `change` over and waits until it is written and applied.
    pub(super) async fn change(&self, change: Change) {
        let (done, answer) = oneshot::channel();
        if self.send(Request::Change(change.clone(), done)) && answer.await.is_ok() {
            return;
        }
        // Only a bug stops the thread; the records in memory stay right without it.
        tracing::error!(
            "the volume state journal's writer stopped; the volume state is kept in memory only"
        );
        self.shared.set_writable(false);
        change.apply(&mut self.shared.write());
    }

    /// Writes the journal afresh if it could not be written; true when it is writable now.
    pub(super) async fn retry(&self) -> bool {
        let (done, answer) = oneshot::channel();
        self.send(Request::Retry(done)) && answer.await.unwrap_or(false)
    }

    fn send(&self, request: Request) -> bool {
        self.requests
            .as_ref()
            .is_some_and(|requests| requests.send(request).is_ok())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.requests.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The journal of a state directory, when it can be written: the writer thread's own.
struct Slot {
    dir: PathBuf,
    open: Option<Journal>,
}

impl Slot {
    /// Reads the journal in `dir` (made if missing) and writes it afresh from its records.
    fn load(dir: PathBuf) -> Result<(Self, Arc<Shared>), StateError> {
        let (records, open) = match std::fs::create_dir_all(&dir) {
            Err(error) => {
                tracing::warn!(dir = %dir.display(), %error, "cannot create the volume state directory; serving with the volume state in memory, retried at every change");
                (HashMap::new(), None)
            }
            Ok(()) => {
                let read = journal::read_journal(&dir).map_err(at("read", &dir))?;
                if read.skipped > 0 {
                    tracing::warn!(dir = %dir.display(), skipped = read.skipped, "unreadable volume state lines skipped; the rewritten journal drops them");
                }
                let open = match Journal::create(&dir, read.records.values()) {
                    Ok(journal) => Some(journal),
                    Err(error) => {
                        tracing::warn!(dir = %dir.display(), %error, "cannot write the volume state journal (disk full?); serving with the volume state in memory, retried at every change");
                        None
                    }
                };
                (read.records, open)
            }
        };
        tracing::info!(volumes = records.len(), dir = %dir.display(), journal_writable = open.is_some(), "volume state loaded");
        let shared = Arc::new(Shared::new(records, open.is_some()));
        Ok((Self { dir, open }, shared))
    }

    /// Takes the requests in order until every sender is gone.
    fn serve(mut self, shared: &Shared, inbox: mpsc::Receiver<Request>) {
        for request in inbox {
            match request {
                Request::Change(change, done) => {
                    self.change(shared, change);
                    let _ = done.send(());
                }
                Request::Retry(done) => {
                    let _ = done.send(self.retry(shared));
                }
            }
        }
    }

    /// Appends `change` and applies it; rewrites the journal when dead lines pile up. A
    /// failed append or rewrite keeps the change in memory and leaves the journal to be
    /// written afresh at the next change (see [`super::VolumeStates`]).
    fn change(&mut self, shared: &Shared, change: Change) {
        if !change.matters(&shared.read()) {
            return;
        }
        let written = self.open.as_mut().map(|journal| match &change {
            Change::Put(record) => journal.put(record),
            Change::Remove(volume_id) => journal.remove(volume_id),
        });
        change.apply(&mut shared.write());
        // Only this thread changes the records: they stay as they are while the file is worked on.
        let records = shared.read();
        match written {
            None => self.reopen(shared, &records),
            Some(Err(error)) => {
                let path = self.dir.join(journal::JOURNAL_FILE);
                tracing::warn!(path = %path.display(), %error, "cannot append to the volume state journal; the volume state is kept in memory and the journal retried");
                self.open = None;
                shared.set_writable(false);
            }
            Some(Ok(())) => {
                let journal = self.open.as_mut().expect("written, so open");
                if journal.wants_rewrite(records.len())
                    && let Err(error) = journal.rewrite(records.values().map(Arc::as_ref))
                {
                    // The file is as it was: the change itself is written.
                    tracing::warn!(path = %journal.path().display(), %error, "cannot rewrite the volume state journal");
                }
            }
        }
    }

    /// Writes the journal afresh if it is not open; true when it is.
    fn retry(&mut self, shared: &Shared) -> bool {
        if self.open.is_none() {
            let records = shared.read();
            self.reopen(shared, &records);
        }
        self.open.is_some()
    }

    /// Tries to write the journal afresh from `records`.
    fn reopen(&mut self, shared: &Shared, records: &HashMap<String, Arc<VolumeRecord>>) {
        let made = std::fs::create_dir_all(&self.dir)
            .and_then(|()| Journal::create(&self.dir, records.values().map(Arc::as_ref)));
        match made {
            Ok(journal) => {
                tracing::info!(path = %journal.path().display(), volumes = records.len(), "volume state journal written again");
                self.open = Some(journal);
                shared.set_writable(true);
            }
            Err(error) => {
                tracing::debug!(dir = %self.dir.display(), %error, "volume state journal still not writable");
                shared.set_writable(false);
            }
        }
    }
}
