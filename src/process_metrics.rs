//! The process's own CPU time and memory on every scrape, from `getrusage(RUSAGE_SELF)` (every
//! thread, those that ended included, to the microsecond) and `/proc/self/statm`: the standard
//! `process_cpu_seconds_total` and `process_resident_memory_bytes`, and the user/system split as
//! `keymount_process_cpu_seconds_total{mode}`.

use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::time::TimeValLike as _;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Collects the process metrics at scrape time.
#[derive(Debug, Default)]
pub(crate) struct ProcessCollector;

/// User and system CPU seconds of the whole process so far.
pub(crate) fn cpu_seconds() -> Option<(f64, f64)> {
    let usage = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    let seconds = |tv: nix::sys::time::TimeVal| tv.num_microseconds() as f64 / 1e6;
    Some((seconds(usage.user_time()), seconds(usage.system_time())))
}

/// Resident memory in bytes (`/proc/self/statm`, second field, in pages).
fn resident_bytes() -> Option<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok()??;
    Some(pages * page as f64)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some((user, system)) = cpu_seconds() {
            let total = ConstCounter::new(user + system);
            total.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                total.metric_type(),
            )?)?;
            let mut family = encoder.encode_descriptor(
                "keymount_process_cpu_seconds",
                "CPU time spent in seconds, by mode (user, system).",
                None,
                total.metric_type(),
            )?;
            for (mode, seconds) in [("user", user), ("system", system)] {
                ConstCounter::new(seconds).encode(family.encode_family(&[("mode", mode)])?)?;
            }
        }
        if let Some(bytes) = resident_bytes() {
            let rss = ConstGauge::new(bytes);
            rss.encode(encoder.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                None,
                rss.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work_and_memory_is_reported() {
        let (user0, _) = cpu_seconds().unwrap();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let (user1, _) = cpu_seconds().unwrap();
        assert!(user1 - user0 >= 0.01, "{user0} -> {user1}");
        assert!(resident_bytes().unwrap() > 1e6);
    }
}
