//! Tenant input never names a node resource: files a class or pod names are read only
//! beneath `--allowed-file-dirs` (no link or `..` out, no FIFO, no content in errors), store
//! addresses only as `--allowed-store-addresses` allows (link-local, loopback and node
//! sockets refused before any connection, also when a DNS name resolves to them), and a
//! pod's volumeAttributes cannot override the class's security-relevant parameters unless
//! the admin opts in. Against a real OpenBao over TLS, and end to end through the real
//! `keymount node` binary over its CSI socket.

mod harness;
mod support;
mod vault_support;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use harness::mounts::mount_entry;
use harness::node::{NodeOptions, NodeProcess, publish_request, unpublish_request, write_class};
use keymount::provider::Provider;
use keymount::provider::tokens::TOKENS_KEY;
use serde_json::json;
use support::openbao::OpenBao;
use tonic::Code;
use vault_support::{Signer, input, jwt_setup, provider_with, text, tokens_json};

const OBJECTS: &str = "- {objectName: p, secretPath: secret/data/app, secretKey: password}";
const MARKER: &str = "NODE-FILE-CONTENT-MARKER-7731";

/// A TLS OpenBao with role `web` for ServiceAccount shop/web reading `secret/data/app`.
async fn tls_vault() -> (OpenBao, String) {
    let bao = OpenBao::start_tls().await;
    let signer = Signer::new();
    jwt_setup(
        &bao,
        "",
        &signer,
        "web",
        "shop",
        "web",
        &["secret/data/app"],
    )
    .await;
    bao.kv2_put("secret", "app", json!({"password": "tenant-secret-1"}))
        .await;
    let tokens = tokens_json("vault", &signer.token("shop", "web", "vault"));
    (bao, tokens)
}

/// A node layout: `allowed/` (the admin's directory, holding a good CA), and another pod's
/// volume outside it holding a valid CA certificate too, so that a read that escaped would
/// succeed instead of failing for another reason.
struct Layout {
    tmp: tempfile::TempDir,
}

impl Layout {
    fn new(bao: &OpenBao) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let ca = std::fs::read(bao.ca_cert_path().unwrap()).unwrap();
        let allowed = tmp.path().join("allowed");
        std::fs::create_dir_all(allowed.join("cadir")).unwrap();
        std::fs::write(allowed.join("ca.pem"), &ca).unwrap();
        std::fs::write(allowed.join("cadir/ca.pem"), &ca).unwrap();
        let other = tmp.path().join("pods/other/volumes/tls");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("ca.pem"), &ca).unwrap();
        Self { tmp }
    }

    fn allowed(&self) -> std::path::PathBuf {
        self.tmp.path().join("allowed")
    }

    fn other_pod(&self) -> std::path::PathBuf {
        self.tmp.path().join("pods/other/volumes/tls/ca.pem")
    }

    fn path(&self, rel: &str) -> String {
        self.tmp.path().join(rel).display().to_string()
    }
}

async fn mount_with(
    bao: &OpenBao,
    tokens: &str,
    dirs: &[&Path],
    extra: &[(&str, &str)],
) -> Result<String, keymount::provider::ProviderError> {
    mount_at_addr(bao.addr(), tokens, dirs, extra).await
}

async fn mount_at_addr(
    addr: &str,
    tokens: &str,
    dirs: &[&Path],
    extra: &[(&str, &str)],
) -> Result<String, keymount::provider::ProviderError> {
    let mut params = vec![
        ("vaultAddress", addr),
        ("roleName", "web"),
        ("vaultAuthMountPath", "jwt"),
        ("objects", OBJECTS),
    ];
    params.extend_from_slice(extra);
    let p = provider_with(dirs, &["127.0.0.1"]);
    tokio::time::timeout(
        Duration::from_secs(20),
        p.mount(&input("shop", "web", tokens, &params)),
    )
    .await
    .expect("a mount never hangs on a node file")
    .map(|o| text(&o, "p"))
}

