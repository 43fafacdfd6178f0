//! Dirty-page tracking by the kernel: which pages of some address ranges were
//! written, by any writer in this process — its threads, the kernel on its
//! behalf (`read(2)` into the memory), KVM running a guest over it — the way
//! `KVM_GET_DIRTY_LOG` reports a guest's writes, for any memory.
//!
//! How: the ranges are registered with a userfaultfd in asynchronous
//! write-protect mode (`UFFD_FEATURE_WP_ASYNC`, Linux 6.7) and write-protected.
//! The first write to a protected page faults once; the kernel resolves the
//! fault itself (no handler thread: it clears the page's protection and lets
//! the write go on), and the cleared protection is the record of the write.
//! `ioctl(PAGEMAP_SCAN)` on `/proc/self/pagemap` reports the pages whose
//! protection is gone (`PAGE_IS_WRITTEN`) and protects them again in the same
//! walk. `UFFD_FEATURE_WP_UNPOPULATED` makes protection cover pages not yet
//! faulted in, so a first touch that writes is seen as well.
//!
//! What is a write here: a change made through the tracked range's page
//! tables. Not seen: writes into the same memory by another route — another
//! mapping of the same memfd or file (in this process or another),
//! `write(2)`/`pwrite(2)`/`fallocate(2)` on the file — and discarding shared
//! memory (`MADV_REMOVE`, a punched hole). Discarding private anonymous pages
//! (`MADV_DONTNEED`) drops their protection with them: they are reported as
//! written, which they are in effect (they read as zeros now).

use std::os::fd::{AsFd, OwnedFd};

use crate::error::NoTracking;
use crate::sys::wp::{self, PageRegion, Scan};
use crate::{sys, Error, Result};

/// How many runs of written pages one `PAGEMAP_SCAN` call can report: the
/// scan goes on from where the kernel stopped when they fill up. On the
/// stack (12 KiB): a take allocates nothing and takes no lock.
const RUNS_PER_CALL: usize = 512;

/// The features write tracking needs from the kernel's userfaultfd.
const NEEDED: u64 = wp::UFFD_FEATURE_WP_ASYNC | wp::UFFD_FEATURE_WP_UNPOPULATED;

/// Tracks which pages of the ranges given to [`track`](Self::track) are
/// written, with the semantics of `KVM_GET_DIRTY_LOG`: [`take`](Self::take)
/// reports the pages written since the last take (or since the range was
/// tracked) and starts recording anew. A range just tracked reports nothing
/// until it is written.
///
/// One tracker may serve many ranges, from any thread (`Send + Sync`: its
/// state is two private kernel descriptors, never handed out, and the ioctls
/// on them may be made from several threads at once). A range can be
/// tracked by one tracker at a time; dropping the
/// tracker untracks all its ranges. The tracker belongs to the process that
/// opened it (a forked child's copy answers for the parent).
///
/// The registration belongs to the mappings, not the addresses: a mapping
/// placed over part of a tracked range (`mmap(MAP_FIXED)`, an arena's
/// overlay, `mremap`) is a new mapping, and is not tracked. A take over it
/// fails with [`NoTracking::NotTracked`] rather than miss its writes: after
/// changing the layout, [`track`](Self::track) the new mapping's range (only
/// that range: tracking a range again forgets the writes it had since the
/// last take). Its old contents are gone, which no take reports: the caller
/// knows which range it replaced.
#[derive(Debug)]
pub struct WriteTracker {
    /// The userfaultfd the ranges are registered with (asynchronous
    /// write-protect mode: it never has a message to read).
    uffd: OwnedFd,
    /// `/proc/self/pagemap`, opened once: the scans are ioctls on it.
    pagemap: OwnedFd,
    /// Every userfaultfd feature the kernel offers (`UFFDIO_API`'s answer).
    offered: u64,
    /// Whether the userfaultfd was made with `UFFD_USER_MODE_ONLY`.
    user_mode_only: bool,
}

// The binding keeps one tracker per arena, shared between threads.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<WriteTracker>();
};

