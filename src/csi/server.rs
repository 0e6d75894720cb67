//! Serving the CSI services on a unix socket.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;

use super::{IdentityService, NodeService};
use crate::proto::csi::identity_server::IdentityServer;
use crate::proto::csi::node_server::NodeServer;

/// The CSI endpoint could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
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
pub fn socket_path(endpoint: &str) -> Result<PathBuf, ServeError> {
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
pub fn bind(path: &Path) -> Result<UnixListener, ServeError> {
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
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(bind_err)?;
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    Ok(listener)
}

/// The socket file this process bound, by device, inode and change time (inode numbers are
/// reused at once): at shutdown it is removed only if the path still names it (a new process
/// may already serve a fresh socket there).
#[derive(Debug, Clone, Copy)]
pub struct SocketId(Option<(u64, u64, i64, i64)>);

impl SocketId {
    /// The identity of the socket at `path` now.
    pub fn of(path: &Path) -> Self {
        Self(
            std::fs::symlink_metadata(path)
                .ok()
                .map(|m| (m.dev(), m.ino(), m.ctime(), m.ctime_nsec())),
        )
    }

    /// Removes `path` if it is still the same socket file.
    pub fn remove_if_same(&self, path: &Path) {
        if self.0.is_some() && Self::of(path).0 == self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Serves Identity and Node on `listener` until `shutdown` fires, then finishes in-flight calls.
pub async fn serve(
    listener: UnixListener,
    identity: IdentityService,
    node: NodeService,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    tonic::transport::Server::builder()
        .add_service(IdentityServer::new(identity))
        .add_service(NodeServer::new(node))
        .serve_with_incoming_shutdown(
            UnixListenerStream::new(listener),
            shutdown.cancelled_owned(),
        )
        .await?;
    Ok(())
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
