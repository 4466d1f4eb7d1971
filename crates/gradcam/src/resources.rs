//! Memory a job may take: what the machine has available, and a check made before a large allocation (a
//! batch, a big tensor input) so that the answer is an error that says what to change, not an abort.

use crate::error::{Error, Result};

/// Memory available to a new allocation now: `MemAvailable` of /proc/meminfo (Linux), capped by the cgroup's
/// limit where one is set; None where neither can be read.
pub fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines().find(|l| l.starts_with("MemAvailable:")).and_then(|l| {
            let kb: u64 = l.split_whitespace().nth(1)?.parse().ok()?;
            kb.checked_mul(1024)
        })
    });
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok().and_then(|s| s.trim().parse::<u64>().ok());
    match (meminfo, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn gb(b: u64) -> String {
    if b >= 10_000_000_000 {
        format!("{:.0} GB", b as f64 / 1e9)
    } else {
        format!("{:.1} GB", b as f64 / 1e9)
    }
}

/// Refuse `what` when it would need more than the memory available (with room for the rest of the process).
pub fn check_memory(what: &str, need: u64, hint: &str) -> Result<()> {
    let Some(avail) = available_memory() else {
        return Ok(());
    };
    // keep a quarter for the model, the decoded photos and the pictures
    let budget = avail / 4 * 3;
    if need > budget {
        return Err(Error::invalid(format!(
            "{what} would need about {} of memory, and this machine has {} available; {hint}",
            gb(need),
            gb(avail)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn an_impossible_need_is_refused_with_figures() {
        assert!(available_memory().is_some_and(|m| m > 0));
        let e = check_memory("--batch 100000", u64::MAX / 2, "use a smaller batch").unwrap_err().to_string();
        assert!(e.contains("--batch 100000") && e.contains("GB") && e.contains("smaller batch"), "{e}");
        assert!(check_memory("a small thing", 1000, "").is_ok());
    }
}
