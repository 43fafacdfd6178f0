//! Fuzzing the arena with arbitrary operation sequences (proptest): arguments
//! are drawn from edge values (unaligned, zero, huge, overflowing, beyond EOF,
//! bad fds) as well as valid ones. Every call must return a typed result
//! without panicking, and after every call the arena's layout must agree with
//! what the kernel reports in /proc/self/maps for the arena's range: the same
//! number of mappings, the same protections, nothing unmapped.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use mapped_region::{
    page_size, Advice, Backing, MappedRegion, MemoryMappingArena, Protection, SharedMemory,
};
use proptest::prelude::*;

const PAGES: usize = 32;

/// Borrows a number from the fuzzer's fd table, which holds open fds and
/// numbers that are not open at all (-1 excluded: `BorrowedFd` cannot hold it).
fn borrow(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: the number is either one of the test's open fds, kept open for
    // the whole run, or not open, which the calls report as EBADF; no Rust
    // object owns it.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

#[derive(Debug, Clone)]
enum Op {
    AddFd {
        offset: usize,
        size: usize,
        fd: u8,
        fd_offset: u64,
        prot: u32,
    },
    AddAnon {
        offset: usize,
        size: usize,
        prot: u32,
    },
    Remove {
        offset: usize,
        size: usize,
    },
    Protect {
        offset: usize,
        size: usize,
        prot: u32,
    },
    Msync {
        offset: usize,
        size: usize,
    },
    Madvise {
        offset: usize,
        size: usize,
        advice: i32,
    },
    Read {
        offset: usize,
        len: usize,
    },
    /// The fd table's renumbered slot names a fresh file now (same number).
    Renumber,
}

/// A fresh memfd of 16 pages, given the number `at` (`dup2`) when `at` is
/// not -1; returns its number.
fn fresh_file(at: RawFd) -> RawFd {
    let ps = page_size();
    // SAFETY: a fresh memfd, sized; dup2 replaces only the test's own slot
    // number (or none), and the original number is closed after.
    unsafe {
        let fd = libc::memfd_create(c"fuzz-renumbered".as_ptr(), libc::MFD_CLOEXEC);
        assert!(fd >= 0);
        assert_eq!(libc::ftruncate(fd, 16 * ps as libc::off_t), 0);
        if at < 0 {
            return fd;
        }
        assert_eq!(libc::dup2(fd, at), at);
        libc::close(fd);
        at
    }
}

fn edge_usize() -> impl Strategy<Value = usize> {
    let ps = page_size();
    prop_oneof![
        4 => (0..=PAGES).prop_map(move |p| p * ps),
        2 => 0..(PAGES * ps + 2 * ps),
        1 => Just(0usize),
        1 => Just(usize::MAX),
        1 => Just(usize::MAX - ps + 1),
        1 => Just(isize::MAX as usize),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let ps = page_size() as u64;
    let prot = prop_oneof![4 => 0u32..8, 1 => Just(8u32), 1 => Just(u32::MAX)];
    let fd_offset = prop_oneof![4 => (0u64..12).prop_map(move |p| p * ps), 1 => Just(1u64), 1 => Just(u64::MAX), 1 => Just(1u64 << 63)];
    prop_oneof![
        (edge_usize(), edge_usize(), 0u8..5, fd_offset, prot.clone()).prop_map(
            |(offset, size, fd, fd_offset, prot)| Op::AddFd {
                offset,
                size,
                fd,
                fd_offset,
                prot
            }
        ),
        (edge_usize(), edge_usize(), prot.clone()).prop_map(|(offset, size, prot)| Op::AddAnon {
            offset,
            size,
            prot
        }),
        (edge_usize(), edge_usize()).prop_map(|(offset, size)| Op::Remove { offset, size }),
        (edge_usize(), edge_usize(), prot.clone()).prop_map(|(offset, size, prot)| Op::Protect {
            offset,
            size,
            prot
        }),
        (edge_usize(), edge_usize()).prop_map(|(offset, size)| Op::Msync { offset, size }),
        (
            edge_usize(),
            edge_usize(),
            prop_oneof![Just(3), Just(4), Just(100), Just(-1), Just(12345)]
        )
            .prop_map(|(offset, size, advice)| Op::Madvise {
                offset,
                size,
                advice
            }),
        (edge_usize(), 0usize..10_000).prop_map(|(offset, len)| Op::Read { offset, len }),
        Just(Op::Renumber),
    ]
}

/// The kernel's view of `[start, end)`: (start, end, perms) per mapping.
fn kernel_view(start: usize, end: usize) -> Vec<(usize, usize, String)> {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let (a, b) = parts.next()?.split_once('-')?;
            let (a, b) = (
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            );
            let perms = parts.next()?.to_string();
            (a < end && b > start).then_some((a.max(start), b.min(end), perms))
        })
        .collect()
}