fn assert_refused(
    result: Result<String, keymount::provider::ProviderError>,
    parameter: &str,
    why: &str,
) {
    let err = result.expect_err("must be refused");
    let message = err.to_string();
    assert_eq!(err.code(), Code::InvalidArgument, "{message}");
    assert!(message.contains(parameter), "names {parameter}: {message}");
    assert!(message.contains(why), "says {why:?}: {message}");
    // Not as text, nor as the byte list a parser's `Debug` of a line would print.
    let as_bytes = format!("{:?}", &MARKER.as_bytes()[..8]);
    let as_bytes = as_bytes.trim_matches(['[', ']']);
    assert!(
        !message.contains(MARKER)
            && !message.contains(as_bytes)
            && !message.contains("BEGIN CERTIFICATE"),
        "no file content in errors: {message}"
    );
}

#[tokio::test]
async fn class_file_parameters_are_read_only_beneath_the_allowed_dirs() {
    let (bao, tokens) = tls_vault().await;
    let layout = Layout::new(&bao);
    let allowed = layout.allowed();
    let dirs = [allowed.as_path()];

    // The admin's directory works, for the file and the directory parameter.
    let good = layout.path("allowed/ca.pem");
    assert_eq!(
        mount_with(&bao, &tokens, &dirs, &[("vaultCACertPath", &good)])
            .await
            .unwrap(),
        "tenant-secret-1"
    );
    let good_dir = layout.path("allowed/cadir");
    assert_eq!(
        mount_with(&bao, &tokens, &dirs, &[("vaultCADirectory", &good_dir)])
            .await
            .unwrap(),
        "tenant-secret-1"
    );
    let logins = bao.count_logins("jwt");

    // Empty by default: not even the admin's directory.
    assert_refused(
        mount_with(&bao, &tokens, &[], &[("vaultCACertPath", &good)]).await,
        "vaultCACertPath",
        "allowed-file-dirs",
    );

    // Node files outside, another pod's volume (a valid CA: reading it would succeed).
    let other = layout.other_pod().display().to_string();
    for (param, path) in [
        ("vaultCACertPath", "/etc/shadow"),
        ("vaultCACertPath", other.as_str()),
        ("vaultCADirectory", "/etc/ssl/certs"),
        ("vaultTLSClientCertPath", other.as_str()),
    ] {
        let mut extra = vec![(param, path)];
        if param == "vaultTLSClientCertPath" {
            extra.push(("vaultTLSClientKeyPath", "/etc/shadow"));
            extra.push(("vaultCACertPath", good.as_str()));
        }
        assert_refused(
            mount_with(&bao, &tokens, &dirs, &extra).await,
            param,
            "allowed-file-dirs",
        );
    }

    // Through a symbolic link inside the allowed directory (absolute and relative), and
    // through `..`: the kernel refuses the step out.
    symlink(layout.other_pod(), allowed.join("abs-link.pem")).unwrap();
    symlink(
        "../pods/other/volumes/tls/ca.pem",
        allowed.join("rel-link.pem"),
    )
    .unwrap();
    symlink(
        layout.tmp.path().join("pods/other/volumes/tls"),
        allowed.join("dir-link"),
    )
    .unwrap();
    for path in [
        layout.path("allowed/abs-link.pem"),
        layout.path("allowed/rel-link.pem"),
        layout.path("allowed/../pods/other/volumes/tls/ca.pem"),
        layout.path("allowed/dir-link/ca.pem"),
    ] {
        assert_refused(
            mount_with(&bao, &tokens, &dirs, &[("vaultCACertPath", &path)]).await,
            "vaultCACertPath",
            "leads out of the allowed directory",
        );
    }
    assert_refused(
        mount_with(
            &bao,
            &tokens,
            &dirs,
            &[("vaultCADirectory", &layout.path("allowed/dir-link"))],
        )
        .await,
        "vaultCADirectory",
        "leads out of the allowed directory",
    );

    // A FIFO nobody writes to: refused at once instead of blocking the mount. The mount
    // runs on a thread of its own, so a blocking open fails the test instead of hanging it.
    let fifo = allowed.join("fifo.pem");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let (done, result) = std::sync::mpsc::channel();
    let (addr, tokens_owned, allowed_owned) =
        (bao.addr().to_owned(), tokens.clone(), allowed.clone());
    let fifo_param = fifo.display().to_string();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let out = runtime.block_on(mount_at_addr(
            &addr,
            &tokens_owned,
            &[allowed_owned.as_path()],
            &[("vaultCACertPath", &fifo_param)],
        ));
        let _ = done.send(out);
    });
    assert_refused(
        result
            .recv_timeout(Duration::from_secs(20))
            .expect("the mount returned instead of blocking on the FIFO"),
        "vaultCACertPath",
        "not a regular file",
    );

    // A file that is not PEM: the error says so without quoting it.
    let junk = allowed.join("junk.pem");
    std::fs::write(
        &junk,
        // An unterminated section: a PEM parser's error names its label.
        format!("-----BEGIN {MARKER}-----\n{MARKER}\n"),
    )
    .unwrap();
    let junk = junk.display().to_string();
    assert_refused(
        mount_with(&bao, &tokens, &dirs, &[("vaultCACertPath", &junk)]).await,
        "vaultCACertPath",
        "no PEM certificate",
    );
    assert_refused(
        mount_with(
            &bao,
            &tokens,
            &dirs,
            &[
                ("vaultCACertPath", &good),
                ("vaultTLSClientCertPath", &good),
                ("vaultTLSClientKeyPath", &junk),
            ],
        )
        .await,
        "vaultTLSClientKeyPath",
        "no PEM private key",
    );
    assert_eq!(
        bao.count_logins("jwt"),
        logins,
        "every refusal came before any request to Vault"
    );
}

