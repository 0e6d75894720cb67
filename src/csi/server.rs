//! Serving the CSI services on a unix socket.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;

use super::authority::{self, AuthorityTolerant};
use super::{IdentityService, NodeService};
use crate::proto::csi::identity_server::IdentityServer;
use crate::proto::csi::node_server::NodeServer;

/// The CSI endpoint could not be served.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServeError {
    #[error("endpoint {0:?} is not a unix:// address")]
    Endpoint(String),
    #[error("{path} exists and is not a socket; refusing to remove it")]
    NotASocket { path: PathBuf },
    #[error("bind {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("serve: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// The socket path of a `unix://` endpoint (`unix:///csi/csi.sock` or `unix://tmp/csi.sock`).
pub(crate) fn socket_path(endpoint: &str) -> Result<PathBuf, ServeError> {
    let rest = endpoint
        .strip_prefix("unix://")
        .ok_or_else(|| ServeError::Endpoint(endpoint.to_owned()))?;
    if rest.is_empty() {
        return Err(ServeError::Endpoint(endpoint.to_owned()));
    }
    // upstream's default `unix://tmp/csi.sock` means /tmp/csi.sock.
    Ok(if rest.starts_with('/') {
        PathBuf::from(rest)
    } else {
        Path::new("/").join(rest)
    })
}

