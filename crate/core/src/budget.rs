//! The process's map-count budget (`vm.max_map_count`).
//!
//! Every kernel mapping (VMA) counts against a per-process limit (65530 by
//! default). When it is reached, *every* `mmap` in the process fails — the
//! JavaScript engine's own heap growth included, which Node answers by aborting.
//! So this crate refuses to create mappings (with `ENOMEM`, as the kernel would)
//! once the process is within [`headroom`] of the limit, keeping that headroom
//! for the runtime and for removals (which may split a mapping).
//!
//! The count of mappings this crate owns is tracked exactly per arena (from its
//! layout) and per mapping; the rest of the process is measured from
//! `/proc/self/maps` only when this crate's own count has grown by a step since
//! the last measure, or when an operation would otherwise be refused — so
//! operations that do not grow the count never pay for a measure. A measure
//! costs time proportional to the process's mappings, so the step grows with
//! the room left: half of it, at least 512 mappings (far from the limit
//! few measures, near it one every 512; this crate never uses more
//! than half the room it last saw without looking again). A refusal is
//! confirmed by a fresh measure, except within ten times the duration of the
//! measure that confirmed the last one: a caller that retries in a loop at the
//! limit spends at most about a tenth of its time measuring.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// Mappings owned by this crate in this process.
static OWNED: AtomicUsize = AtomicUsize::new(0);
/// Mappings of the rest of the process at the last measure (`usize::MAX`: never measured).
static OTHERS: AtomicUsize = AtomicUsize::new(usize::MAX);
/// `OWNED` at the last measure.
static OWNED_AT_MEASURE: AtomicUsize = AtomicUsize::new(0);
/// Mappings this crate may have added since the last measure without a
/// layout that tracks them: an advice that changes a mapping's flags over part
/// of it splits it (up to two more). The next measure counts them for real.
static UNTRACKED: AtomicUsize = AtomicUsize::new(0);
/// Growth of `OWNED` after which the rest of the process is measured again, at
/// least.
const REMEASURE_STEP: usize = 512;
/// The growth of `OWNED` after which the rest of the process is measured again
/// (set by each measure: half the room it left, at least `REMEASURE_STEP`).
static STEP: AtomicUsize = AtomicUsize::new(REMEASURE_STEP);
/// When the last refusal was confirmed by a measure, and how long that took.
static REFUSED: Mutex<Option<(Instant, Duration)>> = Mutex::new(None);

/// `vm.max_map_count`, read once (65530 if it cannot be read).
pub fn max_map_count() -> usize {
    static LIMIT: OnceLock<usize> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(65530)
    })
}

/// Mappings kept free for the runtime and for removals: 1/16 of the limit, at
/// least 1024.
pub fn headroom() -> usize {
    (max_map_count() / 16).max(1024)
}

/// The process's current number of mappings (lines of `/proc/self/maps`). Costs
/// time proportional to that number.
pub fn process_map_count() -> Result<usize> {
    // Streamed through a stack buffer: this must keep working at the limit,
    // where a heap allocation that needs a new mapping would fail.
    let mut count = 0;
    crate::sys::for_each_mapping(|_, _| {
        count += 1;
        true
    })?;
    Ok(count)
}

/// Mappings this crate owns in this process.
pub fn owned_map_count() -> usize {
    OWNED.load(Ordering::Relaxed)
}

fn measure() -> Result<usize> {
    // One measure at a time: regions in several threads (worker_threads, the thread pool) check
    // the budget at once, and two measures that both subtracted the same untracked splits would
    // wrap the counter (found by the ThreadSanitizer stress run: an add overflow in debug builds).
    static MEASURING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let owned = OWNED.load(Ordering::Relaxed);
    let untracked = UNTRACKED.load(Ordering::Relaxed);
    // Splits made so far are in the kernel's count now, so in `others`.
    let others = process_map_count()?.saturating_sub(owned);
    let _ = UNTRACKED.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
        Some(n.saturating_sub(untracked))
    });
    OTHERS.store(others, Ordering::Relaxed);
    OWNED_AT_MEASURE.store(owned, Ordering::Relaxed);
    let room = allowed().saturating_sub(others.saturating_add(owned));
    STEP.store((room / 2).max(REMEASURE_STEP), Ordering::Relaxed);
    Ok(others)
}

/// Mappings the process may have before operations are refused.
fn allowed() -> usize {
    max_map_count().saturating_sub(headroom())
}

/// Whether a measure confirmed a refusal so recently (within ten times its
/// duration) that the next refusal need not measure again.
fn refused_recently() -> bool {
    let last = *REFUSED.lock().unwrap_or_else(|e| e.into_inner());
    last.is_some_and(|(at, took)| at.elapsed() < took.saturating_mul(10))
}

/// Refuses with `ENOMEM` an operation that may add up to `extra` mappings when
/// the process would come within the headroom of the limit.
pub(crate) fn check_room(extra: usize) -> Result<()> {
    let owned = OWNED.load(Ordering::Relaxed);
    let mut others = OTHERS.load(Ordering::Relaxed);
    let untracked = UNTRACKED.load(Ordering::Relaxed);
    if others == usize::MAX
        || (owned + untracked).saturating_sub(OWNED_AT_MEASURE.load(Ordering::Relaxed))
            >= STEP.load(Ordering::Relaxed)
    {
        others = measure()?;
    }
    let allowed = allowed();
    let untracked = UNTRACKED.load(Ordering::Relaxed);
    let total = |others: usize, untracked: usize| {
        others
            .saturating_add(owned)
            .saturating_add(untracked)
            .saturating_add(extra)
    };
    let refused = Err(Error::Syscall {
        syscall: "mmap",
        errno: libc::ENOMEM,
    });
    if total(others, untracked) > allowed {
        // The measure that confirmed the last refusal is recent: its count stands.
        if refused_recently() {
            return refused;
        }
        // Confirm with a fresh measure before refusing.
        let started = Instant::now();
        others = measure()?;
        if total(others, 0) > allowed {
            let now = Instant::now();
            *REFUSED.lock().unwrap_or_else(|e| e.into_inner()) = Some((now, now - started));
            return refused;
        }
    }
    Ok(())
}

/// Records that an operation may have split mappings into `n` more that no
/// layout tracks (counted for real at the next measure).
pub(crate) fn note_untracked(n: usize) {
    UNTRACKED.fetch_add(n, Ordering::Relaxed);
}

/// Records that a region now owns `new` mappings instead of `old`.
pub(crate) fn update(old: usize, new: usize) {
    if new > old {
        OWNED.fetch_add(new - old, Ordering::Relaxed);
    } else if old > new {
        OWNED.fetch_sub(old - new, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_limits() {
        assert!(max_map_count() >= 1024);
        assert!(headroom() >= 1024);
        let n = process_map_count().unwrap();
        assert!(n > 0);
        check_room(2).unwrap();
        // An impossible request is refused with the kernel's errno.
        assert_eq!(
            check_room(max_map_count()).unwrap_err(),
            Error::Syscall {
                syscall: "mmap",
                errno: libc::ENOMEM
            }
        );
    }
}