impl WriteTracker {
    /// A new tracker, tracking nothing yet. [`Error::WriteTracking`] says why
    /// the kernel or the process cannot track writes
    /// ([`NoTracking::kernel_lacks_it`]).
    ///
    /// Makes a userfaultfd (`O_CLOEXEC | O_NONBLOCK`); where that is not
    /// permitted (`vm.unprivileged_userfaultfd` is 0 and the process has no
    /// `CAP_SYS_PTRACE` nor `/dev/userfaultfd`), one for user-mode faults only,
    /// which every process may make: asynchronous write-protect faults are
    /// resolved by the kernel whichever mode they are taken in, so writes by
    /// the kernel and KVM are recorded all the same.
    pub fn open() -> Result<WriteTracker> {
        let flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
        let (uffd, flags) = match wp::userfaultfd(flags) {
            Ok(fd) => (fd, flags),
            Err(e) if e.errno() == Some(libc::EPERM) => {
                let flags = flags | wp::UFFD_USER_MODE_ONLY;
                match wp::userfaultfd(flags) {
                    Ok(fd) => (fd, flags),
                    Err(e) => {
                        return Err(match e.errno() {
                            Some(libc::EPERM) => unavailable(NoTracking::NotPermitted),
                            // Before Linux 5.11: no such flag (and no
                            // asynchronous write-protect either).
                            Some(libc::EINVAL) => unavailable(NoTracking::KernelTooOld {
                                missing: "UFFD_USER_MODE_ONLY",
                            }),
                            _ => e,
                        });
                    }
                }
            }
            Err(e) if e.errno() == Some(libc::ENOSYS) => {
                return Err(unavailable(NoTracking::NoUserfaultfd))
            }
            Err(e) => return Err(e),
        };
        let offered = match wp::uffd_api(uffd.as_fd(), NEEDED) {
            Ok(offered) if offered & NEEDED == NEEDED => offered,
            Ok(offered) => return Err(too_old(offered)),
            // A kernel refuses features it does not know. A descriptor is set
            // up once: a fresh one, asked for nothing, tells what it offers.
            Err(e) if e.errno() == Some(libc::EINVAL) => {
                let offered = wp::userfaultfd(flags)
                    .and_then(|probe| wp::uffd_api(probe.as_fd(), 0))
                    .unwrap_or(0);
                return Err(too_old(offered));
            }
            Err(e) => return Err(e),
        };
        let pagemap = wp::open_read_only(c"/proc/self/pagemap").map_err(|e| {
            unavailable(NoTracking::NoPagemap {
                errno: e.errno().unwrap_or(libc::EIO),
            })
        })?;
        // A scan of nothing: before Linux 6.7 pagemap has no ioctl (ENOTTY).
        let probe = Scan {
            flags: wp::PM_SCAN_WP_MATCHING | wp::PM_SCAN_CHECK_WPASYNC,
            start: 0,
            end: 0,
            inverted: 0,
            mask: wp::PAGE_IS_WRITTEN,
            returned: wp::PAGE_IS_WRITTEN,
        };
        match wp::pagemap_scan(pagemap.as_fd(), probe, &mut []) {
            Ok(_) => {}
            Err(e) if matches!(e.errno(), Some(libc::ENOTTY | libc::EINVAL)) => {
                return Err(unavailable(NoTracking::KernelTooOld {
                    missing: "PAGEMAP_SCAN",
                }))
            }
            Err(e) => return Err(e),
        }
        Ok(WriteTracker {
            uffd,
            pagemap,
            offered,
            user_mode_only: flags & wp::UFFD_USER_MODE_ONLY != 0,
        })
    }

    /// Whether the userfaultfd is for user-mode faults only (the process may
    /// not make another kind). Tracking is the same either way.
    pub fn user_mode_only(&self) -> bool {
        self.user_mode_only
    }

    /// Every userfaultfd feature (`UFFD_FEATURE_*` bits) this kernel offers.
    pub fn offered_features(&self) -> u64 {
        self.offered
    }

    /// Whether this kernel write-protects shared memory and huge pages with
    /// pte markers (`UFFD_FEATURE_WP_HUGETLBFS_SHMEM`): without it, only
    /// private anonymous memory is tracked reliably. Huge pages (a
    /// `MFD_HUGETLB` memfd) are tracked a whole huge page at a time: one
    /// write reports all its pages.
    pub fn tracks_shared_and_huge(&self) -> bool {
        self.offered & wp::UFFD_FEATURE_WP_HUGETLBFS_SHMEM != 0
    }

