//! Files a class names: only beneath the allowed directories, no link or `..` out, no FIFO,
//! no content in errors.

use std::os::unix::fs::symlink;
use std::time::Duration;

use crate::{Layout, MARKER, assert_refused, mount_at_addr, mount_with, tls_vault};

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
