//! gRPC channels to a server on a unix socket (external provider plugins, a CSI node plugin).
//! The URI only sets `:authority` (`localhost`, as upstream); each connection dials the socket.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

/// Dials one socket path for every connection the channel makes.
#[derive(Debug, Clone)]
struct Dial(PathBuf);

impl tower::Service<http::Uri> for Dial {
    type Response = TokioIo<UnixStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let path = self.0.clone();
        Box::pin(async move { UnixStream::connect(path).await.map(TokioIo::new) })
    }
}

fn endpoint() -> Endpoint {
    Endpoint::from_static("http://localhost")
}

/// A channel that dials `socket` at its first call (and again after the server went away),
/// so a server that starts later is found.
pub(crate) fn lazy(socket: &Path) -> Channel {
    endpoint().connect_with_connector_lazy(Dial(socket.to_owned()))
}

/// A channel connected to `socket` now.
pub async fn connect(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    endpoint()
        .connect_with_connector(Dial(socket.to_owned()))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_socket_fails_now_or_at_the_first_call() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("none.sock");
        assert!(connect(&socket).await.is_err());
        let channel = lazy(&socket);
        let mut client = crate::proto::csi::identity_client::IdentityClient::new(channel);
        let status = client
            .probe(crate::proto::csi::ProbeRequest {})
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
    }

    #[tokio::test]
    async fn a_served_socket_answers() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("s.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let accepted = tokio::spawn(async move { listener.accept().await.is_ok() });
        connect(&socket).await.unwrap();
        assert!(accepted.await.unwrap());
    }
}