    /// Starts tracking `[addr, addr + len)` (page aligned, every page mapped,
    /// any protection): registers it and write-protects it, so that it starts
    /// clean — writes before this call are not reported, writes after it are.
    /// Tracking a tracked range again is allowed, and starts it clean again.
    /// Anonymous memory, shared memory (memfds, tmpfs), hugetlbfs and file
    /// mappings can be tracked; the kernel's refusals come as
    /// [`Error::WriteTracking`] ([`NoTracking::MemoryKind`],
    /// [`NoTracking::NeverWritable`], [`NoTracking::TrackedElsewhere`]).
    /// Nothing is written, nor read; a page faulted in after this is protected
    /// from the start. Costs about 6 ms per 256 MiB of populated memory here.
    pub fn track(&self, addr: usize, len: usize) -> Result<()> {
        if check_range(addr, len)? == addr {
            // Nothing to track (the kernel calls a length of 0 invalid).
            return Ok(());
        }
        // Write-protection reaches every page (pte markers for those not yet
        // touched): its page tables are unswappable kernel memory, and a
        // range far larger than the machine would exhaust it.
        check_page_tables(len)?;
        // The kernel registers the mappings it finds in the range and skips
        // holes: a hole would be an untracked gap, so it is refused here, as
        // msync and mlock refuse unmapped memory (ENOMEM).
        if !sys::fully_mapped(addr as *mut u8, len) {
            return Err(Error::Syscall {
                syscall: "ioctl(UFFDIO_REGISTER)",
                errno: libc::ENOMEM,
            });
        }
        wp::uffd_register_wp(self.uffd.as_fd(), addr, len).map_err(|e| match e.errno() {
            Some(libc::EINVAL) => unavailable(NoTracking::MemoryKind),
            Some(libc::EPERM) => unavailable(NoTracking::NeverWritable),
            Some(libc::EBUSY) => unavailable(NoTracking::TrackedElsewhere),
            _ => e,
        })?;
        if let Err(e) = wp::uffd_write_protect(self.uffd.as_fd(), addr, len) {
            // Registered but not protected, every page would read as written:
            // left untracked instead (a take says so).
            let _ = wp::uffd_unregister(self.uffd.as_fd(), addr, len);
            return Err(e);
        }
        Ok(())
    }

    /// Stops tracking `[addr, addr + len)` (page aligned): unregisters it,
    /// and the kernel lifts the protection of its pages. Writes there cost
    /// nothing from now on, and a take over it fails
    /// ([`NoTracking::NotTracked`]) until it is tracked again.
    pub fn untrack(&self, addr: usize, len: usize) -> Result<()> {
        if check_range(addr, len)? == addr {
            // Nothing to untrack (the kernel calls a length of 0 invalid).
            return Ok(());
        }
        wp::uffd_unregister(self.uffd.as_fd(), addr, len)
    }

    /// Sets bit `i` of `bitmap` for each page `i` of `[addr, addr + len)`
    /// (page aligned, tracked) written since the last take, and starts
    /// recording anew; bits already set stay set. The layout of
    /// `KVM_GET_DIRTY_LOG`: page `i` is bit `i % 64` of word `i / 64`.
    /// `bitmap` needs one word per 64 pages. Returns how many pages were
    /// reported.
    ///
    /// Each page is reported and protected again in one step under its page
    /// table lock: a write racing the take is reported by this take or by
    /// the next, never lost. Its cost grows with the runs of written pages:
    /// over 256 MiB here, 0.05 ms when nothing was written, 0.12 ms with every
    /// 64th page written, 2.8 ms with all (machines of this kind differ up to
    /// 3×). The first write to a page after a take costs a fault the kernel
    /// resolves (about 0.75 µs here); later ones cost nothing more.
    ///
    /// A range not entirely tracked fails with [`NoTracking::NotTracked`]
    /// before anything is taken. A layout change racing the take (a mapping
    /// replaced meanwhile) is the caller's to prevent: the take would then
    /// fail part-way, and the bits it had set (real writes, taken already)
    /// are in `bitmap`.
    pub fn take(&self, addr: usize, len: usize, bitmap: &mut [u64]) -> Result<usize> {
        self.scan(
            addr,
            len,
            bitmap,
            wp::PM_SCAN_WP_MATCHING | wp::PM_SCAN_CHECK_WPASYNC,
        )
    }

    /// As [`take`](Self::take), without starting anew: the pages reported
    /// stay reported, and the next take reports them again.
    pub fn peek(&self, addr: usize, len: usize, bitmap: &mut [u64]) -> Result<usize> {
        self.scan(addr, len, bitmap, wp::PM_SCAN_CHECK_WPASYNC)
    }

    /// The scan of `take` and `peek`, with their `PM_SCAN_*` flags.
    fn scan(&self, addr: usize, len: usize, bitmap: &mut [u64], flags: u64) -> Result<usize> {
        let end = check_range(addr, len)?;
        let page = sys::page_size();
        let pages = len / page;
        if bitmap.len() < pages.div_ceil(64) {
            return Err(Error::OutOfRange {
                what: "bitmap",
                reason: format!(
                    "{} words hold {} pages; the range has {pages}",
                    bitmap.len(),
                    bitmap.len() * 64
                ),
            });
        }
        if pages == 0 {
            return Ok(0);
        }
        self.check_tracked(addr, end)?;
        let mut runs = [PageRegion::default(); RUNS_PER_CALL];
        let mut reported = 0;
        let mut start = addr;
        while start < end {
            let scan = Scan {
                flags,
                start,
                end,
                inverted: 0,
                mask: wp::PAGE_IS_WRITTEN,
                returned: wp::PAGE_IS_WRITTEN,
            };
            let (filled, walk_end) = wp::pagemap_scan(self.pagemap.as_fd(), scan, &mut runs)
                .map_err(not_tracked_on_eperm)?;
            for run in &runs[..filled] {
                // Clipped to the range (a huge page is reported whole).
                let first = (run.start as usize).max(addr);
                let last = (run.end as usize).min(end);
                if first < last {
                    set_bits(bitmap, (first - addr) / page, (last - addr) / page);
                    reported += (last - first) / page;
                }
            }
            if filled < runs.len() || walk_end >= end {
                break;
            }
            if walk_end <= start {
                // No progress: never seen, and a loop without end if it were.
                return Err(Error::Syscall {
                    syscall: "ioctl(PAGEMAP_SCAN)",
                    errno: libc::EIO,
                });
            }
            start = walk_end;
        }
        Ok(reported)
    }

