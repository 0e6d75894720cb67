//! Small process helpers: free loopback ports, finding executables, the repository root.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// The repository root (where Cargo.toml lives).
pub(crate) fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Finds an executable on PATH, in the Python interpreter's bin dir, the pip user bin dir
/// (`~/.local/bin`) or any pyenv version's bin dir. Panics naming `scripts/deps.sh` if absent.
pub(crate) fn find_exe(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Ok(out) = Command::new("python3")
        .args([
            "-c",
            "import os, site, sys; print(os.path.dirname(os.path.realpath(sys.executable))); print(site.getuserbase() + '/bin')",
        ])
        .output()
    {
        dirs.extend(String::from_utf8_lossy(&out.stdout).lines().map(PathBuf::from));
    }
    if let Some(home) = std::env::var_os("HOME").map(PathBuf::from) {
        dirs.push(home.join(".local/bin"));
        if let Ok(entries) = std::fs::read_dir(home.join(".pyenv/versions")) {
            dirs.extend(entries.flatten().map(|e| e.path().join("bin")));
        }
    }
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
        .unwrap_or_else(|| {
            panic!("`{name}` not found on PATH or in pip/pyenv bin dirs: run ./scripts/deps.sh")
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A child process killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub(crate) struct KillOnDrop {
    pub(crate) child: Child,
    pub(crate) name: &'static str,
}

impl KillOnDrop {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics with the log tail if the process has already exited.
    pub(crate) fn assert_running(&mut self, log: &Path) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited early ({status}); log {}:\n{}",
                self.name,
                log.display(),
                tail(log, 30)
            );
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `lines` lines of a text file (empty if unreadable).
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Polls `check` every 100 ms until it returns true or `timeout` passes.
pub(crate) async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Installs ring as the process-wide rustls crypto provider (idempotent).
pub(crate) fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Kibibytes of memory field `field` (`VmRSS`, `VmHWM`) of the process whose `/proc` directory
/// is `proc_dir` (`/proc/<pid>`).
pub(crate) fn status_kib(proc_dir: &Path, field: &str) -> Option<u64> {
    std::fs::read_to_string(proc_dir.join("status"))
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// [`status_kib`] of process `pid`, which must be running.
pub(crate) fn memory_kib(pid: u32, field: &str) -> u64 {
    status_kib(Path::new(&format!("/proc/{pid}")), field)
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}