/// Binds `path` with mode 0600, removing a stale socket (but nothing else) first.
///
/// The socket is 0600 from the first instant it exists at `path`: it is bound inside a fresh
/// 0700 directory beside `path` (which nobody but root can enter), made 0600 there, and
/// renamed into place. Binding at `path` and then chmod-ing, as before, left a moment in which
/// any local user could connect and call NodePublishVolume. (The staging directory's name is
/// 12 bytes longer than the socket's directory, which counts against the 108-byte limit of
/// a socket path.)
pub(crate) fn bind(path: &Path) -> Result<UnixListener, ServeError> {
    let bind_err = |source| ServeError::Bind {
        path: path.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path).map_err(bind_err)?,
        Ok(_) => {
            return Err(ServeError::NotASocket {
                path: path.to_owned(),
            });
        }
        Err(_) => {}
    }
    let parent = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent).map_err(bind_err)?;
    sweep_staging(parent);
    let staging = parent.join(format!("{STAGING_PREFIX}{:08x}", rand::random::<u32>()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(bind_err)?;
    let bound = bind_private(&staging.join("s"), path);
    let _ = std::fs::remove_dir_all(&staging);
    bound.map_err(bind_err)
}

/// Names of the private directories sockets are bound in: the prefix and 8 hex digits.
const STAGING_PREFIX: &str = ".km";

/// Removes staging directories a crashed start left beside the socket.
fn sweep_staging(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let is_staging = name.to_str().is_some_and(|n| {
            n.len() == STAGING_PREFIX.len() + 8
                && n.strip_prefix(STAGING_PREFIX)
                    .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
        });
        if is_staging && entry.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Binds `staged` (inside a private directory), sets 0600 and renames it to `path`.
fn bind_private(staged: &Path, path: &Path) -> io::Result<UnixListener> {
    let listener = UnixListener::bind(staged)?;
    std::fs::set_permissions(staged, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(staged, path)?;
    Ok(listener)
}

/// The socket file this process bound, by device, inode and change time (inode numbers are
/// reused at once): at shutdown it is removed only if the path still names it (a new process
/// may already serve a fresh socket there).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SocketId(Option<(u64, u64, i64, i64)>);

impl SocketId {
    /// The identity of the socket at `path` now.
    pub(crate) fn of(path: &Path) -> Self {
        Self(
            std::fs::symlink_metadata(path)
                .ok()
                .map(|m| (m.dev(), m.ino(), m.ctime(), m.ctime_nsec())),
        )
    }

    /// Whether `path` still names the same file by device and inode (a chmod or chown, which
    /// changes the change time, leaves it the same).
    pub(crate) fn same_file(&self, path: &Path) -> bool {
        match (self.0, Self::of(path).0) {
            (Some((dev, ino, ..)), Some((now_dev, now_ino, ..))) => {
                (dev, ino) == (now_dev, now_ino)
            }
            _ => false,
        }
    }

    /// Removes `path` if it is still the same socket file.
    pub(crate) fn remove_if_same(&self, path: &Path) {
        if self.0.is_some() && Self::of(path).0 == self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Serves Identity and Node on `listener` until `shutdown` fires, then finishes in-flight calls.
pub(crate) async fn serve(
    listener: UnixListener,
    identity: IdentityService,
    node: NodeService,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    unix_server()
        .add_service(IdentityServer::new(identity))
        .add_service(NodeServer::new(node))
        .serve_with_incoming_shutdown(incoming(listener), shutdown.cancelled_owned())
        .await?;
    Ok(())
}

/// A tonic server with the HTTP/2 limits [`authority`] enforces in front of it.
pub(crate) fn unix_server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .max_frame_size(authority::MAX_FRAME_SIZE)
        .http2_max_header_list_size(authority::MAX_HEADER_LIST_SERVER)
}

/// The connections of `listener`, each behind [`AuthorityTolerant`], so that kubelet < 1.26
/// and gRPC-core clients, which send the socket path as `:authority`, are served
/// (`src/csi/authority.rs` says why and how).
pub(crate) fn incoming(
    listener: UnixListener,
) -> impl futures::Stream<Item = io::Result<AuthorityTolerant<UnixStream>>> {
    UnixListenerStream::new(listener).map(|conn| conn.map(AuthorityTolerant::new))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_like_upstream() {
        assert_eq!(
            socket_path("unix:///csi/csi.sock").unwrap(),
            Path::new("/csi/csi.sock")
        );
        assert_eq!(
            socket_path("unix://tmp/csi.sock").unwrap(),
            Path::new("/tmp/csi.sock")
        );
        assert!(socket_path("tcp://127.0.0.1:1").is_err());
        assert!(socket_path("unix://").is_err());
    }

    #[tokio::test]
    async fn a_regular_file_is_never_removed_and_the_socket_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("csi.sock");
        std::fs::write(&file, "not a socket").unwrap();
        assert!(matches!(bind(&file), Err(ServeError::NotASocket { .. })));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a socket");

        let sock = dir.path().join("real.sock");
        drop(bind(&sock).unwrap());
        let listener = bind(&sock).unwrap(); // stale socket replaced
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(listener);
    }

    /// The socket never appears at its path with another mode: inotify sees it arrive by
    /// rename (IN_MOVED_TO), never created there (IN_CREATE), and it is 0600 when it arrives;
    /// root can connect, another user cannot.
    #[tokio::test]
    async fn the_socket_is_private_from_the_first_instant() {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let sock = dir.path().join("csi.sock");
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK).unwrap();
        inotify
            .add_watch(
                dir.path(),
                AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_ATTRIB,
            )
            .unwrap();
        let listener = bind(&sock).unwrap();
        let events = inotify.read_events().unwrap();
        let about_sock: Vec<_> = events
            .iter()
            .filter(|e| e.name.as_deref() == Some(std::ffi::OsStr::new("csi.sock")))
            .map(|e| e.mask)
            .collect();
        assert_eq!(
            about_sock,
            [AddWatchFlags::IN_MOVED_TO],
            "created in place, or changed after it appeared: {events:?}"
        );
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["csi.sock"], "the staging directory is gone");

        let connect = |uid: Option<u32>| {
            let mut cmd = std::process::Command::new("/usr/bin/perl");
            cmd.args([
                "-MIO::Socket::UNIX",
                "-e",
                "IO::Socket::UNIX->new(Peer => $ARGV[0]) or exit 13; exit 0",
            ])
            .arg(&sock);
            if let Some(uid) = uid {
                std::os::unix::process::CommandExt::uid(&mut cmd, uid);
                std::os::unix::process::CommandExt::gid(&mut cmd, uid);
            }
            cmd.status().unwrap().code()
        };
        assert_eq!(connect(None), Some(0), "root connects");
        assert_eq!(connect(Some(65534)), Some(13), "nobody cannot connect");
        drop(listener);
    }

    #[tokio::test]
    async fn a_socket_bound_by_another_process_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("csi.sock");
        let first = bind(&sock).unwrap();
        let ours = SocketId::of(&sock);
        drop(first);
        // File times tick with the kernel's coarse clock; real restarts are seconds apart.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let _second = bind(&sock).unwrap(); // the next process, same path
        ours.remove_if_same(&sock);
        assert!(
            sock.exists(),
            "the new socket must survive the old process's exit"
        );
        SocketId::of(&sock).remove_if_same(&sock);
        assert!(!sock.exists());
    }
}