    /// Fails with [`NoTracking::NotTracked`] unless every mapping in
    /// `[addr, end)` is tracked (registered in asynchronous write-protect
    /// mode). Asks for the pages of mappings that are *not* (a category of
    /// the mapping, `PAGE_IS_WPALLOWED`, inverted) with
    /// `PM_SCAN_CHECK_WPASYNC`: the kernel then visits mappings, not pages
    /// (≈ 0.4 µs), fails with `EPERM` at an untracked one, and reports and
    /// changes nothing — so a take never consumes part of a range and fails
    /// on the rest.
    fn check_tracked(&self, addr: usize, end: usize) -> Result<()> {
        let scan = Scan {
            flags: wp::PM_SCAN_CHECK_WPASYNC,
            start: addr,
            end,
            inverted: wp::PAGE_IS_WPALLOWED,
            mask: wp::PAGE_IS_WPALLOWED,
            returned: wp::PAGE_IS_WPALLOWED,
        };
        wp::pagemap_scan(self.pagemap.as_fd(), scan, &mut [])
            .map(|_| ())
            .map_err(not_tracked_on_eperm)
    }
}

/// [`Error::WriteTracking`] for `reason`.
fn unavailable(reason: NoTracking) -> Error {
    Error::WriteTracking { reason }
}

/// The kernel's answer lacks a feature tracking needs: which, from what it
/// offers (0 when it could not say).
fn too_old(offered: u64) -> Error {
    let missing = if offered & wp::UFFD_FEATURE_WP_ASYNC == 0 {
        "UFFD_FEATURE_WP_ASYNC"
    } else {
        "UFFD_FEATURE_WP_UNPOPULATED"
    };
    unavailable(NoTracking::KernelTooOld { missing })
}

/// `PM_SCAN_CHECK_WPASYNC`'s `EPERM`: a mapping of the range is not tracked.
fn not_tracked_on_eperm(e: Error) -> Error {
    if e.errno() == Some(libc::EPERM) {
        unavailable(NoTracking::NotTracked)
    } else {
        e
    }
}

/// Checks that `[addr, addr + len)` is page aligned and does not wrap;
/// returns its end.
fn check_range(addr: usize, len: usize) -> Result<usize> {
    let page = sys::page_size();
    if !addr.is_multiple_of(page) {
        return Err(Error::Unaligned {
            what: "address",
            value: addr as u64,
        });
    }
    if !len.is_multiple_of(page) {
        return Err(Error::Unaligned {
            what: "length",
            value: len as u64,
        });
    }
    addr.checked_add(len).ok_or_else(|| Error::OutOfRange {
        what: "length",
        reason: format!("{addr:#x} + {len} passes the end of the address space"),
    })
}

/// Sets bits `[first, last)` of `bitmap`, a word at a time.
fn set_bits(bitmap: &mut [u64], first: usize, last: usize) {
    let mut i = first;
    while i < last {
        let bit = i % 64;
        let n = (64 - bit).min(last - i);
        let mask = if n == 64 {
            u64::MAX
        } else {
            ((1u64 << n) - 1) << bit
        };
        bitmap[i / 64] |= mask;
        i += n;
    }
}