fn perms_of(prot: Protection, shared: bool) -> String {
    format!(
        "{}{}{}{}",
        if prot.contains(Protection::READ) {
            'r'
        } else {
            '-'
        },
        if prot.contains(Protection::WRITE) {
            'w'
        } else {
            '-'
        },
        if prot.contains(Protection::EXEC) {
            'x'
        } else {
            '-'
        },
        if shared { 's' } else { 'p' }
    )
}

proptest! {
    // MR_FUZZ_CASES raises the number of sequences for a longer run.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("MR_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000),
        // Seeded for reproducible CI runs; MR_FUZZ_SEED explores other sequences.
        rng_seed: proptest::test_runner::RngSeed::Fixed(
            std::env::var("MR_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(20261126),
        ),
        ..ProptestConfig::default()
    })]

    #[test]
    fn arena_never_panics_and_matches_the_kernel(ops in prop::collection::vec(op(), 1..40)) {
        let ps = page_size();
        let small = SharedMemory::create("fuzz-small", 4 * ps as u64, true, None).unwrap();
        let large = SharedMemory::create("fuzz-large", 16 * ps as u64, true, None).unwrap();
        // The last slot: one number that comes to name ever new files.
        let renumbered = fresh_file(-1);
        let fds = [small.as_raw_fd(), large.as_raw_fd(), 999_999, 1_000_000, renumbered];
        let mut arena = MemoryMappingArena::new(PAGES * ps).unwrap();
        let base = arena.as_ptr() as usize;
        for op in ops {
            match op {
                Op::AddFd { offset, size, fd, fd_offset, prot } => {
                    if let Some(prot) = Protection::from_bits(prot) {
                        let _ = arena.add_fd_mapping(offset, size, borrow(fds[fd as usize]), fd_offset, prot);
                    }
                }
                Op::AddAnon { offset, size, prot } => {
                    if let Some(prot) = Protection::from_bits(prot) {
                        let _ = arena.add_anonymous(offset, size, prot);
                    }
                }
                Op::Remove { offset, size } => {
                    let _ = arena.remove_mapping(offset, size);
                }
                Op::Protect { offset, size, prot } => {
                    if let Some(prot) = Protection::from_bits(prot) {
                        let _ = arena.protect(offset, size, prot);
                    }
                }
                Op::Msync { offset, size } => {
                    let region: &dyn MappedRegion = &arena;
                    let _ = region.msync(offset, size);
                }
                Op::Madvise { offset, size, advice } => {
                    let region: &dyn MappedRegion = &arena;
                    // DONTNEED on shared/anonymous pages only zeroes; never faults.
                    if let Ok(advice) = Advice::new(advice) {
                        let _ = region.madvise(offset, size, advice);
                    }
                }
                Op::Read { offset, len } => {
                    let mut buf = vec![0u8; len];
                    let _ = arena.read_into(offset, &mut buf);
                }
                Op::Renumber => {
                    fresh_file(renumbered);
                }
            }
            // The kernel agrees with the layout: nothing unmapped, same pieces, same protections.
            let kernel = kernel_view(base, base + arena.size());
            let mut cursor = base;
            for (a, _, _) in &kernel {
                prop_assert_eq!(*a, cursor, "a hole in the arena");
                cursor = kernel.iter().find(|k| k.0 == *a).unwrap().1;
            }
            prop_assert_eq!(cursor, base + arena.size());
            // An anonymous PROT_NONE overlay is indistinguishable from the
            // reservation, so the kernel merges it: the layout's count is then an
            // upper bound (the safe side for the map-count budget), else exact.
            let invisible = arena
                .mappings()
                .any(|m| m.backing == Backing::Anonymous && m.protection == Protection::NONE);
            if invisible {
                prop_assert!(kernel.len() <= arena.kernel_mapping_count());
            } else {
                prop_assert_eq!(kernel.len(), arena.kernel_mapping_count());
            }
            for m in arena.mappings() {
                let start = base + m.offset;
                let piece = kernel.iter().find(|k| k.0 <= start && start < k.1).unwrap();
                let shared = matches!(m.backing, Backing::Fd { .. });
                prop_assert_eq!(&piece.2, &perms_of(m.protection, shared));
            }
        }
        // SAFETY: the test's own memfd number, no longer used.
        unsafe { libc::close(renumbered) };
    }
}