/// A TCP listener on `ip` that counts the connections it accepts (and closes each at once).
async fn counting_listener(ip: &str) -> (u16, Arc<AtomicUsize>) {
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

/// The admin's Helm-style flags on the real binary, kubelet's publish over the CSI socket.
#[tokio::test]
async fn node_refuses_hostile_classes_and_pod_overrides_over_csi() {
    let (bao, tokens) = tls_vault().await;
    let layout = Layout::new(&bao);
    let classes = layout.tmp.path().join("classes");
    let good = layout.path("allowed/ca.pem");
    let base = |extra: &[(&'static str, String)]| {
        let mut params: Vec<(&str, String)> = vec![
            ("vaultAddress", bao.addr().to_owned()),
            ("roleName", "class-role".to_owned()),
            ("vaultAuthMountPath", "jwt".to_owned()),
            ("objects", OBJECTS.to_owned()),
            ("vaultCACertPath", good.clone()),
        ];
        for (k, v) in extra {
            params.retain(|(name, _)| name != k);
            params.push((k, v.clone()));
        }
        params
    };
    let write = |name: &str, params: Vec<(&str, String)>| {
        let refs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        write_class(&classes, "shop", name, "vault", &refs);
    };
    write("app", base(&[("roleName", "web".into())]));
    write("app-class-role", base(&[]));
    symlink(
        layout.other_pod(),
        layout.allowed().join("to-other-pod.pem"),
    )
    .unwrap();
    write(
        "hostile-file",
        base(&[
            ("roleName", "web".into()),
            ("vaultCACertPath", layout.path("allowed/to-other-pod.pem")),
        ]),
    );
    write(
        "hostile-address",
        base(&[
            ("roleName", "web".into()),
            ("vaultAddress", "http://169.254.169.254".into()),
        ]),
    );

    let allowed_dirs = format!("--allowed-file-dirs={}", layout.allowed().display());
    let node = NodeProcess::start(NodeOptions {
        class_dir: Some(classes.clone()),
        args: vec![allowed_dirs.clone()],
        ..Default::default()
    })
    .await;
    let mut client = node.node_client().await;
    let mut n = 0;
    let mut publish = |class: &str, attributes: &[(&str, &str)]| {
        n += 1;
        let target = layout
            .tmp
            .path()
            .join(format!("pods/web-{n}/volumes/secrets"));
        let mut request = publish_request(&format!("vol-{n}"), &target, class, "shop");
        request.volume_context.insert(
            "csi.storage.k8s.io/serviceAccount.name".into(),
            "web".into(),
        );
        request
            .volume_context
            .insert(TOKENS_KEY.into(), tokens.clone());
        for (k, v) in attributes {
            request.volume_context.insert(k.to_string(), v.to_string());
        }
        (request, target)
    };

    // The class that stays within the admin's limits works.
    let (ok, ok_target) = publish("app", &[]);
    client
        .node_publish_volume(ok.clone())
        .await
        .expect("publish");
    assert_eq!(
        std::fs::read_to_string(ok_target.join("p")).unwrap(),
        "tenant-secret-1"
    );
    // `objects` is the pod's to choose (what its own role may read): allowed.
    let (objects, objects_target) = publish(
        "app",
        &[(
            "objects",
            "- {objectName: renamed, secretPath: secret/data/app, secretKey: password}",
        )],
    );
    client
        .node_publish_volume(objects)
        .await
        .expect("objects override");
    assert_eq!(
        std::fs::read_to_string(objects_target.join("renamed")).unwrap(),
        "tenant-secret-1"
    );
    let logins = bao.count_logins("jwt");

    let expect_refused = |status: tonic::Status, name: &str| {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(name), "{}", status.message());
        assert!(!status.message().contains("BEGIN CERTIFICATE"));
    };
    let mut refused_targets = Vec::new();
    for (class, attributes, name) in [
        ("hostile-file", vec![], "vaultCACertPath"),
        ("hostile-address", vec![], "vaultAddress"),
        ("app", vec![("roleName", "admin")], "roleName"),
        (
            "app",
            vec![("vaultAddress", "http://169.254.169.254")],
            "vaultAddress",
        ),
        (
            "app",
            vec![("vaultCACertPath", "/etc/ssl/certs/ca-certificates.crt")],
            "vaultCACertPath",
        ),
        (
            "app",
            vec![("vaultAuthMountPath", "kubernetes")],
            "vaultAuthMountPath",
        ),
    ] {
        let (request, target) = publish(class, &attributes);
        let status = client.node_publish_volume(request).await.unwrap_err();
        expect_refused(status, name);
        assert!(
            mount_entry(&target).is_none(),
            "nothing mounted for {class}"
        );
        refused_targets.push(target);
    }
    // The class's own (missing) role: the pod may not replace it without the admin.
    let (request, _) = publish("app-class-role", &[("roleName", "web")]);
    expect_refused(
        client.node_publish_volume(request).await.unwrap_err(),
        "roleName",
    );
    assert_eq!(
        bao.count_logins("jwt"),
        logins,
        "no refused publish reached Vault"
    );
    client
        .node_unpublish_volume(unpublish_request(&ok.volume_id, &ok_target))
        .await
        .unwrap();
    drop(client);
    drop(node);

    // The admin opts in for roleName: the pod's role is used.
    let node = NodeProcess::start(NodeOptions {
        class_dir: Some(classes),
        args: vec![
            allowed_dirs,
            "--allow-volume-attribute-overrides=roleName".into(),
        ],
        ..Default::default()
    })
    .await;
    let mut client = node.node_client().await;
    let (request, target) = publish("app-class-role", &[("roleName", "web")]);
    client
        .node_publish_volume(request.clone())
        .await
        .expect("roleName override allowed by the admin");
    assert_eq!(
        std::fs::read_to_string(target.join("p")).unwrap(),
        "tenant-secret-1"
    );
    let (still, _) = publish("app", &[("vaultAddress", "http://169.254.169.254")]);
    expect_refused(
        client.node_publish_volume(still).await.unwrap_err(),
        "vaultAddress",
    );
    client
        .node_unpublish_volume(unpublish_request(&request.volume_id, &target))
        .await
        .unwrap();
    assert!(!node.logs().contains("tenant-secret-1"));
}