/// Refuses to write-protect `len` bytes where their page tables (8 bytes per
/// page) would take more than a quarter of the memory the kernel says is
/// available (`MemAvailable`); where `/proc/meminfo` cannot be read, nothing
/// is refused here.
fn check_page_tables(len: usize) -> Result<()> {
    let needed = (len / sys::page_size()) as u64 * 8;
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kib| kib * 1024);
    match available {
        Some(available) if needed > available / 4 => {
            Err(unavailable(NoTracking::PageTables { needed, available }))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{page_size, MappedRegion, MappingOptions, MemoryMapping, Protection, SharedMemory};
    use std::os::fd::AsFd;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// A tracker, or `None` where the kernel lacks tracking and
    /// `MR_ALLOW_NO_UFFD=1` says that is expected (an old kernel, valgrind);
    /// anywhere else a missing tracker fails the test.
    fn tracker() -> Option<WriteTracker> {
        match WriteTracker::open() {
            Ok(t) => Some(t),
            Err(Error::WriteTracking { reason })
                if reason.kernel_lacks_it()
                    && std::env::var_os("MR_ALLOW_NO_UFFD").is_some_and(|v| v == "1") =>
            {
                println!("kernel write tracking skipped (MR_ALLOW_NO_UFFD=1): {reason}");
                None
            }
            Err(e) => panic!(
                "kernel write tracking must work on this machine: {e} \
                 (set MR_ALLOW_NO_UFFD=1 where the kernel is known to lack it)"
            ),
        }
    }

    /// The indices of the set bits of `bitmap`.
    fn pages(bitmap: &[u64]) -> Vec<usize> {
        (0..bitmap.len() * 64)
            .filter(|i| bitmap[i / 64] & (1 << (i % 64)) != 0)
            .collect()
    }

    /// What a take over `len` bytes at `addr` reports, as page indices.
    fn take(t: &WriteTracker, addr: usize, len: usize) -> Vec<usize> {
        let mut bitmap = vec![0u64; (len / page_size()).div_ceil(64)];
        let n = t.take(addr, len, &mut bitmap).unwrap();
        let got = pages(&bitmap);
        assert_eq!(n, got.len());
        got
    }

    /// Writes one byte into page `page` of the memory at `addr` directly (a
    /// store, as a thread or a guest would: no syscall).
    fn poke(addr: usize, page: usize, value: u8) {
        // SAFETY: the tests pass memory they mapped writable and own, and no
        // reference points into it.
        unsafe { std::ptr::write_volatile((addr + page * page_size() + 8) as *mut u8, value) };
    }

    #[test]
    fn falls_back_to_user_mode_faults_only_where_it_must() {
        let Some(t) = tracker() else { return };
        // A plain descriptor is refused (EPERM) to a process without
        // vm.unprivileged_userfaultfd, CAP_SYS_PTRACE or /dev/userfaultfd:
        // then, and only then, the tracker has a user-mode-only one.
        let plain = wp::userfaultfd(libc::O_CLOEXEC);
        assert_eq!(
            t.user_mode_only(),
            plain.as_ref().err().and_then(Error::errno) == Some(libc::EPERM),
            "{plain:?}"
        );
        assert_eq!(t.offered_features() & NEEDED, NEEDED);
        println!("userfaultfd user-mode only: {}", t.user_mode_only());
    }

    /// The checks every kind of memory must pass: clean after `track`, the
    /// pages written and no others, re-armed after a take, a write by the
    /// kernel (`pread` into the memory) seen.
    fn writes_are_reported(t: &WriteTracker, addr: usize, len: usize) {
        let ps = page_size();
        // Some pages faulted in before tracking, some not.
        poke(addr, 0, 1);
        poke(addr, 5, 1);
        t.track(addr, len).unwrap();
        assert_eq!(
            take(t, addr, len),
            Vec::<usize>::new(),
            "clean at the start"
        );
        for page in [0, 3, 4, 63] {
            poke(addr, page, 2);
        }
        let mut peeked = vec![0u64; 1];
        assert_eq!(t.peek(addr, len, &mut peeked).unwrap(), 4);
        assert_eq!(take(t, addr, len), [0, 3, 4, 63]);
        assert_eq!(take(t, addr, len), Vec::<usize>::new(), "re-armed");
        // The kernel writes pages 10 and 11 (pread from a file).
        let file = crate::testutil::unlinked_file("dirty-pread", &vec![7u8; 2 * ps], false);
        // SAFETY: two pages of the tracked memory, mapped writable.
        let dst = unsafe { crate::MemSliceMut::new((addr + 10 * ps) as *mut u8, 2 * ps) };
        assert_eq!(sys::pread(file.as_fd(), dst, 0).unwrap(), 2 * ps);
        assert_eq!(take(t, addr, len), [10, 11]);
        // Bits already set stay set; a sub-range reports its own pages.
        poke(addr, 20, 3);
        poke(addr, 50, 3);
        let mut bitmap = [1u64 << 2];
        assert_eq!(t.take(addr + 16 * ps, 32 * ps, &mut bitmap).unwrap(), 1);
        assert_eq!(pages(&bitmap), [2, 4]);
        assert_eq!(take(t, addr, len), [50]);
        t.untrack(addr, len).unwrap();
    }

    #[test]
    fn anonymous_private_memory() {
        let Some(t) = tracker() else { return };
        let m = MemoryMapping::anonymous(64 * page_size(), MappingOptions::anonymous()).unwrap();
        writes_are_reported(&t, m.as_ptr() as usize, m.size());
    }

    #[test]
    fn a_shared_memfd_mapping() {
        let Some(t) = tracker() else { return };
        assert!(t.tracks_shared_and_huge());
        let ps = page_size();
        let shm = SharedMemory::create("mr-core-dirty", 64 * ps as u64, true, None).unwrap();
        let m = MemoryMapping::from_fd(shm.as_fd(), 64 * ps, MappingOptions::fd()).unwrap();
        let addr = m.as_ptr() as usize;
        writes_are_reported(&t, addr, m.size());
        // Tracking follows the mapping's page tables: a write through another
        // mapping of the same memfd is not seen here.
        let other = MemoryMapping::from_fd(shm.as_fd(), 64 * ps, MappingOptions::fd()).unwrap();
        t.track(addr, m.size()).unwrap();
        poke(other.as_ptr() as usize, 7, 9);
        assert_eq!(take(&t, addr, m.size()), Vec::<usize>::new());
        poke(addr, 7, 9);
        assert_eq!(take(&t, addr, m.size()), [7]);
    }

    #[test]
    fn a_regular_file_mapping_is_tracked_through_the_mapping() {
        // With asynchronous write-protect the kernel tracks any memory
        // (userfaultfd's other modes refuse files other than shmem).
        let Some(t) = tracker() else { return };
        let ps = page_size();
        let file = crate::testutil::unlinked_file("dirty-file", &vec![0u8; 16 * ps], true);
        let m = MemoryMapping::from_fd(file.as_fd(), 16 * ps, MappingOptions::fd()).unwrap();
        let addr = m.as_ptr() as usize;
        t.track(addr, m.size()).unwrap();
        assert_eq!(take(&t, addr, m.size()), Vec::<usize>::new());
        poke(addr, 2, 1);
        poke(addr, 9, 1);
        assert_eq!(take(&t, addr, m.size()), [2, 9]);
        // `pwrite` to the file writes its page cache, not the mapping.
        sys::pwrite(
            file.as_fd(),
            crate::MemSlice::from(b"x"),
            (3 * ps) as libc::off_t,
        )
        .unwrap();
        assert_eq!(take(&t, addr, m.size()), Vec::<usize>::new());
        // Written back (msync) and written again: seen again.
        let region: &dyn MappedRegion = &m;
        region.msync(0, m.size()).unwrap();
        poke(addr, 2, 2);
        assert_eq!(take(&t, addr, m.size()), [2]);
    }

    #[test]
    fn memory_that_cannot_be_tracked_is_refused_with_the_reason() {
        let Some(t) = tracker() else { return };
        let ps = page_size();
        // A file opened read-only and mapped shared can never be written.
        let file = crate::testutil::unlinked_file("dirty-ro", &vec![0u8; 4 * ps], false);
        let options = MappingOptions {
            protection: Protection::READ,
            ..MappingOptions::fd()
        };
        let ro = MemoryMapping::from_fd(file.as_fd(), 4 * ps, options).unwrap();
        let e = t.track(ro.as_ptr() as usize, ro.size()).unwrap_err();
        assert_eq!(
            e,
            Error::WriteTracking {
                reason: NoTracking::NeverWritable
            }
        );
        assert!(e.to_string().contains("can never write"), "{e}");
        // MAP_DROPPABLE memory (Linux 6.11+) is never write-protected.
        const MAP_DROPPABLE: libc::c_int = 0x08;
        // SAFETY: no MAP_FIXED: the kernel picks free address space.
        match unsafe {
            sys::mmap(
                sys::no_hint(),
                4 * ps,
                libc::PROT_READ | libc::PROT_WRITE,
                MAP_DROPPABLE | libc::MAP_ANONYMOUS,
                None,
                0,
            )
        } {
            Ok(p) => {
                assert_eq!(
                    t.track(p as usize, 4 * ps),
                    Err(Error::WriteTracking {
                        reason: NoTracking::MemoryKind
                    })
                );
                // SAFETY: the mapping made above.
                unsafe { sys::munmap(p, 4 * ps) }.unwrap();
            }
            Err(e) => println!("MAP_DROPPABLE not offered here ({e}): not checked"),
        }
        // A second tracker over a tracked range.
        let m = MemoryMapping::anonymous(4 * ps, MappingOptions::anonymous()).unwrap();
        t.track(m.as_ptr() as usize, m.size()).unwrap();
        let other = WriteTracker::open().unwrap();
        assert_eq!(
            other.track(m.as_ptr() as usize, m.size()),
            Err(Error::WriteTracking {
                reason: NoTracking::TrackedElsewhere
            })
        );
        // A range with a hole, and arguments.
        let holey = MemoryMapping::anonymous(3 * ps, MappingOptions::anonymous()).unwrap();
        let base = holey.as_ptr();
        // SAFETY: the middle page of the mapping made above (unmapped again
        // with the rest when it drops: munmap of a hole is no error).
        unsafe { sys::munmap(base.add(ps), ps) }.unwrap();
        assert_eq!(
            t.track(base as usize, 3 * ps).unwrap_err().errno(),
            Some(libc::ENOMEM)
        );
        assert!(matches!(
            t.track(m.as_ptr() as usize + 1, ps),
            Err(Error::Unaligned {
                what: "address",
                ..
            })
        ));
        assert!(matches!(
            t.track(m.as_ptr() as usize, 1),
            Err(Error::Unaligned { what: "length", .. })
        ));
        assert!(matches!(
            t.take(m.as_ptr() as usize, 4 * ps, &mut []),
            Err(Error::OutOfRange { what: "bitmap", .. })
        ));
        assert!(matches!(
            t.take(usize::MAX - ps + 1, 2 * ps, &mut [0; 1]),
            Err(Error::OutOfRange { what: "length", .. })
        ));
        t.track(m.as_ptr() as usize, 0).unwrap();
        assert_eq!(t.take(m.as_ptr() as usize, 0, &mut []).unwrap(), 0);
    }

    #[test]
    fn a_mapping_placed_over_a_tracked_range_is_tracked_again() {
        let Some(t) = tracker() else { return };
        let ps = page_size();
        let m = MemoryMapping::anonymous(32 * ps, MappingOptions::anonymous()).unwrap();
        let addr = m.as_ptr() as usize;
        t.track(addr, 32 * ps).unwrap();
        poke(addr, 1, 1);
        poke(addr, 20, 1);
        // Pages 4..8 replaced by a new mapping: not tracked, and a take over
        // it refuses before taking anything.
        // SAFETY: pages of the mapping made above; no reference points there.
        unsafe {
            sys::mmap(
                (addr + 4 * ps) as *mut u8,
                4 * ps,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                None,
                0,
            )
        }
        .unwrap();
        let mut bitmap = [0u64; 1];
        let refused = t.take(addr, 32 * ps, &mut bitmap).unwrap_err();
        assert_eq!(
            refused,
            Error::WriteTracking {
                reason: NoTracking::NotTracked
            }
        );
        assert!(refused.to_string().contains("tracked again"), "{refused}");
        assert_eq!(bitmap, [0]);
        // The pages around it still answer, with what they had.
        assert_eq!(take(&t, addr, 4 * ps), [1]);
        // Tracking only the new mapping keeps the others' pending writes.
        t.track(addr + 4 * ps, 4 * ps).unwrap();
        poke(addr, 5, 1);
        assert_eq!(take(&t, addr, 32 * ps), [5, 20]);
        assert_eq!(take(&t, addr, 32 * ps), Vec::<usize>::new());
    }

    #[test]
    fn untracked_memory_is_written_freely_and_tracked_again_clean() {
        let Some(t) = tracker() else { return };
        let ps = page_size();
        let m = MemoryMapping::anonymous(8 * ps, MappingOptions::anonymous()).unwrap();
        let addr = m.as_ptr() as usize;
        t.track(addr, 8 * ps).unwrap();
        poke(addr, 1, 1);
        t.untrack(addr, 8 * ps).unwrap();
        poke(addr, 2, 1);
        let mut bitmap = [0u64];
        assert_eq!(
            t.take(addr, 8 * ps, &mut bitmap),
            Err(Error::WriteTracking {
                reason: NoTracking::NotTracked
            })
        );
        t.track(addr, 8 * ps).unwrap();
        assert_eq!(take(&t, addr, 8 * ps), Vec::<usize>::new());
        poke(addr, 3, 1);
        // Discarded private pages read as zeros: reported as written.
        m.discard(6 * ps, 2 * ps).unwrap();
        assert_eq!(take(&t, addr, 8 * ps), [3, 6, 7]);
        // Dropping the tracker untracks everything.
        drop(t);
        poke(addr, 4, 1);
        let Some(t) = tracker() else { return };
        assert!(t.take(addr, 8 * ps, &mut bitmap).is_err());
    }

    #[test]
    fn no_write_is_lost_to_a_racing_take() {
        let Some(t) = tracker() else { return };
        let ps = page_size();
        let n = 4096;
        let m = MemoryMapping::anonymous(n * ps, MappingOptions::anonymous()).unwrap();
        let addr = m.as_ptr() as usize;
        t.track(addr, n * ps).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        // Each page is written once, in a scrambled order, while the main
        // thread takes without pause: a write that fell between a take's
        // report and its re-protection would be lost for good (nothing writes
        // the page again), which a take that is not one step does here.
        let writer = {
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                for i in 0..n {
                    // 1231 is odd, so i * 1231 mod n visits every page once.
                    poke(addr, i * 1231 % n, 1);
                    // Spread the writes over many takes.
                    for _ in 0..200 {
                        std::hint::spin_loop();
                    }
                }
                done.store(true, Ordering::Release);
            })
        };
        let mut union = vec![0u64; n / 64];
        let mut takes = 0;
        while !done.load(Ordering::Acquire) {
            t.take(addr, n * ps, &mut union).unwrap();
            takes += 1;
        }
        writer.join().unwrap();
        t.take(addr, n * ps, &mut union).unwrap();
        let missing: Vec<usize> = (0..n)
            .filter(|&p| union[p / 64] & (1 << (p % 64)) == 0)
            .collect();
        assert!(missing.is_empty(), "lost over {takes} takes: {missing:?}");
        assert!(takes > 1, "{takes}");
        println!("racing takes: {takes}");
    }

    #[test]
    fn bits_are_set_a_word_at_a_time() {
        let mut b = [0u64; 3];
        set_bits(&mut b, 3, 5);
        assert_eq!(b, [0b11000, 0, 0]);
        set_bits(&mut b, 60, 130);
        assert_eq!(b, [0b11000 | (0xf << 60), u64::MAX, 0b11]);
        set_bits(&mut b, 64, 64);
        assert_eq!(b[2], 0b11);
    }

    #[test]
    fn reasons_say_what_to_do() {
        let e = unavailable(NoTracking::NotPermitted);
        assert!(e.to_string().contains("vm.unprivileged_userfaultfd"), "{e}");
        assert!(e.to_string().contains("/dev/userfaultfd"), "{e}");
        assert!(NoTracking::NotPermitted.kernel_lacks_it());
        assert!(!NoTracking::NotTracked.kernel_lacks_it());
        let old = too_old(0);
        assert_eq!(
            old,
            unavailable(NoTracking::KernelTooOld {
                missing: "UFFD_FEATURE_WP_ASYNC"
            })
        );
        assert!(old.to_string().contains("Linux 6.7"), "{old}");
        assert_eq!(old.errno(), None);
    }

    /// Rough costs, printed (run by hand: `cargo test --release -p
    /// mapped-region -- --ignored dirty::tests::costs --nocapture`).
    #[test]
    #[ignore = "a measurement, run by hand"]
    fn costs() {
        use std::time::{Duration, Instant};
        let Some(t) = tracker() else { return };
        let ps = page_size();
        let len = 256 << 20;
        let n = len / ps;
        let shm = SharedMemory::create("mr-core-dirty-cost", len as u64, true, None).unwrap();
        let m = MemoryMapping::from_fd(shm.as_fd(), len, MappingOptions::fd()).unwrap();
        let addr = m.as_ptr() as usize;
        for page in 0..n {
            poke(addr, page, 1);
        }
        let sparse = || (0..n).step_by(64);
        let per_write = |d: Duration| d / (n / 64) as u32;
        let at = Instant::now();
        for page in sparse() {
            poke(addr, page, 2);
        }
        println!(
            "untracked write, 1/64 of the pages: {:?} each",
            per_write(at.elapsed())
        );
        let mut bitmap = vec![0u64; n / 64];
        let at = Instant::now();
        t.track(addr, len).unwrap();
        println!("track 256 MiB (populated memfd): {:?}", at.elapsed());
        let median = |mut times: Vec<Duration>| {
            times.sort();
            times[times.len() / 2]
        };
        let clean: Vec<_> = (0..21)
            .map(|_| {
                let at = Instant::now();
                t.take(addr, len, &mut bitmap).unwrap();
                at.elapsed()
            })
            .collect();
        println!("take 256 MiB clean: {:?} (median of 21)", median(clean));
        let (mut dirty, mut first, mut second) = (vec![], vec![], vec![]);
        for round in 0..21u8 {
            let at = Instant::now();
            for page in sparse() {
                poke(addr, page, round);
            }
            first.push(per_write(at.elapsed()));
            let at = Instant::now();
            for page in sparse() {
                poke(addr, page, round + 1);
            }
            second.push(per_write(at.elapsed()));
            let at = Instant::now();
            assert_eq!(t.take(addr, len, &mut bitmap).unwrap(), n / 64);
            dirty.push(at.elapsed());
        }
        println!(
            "first write to a page after a take: {:?}; the next write: {:?}",
            median(first),
            median(second)
        );
        println!(
            "take 256 MiB, 1/64 written: {:?} (median of 21)",
            median(dirty)
        );
        for page in 0..n {
            poke(addr, page, 6);
        }
        let at = Instant::now();
        assert_eq!(t.take(addr, len, &mut bitmap).unwrap(), n);
        println!("take 256 MiB all written: {:?}", at.elapsed());
        let at = Instant::now();
        for _ in 0..1000 {
            t.check_tracked(addr, addr + len).unwrap();
        }
        println!("the tracked check alone: {:?}", at.elapsed() / 1000);
    }
}
