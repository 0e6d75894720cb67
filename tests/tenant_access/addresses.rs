//! Store addresses a class names: link-local, loopback (also through a DNS name) and node
//! sockets refused before any connection; redirects not followed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use keymount::provider::Provider;
use tonic::Code;

use crate::OBJECTS;
use crate::vault_support::{input, provider_with, tokens_json};

/// A TCP listener on `ip` that counts the connections it accepts (and closes each at once).
pub(crate) async fn counting_listener(ip: &str) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (port, accepted)
}

async fn mount_at(
    address: &str,
    allowed: &[&str],
) -> Result<keymount::provider::MountOutput, keymount::provider::ProviderError> {
    let params = [
        ("vaultAddress", address),
        ("roleName", "web"),
        ("objects", OBJECTS),
    ];
    let tokens = tokens_json("vault", "header.e30.signature");
    provider_with(&[], allowed)
        .mount(&input("shop", "web", &tokens, &params))
        .await
}

#[tokio::test]
async fn store_addresses_are_refused_before_any_connection() {
    let (port, accepted) = counting_listener("127.0.0.1").await;
    let refused = |result: Result<_, keymount::provider::ProviderError>, what: &str| {
        let err = result.expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err}");
        assert!(err.to_string().contains("vaultAddress"), "{what}: {err}");
        assert!(
            err.to_string().contains("allowed-store-addresses"),
            "{what}: {err}"
        );
    };
    // The cloud metadata endpoint, IPv6 link-local, loopback: by literal and by a DNS name
    // that resolves to loopback, with the node defaults (no entry).
    refused(mount_at("http://169.254.169.254", &[]).await, "metadata");
    refused(mount_at("http://[fe80::1]:8200", &[]).await, "fe80::1");
    refused(
        mount_at("http://[::ffff:169.254.169.254]", &[]).await,
        "mapped metadata",
    );
    refused(
        mount_at(&format!("http://127.0.0.1:{port}"), &[]).await,
        "loopback literal",
    );
    refused(
        mount_at(&format!("http://localhost:{port}"), &[]).await,
        "a name resolving to loopback",
    );
    // Listing some other address does not let loopback names through either.
    refused(
        mount_at(&format!("http://localhost:{port}"), &["10.0.0.0/8"]).await,
        "a name resolving to loopback, other range listed",
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "no connection was made to a refused address"
    );

    // Allowed by name: the same address is reached.
    let err = mount_at(&format!("http://localhost:{port}"), &["localhost"])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(
        accepted.load(Ordering::SeqCst) >= 1,
        "allowed by name, the listener was reached"
    );
}

#[tokio::test]
async fn unix_socket_addresses_only_when_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("node-service.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    let address = format!("unix://{}", socket.display());
    let err = mount_at(&address, &[]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(
        err.to_string().contains("vaultAddress") && err.to_string().contains("unix socket"),
        "{err}"
    );
    let sibling = format!(
        "unix://{}/../{}",
        tmp.path().display(),
        "x/node-service.sock"
    );
    let err = mount_at(&sibling, &[&address]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "no connection");

    let err = mount_at(&address, &[&address]).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "listed: reached: {err}");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the listed socket was reached"
    );
}

#[tokio::test]
async fn redirects_are_not_followed_to_a_refused_address() {
    // An allowed store answers every request with a redirect to an address that is not
    // allowed, given as a literal IP (no resolver would see it).
    let (target_port, reached) = counting_listener("127.0.0.2").await;
    let store = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let store_port = store.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        while let Ok((mut stream, _)) = store.accept().await {
            let mut buf = vec![0u8; 65536];
            let _ = stream.read(&mut buf).await;
            let answer = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.2:{target_port}/v1/auth/kubernetes/login\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    let err = mount_at(&format!("http://127.0.0.1:{store_port}"), &["127.0.0.1"])
        .await
        .unwrap_err();
    assert_ne!(err.code(), Code::Ok, "{err}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        reached.load(Ordering::SeqCst),
        0,
        "the redirect was not followed"
    );
}
