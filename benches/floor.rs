//! The kernel's floor for one publish: only the system calls any node plugin must make for a
//! volume of three files, with nothing else around them (no gRPC, no checks, no state, no
//! provider): mkdir the target, mount a tmpfs on it, make a generation directory, write the
//! three files, point `..data` at the generation with a symlink and a rename, link the three
//! names through `..data`; then unmount and rmdir. `benches/publish.rs` reports keymount's CPU
//! per publish; docs/PERFORMANCE.md gives both as a ratio to this floor.
//!
//! It then measures the floor of the one gRPC round trip a node plugin's CPU takes part in per
//! publish (`common/grpc_round_trip.rs`), so keymount's figures can also be read against the
//! kernel's floor plus that.
//!
//! With `--api`, it also measures the one write a publish makes to the API server on the real
//! path, the pod status's server-side apply (`common/status_apply.rs`), against the test
//! bed's kube-apiserver (`KEYMOUNT_TEST_KUBECONFIG`, or one started for the run).
//!
//! `cargo bench --bench floor -- [--volumes N] [--disk fresh-ext4|here] [--api]`

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, symlink};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::resource::{UsageWho, getrusage};

const FILES: [(&str, &[u8]); 3] = [
    ("user", b"app"),
    ("password", b"bench-pw"),
    ("tls.key", b"k"),
];

/// CPU time of this process so far, user and system, in microseconds (`getrusage`).
fn cpu_us() -> (f64, f64) {
    let usage = getrusage(UsageWho::RUSAGE_SELF).unwrap();
    let us = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 * 1e6 + t.tv_usec() as f64;
    (us(usage.user_time()), us(usage.system_time()))
}

/// CPU microseconds (user, system) spent in one phase, added up over the volumes.
#[derive(Default)]
struct Phase {
    user: f64,
    system: f64,
    wall: Vec<Duration>,
}

impl Phase {
    fn add(&mut self, before: (f64, f64), started: Instant) {
        let after = cpu_us();
        self.user += after.0 - before.0;
        self.system += after.1 - before.1;
        self.wall.push(started.elapsed());
    }

    fn print(&mut self, name: &str, volumes: usize) {
        self.wall.sort();
        let at = |p: f64| {
            self.wall[((self.wall.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3
        };
        println!(
            "{name:<10} p50={:.3} ms  p99={:.3} ms  CPU {:.0} µs user + {:.0} µs system",
            at(0.5),
            at(0.99),
            self.user / volumes as f64,
            self.system / volumes as f64
        );
    }
}

/// One volume's publish as the kernel sees it, then its unpublish.
fn publish_and_unpublish(target: &Path, publish: &mut Phase, unpublish: &mut Phase) {
    let (cpu, started) = (cpu_us(), Instant::now());
    fs::create_dir(target).unwrap();
    mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=2m"),
    )
    .unwrap();
    let generation = target.join("..2026_12_02_00_00_00.000000001");
    fs::create_dir(&generation).unwrap();
    for (name, content) in FILES {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(generation.join(name))
            .unwrap();
        file.write_all(content).unwrap();
    }
    symlink(generation.file_name().unwrap(), target.join("..data_tmp")).unwrap();
    fs::rename(target.join("..data_tmp"), target.join("..data")).unwrap();
    for (name, _) in FILES {
        symlink(Path::new("..data").join(name), target.join(name)).unwrap();
    }
    publish.add(cpu, started);
    let (cpu, started) = (cpu_us(), Instant::now());
    umount2(target, MntFlags::empty()).unwrap();
    fs::remove_dir(target).unwrap();
    unpublish.add(cpu, started);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let volumes = args
        .iter()
        .position(|a| a == "--volumes")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000_usize);
    let here = args.windows(2).any(|w| w[0] == "--disk" && w[1] == "here");
    let disk = (!here).then(fresh_disk::FreshDisk::make);
    let tmp = match &disk {
        Some(disk) => tempfile::tempdir_in(disk.root()).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    // As kubelet does, the parent directories exist before the publish.
    let targets: Vec<_> = (0..volumes)
        .map(|n| {
            let parent = tmp
                .path()
                .join(format!("pods/{n}/volumes/kubernetes.io~csi/secrets"));
            fs::create_dir_all(&parent).unwrap();
            parent.join("mount")
        })
        .collect();
    let (mut publish, mut unpublish) = (Phase::default(), Phase::default());
    let started = Instant::now();
    for target in &targets {
        publish_and_unpublish(target, &mut publish, &mut unpublish);
    }
    let wall = started.elapsed();
    println!(
        "kernel floor: {volumes} volumes of 3 files, one at a time, on {}; {:.0} volumes/s",
        if here { "$TMPDIR" } else { "a fresh ext4" },
        volumes as f64 / wall.as_secs_f64()
    );
    publish.print("publish", volumes);
    unpublish.print("unpublish", volumes);
    grpc_round_trip::run(volumes.max(1000), cpu_us);
    if args.iter().any(|a| a == "--api") {
        status_apply::run(volumes.max(1000), cpu_us);
    }
}

/// The runtime the floors that need one run on: two workers, as keymount's node.
fn two_worker_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[path = "common/fresh_disk.rs"]
mod fresh_disk;
#[path = "common/grpc_round_trip.rs"]
mod grpc_round_trip;
#[path = "common/status_apply.rs"]
mod status_apply;
#[path = "../tests/support/mod.rs"]
mod support;
