//! A throwaway PostgreSQL server per test (`initdb` + `postgres` as the `postgres` system user,
//! trust authentication, 127.0.0.1 on a free port), killed when dropped: the database that
//! OpenBao's database secrets engine mints credentials in.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::proc::{KillOnDrop, free_port, tail, wait_until};

/// A running server; `admin` is its superuser.
#[derive(Debug)]
pub(crate) struct Postgres {
    _process: KillOnDrop,
    pub(crate) port: u16,
    bin: PathBuf,
    _dir: tempfile::TempDir,
}

/// The directory of PostgreSQL's server programs.
fn bin_dir() -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    candidates.sort();
    candidates
        .into_iter()
        .rev()
        .find(|d| d.join("initdb").exists())
        .expect("PostgreSQL server programs not found in /usr/lib/postgresql/*/bin: run ./scripts/deps.sh")
}

/// The uid and gid of the `postgres` system user (the server refuses to run as root).
fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "no `postgres` system user: run ./scripts/deps.sh"
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    (id("-u"), id("-g"))
}

impl Postgres {
    pub(crate) async fn start() -> Postgres {
        let bin = bin_dir();
        let (uid, gid) = postgres_ids();
        let dir = tempfile::Builder::new()
            .prefix("keymount-pg-")
            .tempdir()
            .unwrap();
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        let data = dir.path().join("data");
        let init = Command::new(bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "admin", "--auth=trust", "--no-sync"])
            .current_dir(dir.path())
            .uid(uid)
            .gid(gid)
            .output()
            .unwrap();
        assert!(
            init.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let port = free_port();
        let log = dir.path().join("postgres.log");
        let log_file = std::fs::File::create(&log).unwrap();
        std::os::unix::fs::chown(&log, Some(uid), Some(gid)).unwrap();
        let child = Command::new(bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(dir.path())
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off"])
            .current_dir(dir.path())
            .uid(uid)
            .gid(gid)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let mut process = KillOnDrop {
            child,
            name: "postgres",
        };
        let isready = bin.join("pg_isready");
        let ready = wait_until(Duration::from_secs(30), || {
            let isready = isready.clone();
            async move {
                Command::new(&isready)
                    .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "admin"])
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            }
        })
        .await;
        process.assert_running(&log);
        assert!(ready, "PostgreSQL not ready in 30 s:\n{}", tail(&log, 30));
        Postgres {
            _process: process,
            port,
            bin,
            _dir: dir,
        }
    }

    /// The URL template OpenBao's postgresql plugin connects with.
    pub(crate) fn connection_url(&self) -> String {
        format!(
            "postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    /// Output of one SQL query run with psql as `admin`.
    pub(crate) fn query(&self, sql: &str) -> String {
        let out = Command::new(self.psql())
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "admin",
            ])
            .args(["-d", "postgres", "-At", "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn psql(&self) -> PathBuf {
        let own = self.bin.join("psql");
        if own.exists() {
            own
        } else {
            Path::new("psql").to_owned()
        }
    }
}
