//! Tests of the arena: planning, applying, holding and reclaiming changes,
//! repair after a failed overlay, the kernel-mapping count against the
//! kernel's, huge-page rules and discard.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use super::{Change, MemoryMappingArena, RESERVE_FLAGS};
use crate::testutil::{borrow, unlinked_file};
use crate::{
    page_size, sys, Advice, Backing, Error, MappedRegion, MappingOptions, MemoryMapping,
    Protection, Result, SharedMemory,
};

/// An arena of `pages` pages with a 4-page sealed memfd mapped read-write at
/// page 0 and `anon` pages of anonymous memory at page `anon_at`.
fn fd_then_anonymous(
    name: &str,
    pages: usize,
    anon_at: usize,
    anon: usize,
) -> (SharedMemory, MemoryMappingArena) {
    let ps = page_size();
    let shm = SharedMemory::create(name, 4 * ps as u64, true, None).unwrap();
    let mut a = MemoryMappingArena::new(pages * ps).unwrap();
    a.add_fd_mapping(0, 4 * ps, shm.as_fd(), 0, Protection::READ_WRITE)
        .unwrap();
    a.add_anonymous(anon_at * ps, anon * ps, Protection::READ_WRITE)
        .unwrap();
    (shm, a)
}

#[test]
fn protect_changes_access_in_place_and_the_layout_follows() {
    let ps = page_size();
    let (shm, mut a) = fd_then_anonymous("mr-core-protect", 8, 4, 2);
    a.write_from(ps, b"kept").unwrap();
    // The middle of the fd overlay becomes read-only: three pieces.
    a.protect(ps, 2 * ps, Protection::READ).unwrap();
    let fd = shm.as_fd().as_raw_fd();
    assert_eq!(
        layout(&a),
        vec![
            (
                0,
                ps,
                Backing::Fd {
                    fd,
                    fd_offset: 0,
                    shared: true,
                },
                Protection::READ_WRITE
            ),
            (
                ps,
                2 * ps,
                Backing::Fd {
                    fd,
                    fd_offset: ps as u64,
                    shared: true,
                },
                Protection::READ
            ),
            (
                3 * ps,
                ps,
                Backing::Fd {
                    fd,
                    fd_offset: 3 * ps as u64,
                    shared: true,
                },
                Protection::READ_WRITE
            ),
            (4 * ps, 2 * ps, Backing::Anonymous, Protection::READ_WRITE),
        ]
    );
    let mut b = [0u8; 4];
    a.read_into(ps, &mut b).unwrap();
    assert_eq!(&b, b"kept");
    assert!(matches!(a.write_from(ps, b"x"), Err(Error::Access { .. })));
    assert_eq!(a.kernel_mapping_count(), 5);
    assert_eq!(a.kernel_mapping_count(), real_count(&a));
    // Back to read-write: the kernel merges the fd pieces again, and so does the layout.
    a.protect(0, 4 * ps, Protection::READ_WRITE).unwrap();
    assert_eq!(
        layout(&a)[0],
        (
            0,
            4 * ps,
            Backing::Fd {
                fd,
                fd_offset: 0,
                shared: true,
            },
            Protection::READ_WRITE
        )
    );
    a.write_from(ps, b"more").unwrap();
    // A hole in the range is refused, and nothing changes.
    let before = layout(&a);
    assert!(matches!(
        a.protect(4 * ps, 4 * ps, Protection::READ),
        Err(Error::Access { .. })
    ));
    assert_eq!(layout(&a), before);
    // The budget's count follows the kernel's.
    assert_eq!(a.kernel_mapping_count(), 3);
    assert_eq!(a.kernel_mapping_count(), real_count(&a));
}

#[test]
fn protect_over_memory_held_for_old_pointers_keeps_it_writable_until_the_reclaim() {
    let ps = page_size();
    let mut a = MemoryMappingArena::new(4 * ps).unwrap();
    a.add_anonymous(0, 2 * ps, Protection::READ_WRITE).unwrap();
    // A live view over page 0 was just detached: its pointer may still be in use.
    a.hold_in_use(0, ps);
    a.protect(0, 2 * ps, Protection::READ).unwrap();
    assert!(matches!(a.write_from(0, b"x"), Err(Error::Access { .. })));
    // SAFETY: page 0 is held read-write until the reclaim; this is the old pointer.
    unsafe { a.as_ptr().write(7) };
    // A second change before the reclaim takes the range back to read-write.
    a.protect(0, ps, Protection::READ_WRITE).unwrap();
    a.write_from(0, b"y").unwrap();
    a.reclaim().unwrap();
    assert_eq!(
        layout(&a),
        vec![
            (0, ps, Backing::Anonymous, Protection::READ_WRITE),
            (ps, ps, Backing::Anonymous, Protection::READ),
        ]
    );
    assert_eq!(a.kernel_mapping_count(), real_count(&a));
}

fn layout(a: &MemoryMappingArena) -> Vec<(usize, usize, Backing, Protection)> {
    a.mappings()
        .map(|m| (m.offset, m.size, m.backing, m.protection))
        .collect()
}

#[test]
fn reserve_rounds_up_and_rejects_zero() {
    let a = MemoryMappingArena::new(1).unwrap();
    assert_eq!(a.size(), page_size());
    assert!(matches!(
        MemoryMappingArena::new(0),
        Err(Error::ZeroSize { .. })
    ));
    // 1 TiB of address space costs nothing (valgrind's address-space manager
    // refuses reservations that large, so scripts/valgrind.sh asks for less).
    let big_size = if std::env::var_os("MR_UNDER_VALGRIND").is_some() {
        1 << 30
    } else {
        1 << 40
    };
    let big = MemoryMappingArena::new(big_size).unwrap();
    assert_eq!(big.size(), big_size);
}

#[test]
fn overlays_split_and_remove() {
    let ps = page_size();
    let shm = SharedMemory::create("mr-core-arena", 8 * ps as u64, true, None).unwrap();
    let mut a = MemoryMappingArena::new(16 * ps).unwrap();
    let fd = shm.as_raw_fd();
    a.add_fd_mapping(2 * ps, 4 * ps, shm.as_fd(), 0, Protection::READ_WRITE)
        .unwrap();
    a.write_from(2 * ps, b"hello").unwrap();
    // Front overlap.
    a.add_anonymous(ps, 2 * ps, Protection::READ_WRITE).unwrap();
    // Back overlap.
    a.add_fd_mapping(5 * ps, 2 * ps, shm.as_fd(), 6 * ps as u64, Protection::READ)
        .unwrap();
    assert_eq!(
        layout(&a),
        vec![
            (ps, 2 * ps, Backing::Anonymous, Protection::READ_WRITE),
            (
                3 * ps,
                2 * ps,
                Backing::Fd {
                    fd,
                    fd_offset: ps as u64,
                    shared: true,
                },
                Protection::READ_WRITE
            ),
            (
                5 * ps,
                2 * ps,
                Backing::Fd {
                    fd,
                    fd_offset: 6 * ps as u64,
                    shared: true,
                },
                Protection::READ
            ),
        ]
    );
    // Spanning overlay replaces all three.
    a.add_fd_mapping(0, 8 * ps, shm.as_fd(), 0, Protection::READ_WRITE)
        .unwrap();
    assert_eq!(layout(&a).len(), 1);
    // The bytes written through the first overlay are at file offset 0.
    let mut b = [0u8; 5];
    a.read_into(0, &mut b).unwrap();
    assert_eq!(&b, b"hello");
    // Partial remove splits.
    a.remove_mapping(2 * ps, ps).unwrap();
    assert_eq!(
        layout(&a),
        vec![
            (
                0,
                2 * ps,
                Backing::Fd {
                    fd,
                    fd_offset: 0,
                    shared: true,
                },
                Protection::READ_WRITE
            ),
            (
                3 * ps,
                5 * ps,
                Backing::Fd {
                    fd,
                    fd_offset: 3 * ps as u64,
                    shared: true,
                },
                Protection::READ_WRITE
            ),
        ]
    );
    assert!(matches!(
        a.read_into(2 * ps, &mut b),
        Err(Error::Access { .. })
    ));
    // Removing an already removed range succeeds.
    a.remove_mapping(2 * ps, ps).unwrap();
    a.remove_mapping(10 * ps, 6 * ps).unwrap();
    assert_eq!(layout(&a).len(), 2);
}

#[test]
fn argument_errors() {
    let ps = page_size();
    let mut a = MemoryMappingArena::new(4 * ps).unwrap();
    assert!(matches!(
        a.add_anonymous(1, ps, Protection::READ),
        Err(Error::Unaligned { what: "offset", .. })
    ));
    assert!(matches!(
        a.add_anonymous(0, 0, Protection::READ),
        Err(Error::ZeroSize { .. })
    ));
    assert!(matches!(
        a.add_anonymous(3 * ps, 2 * ps, Protection::READ),
        Err(Error::OutOfBounds { .. })
    ));
    assert!(matches!(
        a.remove_mapping(ps, usize::MAX - 10),
        Err(Error::OutOfBounds { .. })
    ));
    assert_eq!(
        a.add_fd_mapping(0, ps, borrow(999_999), 0, Protection::READ)
            .unwrap_err(),
        Error::Syscall {
            syscall: "fstat",
            errno: libc::EBADF
        }
    );
    let shm = SharedMemory::create("mr-core-args", ps as u64, true, None).unwrap();
    assert!(matches!(
        a.add_fd_mapping(0, ps, shm.as_fd(), 1, Protection::READ),
        Err(Error::Unaligned {
            what: "fdOffset",
            ..
        })
    ));
    assert!(matches!(
        a.add_fd_mapping(0, 2 * ps, shm.as_fd(), 0, Protection::READ),
        Err(Error::BeyondEof { .. })
    ));
    let region: &dyn MappedRegion = &a;
    assert!(matches!(
        region.msync(4 * ps, 1),
        Err(Error::OutOfBounds { .. })
    ));
    assert!(matches!(
        region.madvise(0, 5 * ps, Advice::new(libc::MADV_WILLNEED).unwrap()),
        Err(Error::OutOfBounds { .. })
    ));
    assert!(a.mappings().next().is_none());
}

#[test]
fn failed_overlay_leaves_the_layout_unchanged() {
    let ps = page_size();
    let mut a = MemoryMappingArena::new(4 * ps).unwrap();
    a.add_anonymous(0, 2 * ps, Protection::READ_WRITE).unwrap();
    a.write_from(0, b"keep").unwrap();
    // A read-only fd mapped writable and shared: EACCES, range untouched.
    let ro = unlinked_file("ro", &vec![0u8; 2 * ps], false);
    let err = a
        .add_fd_mapping(0, 2 * ps, ro.as_fd(), 0, Protection::READ_WRITE)
        .unwrap_err();
    assert_eq!(err.errno(), Some(libc::EACCES));
    assert_eq!(
        layout(&a),
        vec![(0, 2 * ps, Backing::Anonymous, Protection::READ_WRITE)]
    );
    let mut b = [0u8; 4];
    a.read_into(0, &mut b).unwrap();
    assert_eq!(&b, b"keep");
    // A pipe cannot be mapped: ENODEV, range untouched.
    let mut fds = [0; 2];
    // SAFETY: pipe writes two fds into the array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let err = a
        .add_fd_mapping(0, ps, borrow(fds[0]), 0, Protection::READ)
        .unwrap_err();
    assert_eq!(err.errno(), Some(libc::ENODEV));
    crate::testutil::close_raw(fds[0]);
    crate::testutil::close_raw(fds[1]);
    assert_eq!(layout(&a).len(), 1);
    // Nothing inside the arena was left unmapped.
    let base = a.as_ptr() as usize;
    assert!(sys::unmapped_ranges(base, base + 4 * ps)
        .unwrap()
        .is_empty());
}

#[test]
fn plans_validate_everything_and_change_nothing() {
    let ps = page_size();
    let shm = SharedMemory::create("mr-core-plan", 2 * ps as u64, true, None).unwrap();
    let mut a = MemoryMappingArena::new(4 * ps).unwrap();
    // Every refusal comes from the plan.
    assert!(a.plan_anonymous(1, ps, Protection::READ).is_err());
    assert!(a
        .plan_fd_mapping(0, 3 * ps, shm.as_fd(), 0, Protection::READ)
        .is_err());
    assert!(a.plan_removal(0, 0).is_err());
    // A plan names the whole pages it replaces, and changes nothing.
    let fd = a
        .plan_fd_mapping(0, ps + 1, shm.as_fd(), 0, Protection::READ)
        .unwrap();
    let anon = a.plan_anonymous(2 * ps, ps, Protection::READ).unwrap();
    let removal = a.plan_removal(ps, 2 * ps).unwrap();
    assert_eq!(
        [fd.range(), anon.range(), removal.range()],
        [(0, 2 * ps), (2 * ps, 3 * ps), (ps, 3 * ps)]
    );
    assert_eq!(a.mapping_count(), 0);
    a.apply(fd, false).unwrap();
    a.apply(anon, false).unwrap();
    a.apply(removal, false).unwrap();
    assert_eq!(a.mapping_count(), 1);
    // A plan never applied (a user of the memory refused it) leaves the
    // arena as it was.
    let _refused = a.plan_removal(0, ps).unwrap();
    assert_eq!(a.mapping_count(), 1);
    let mut b = [0u8; 1];
    a.read_into(0, &mut b).unwrap();
}

#[test]
fn overlays_are_refused_before_the_process_runs_out_of_mappings() {
    // In a child process: it changes process-wide state.
    crate::testutil::child_passes("arena::tests::at_limit_child", "emptied at the limit");
}

#[test]
#[ignore = "run in a child process by overlays_are_refused_before_the_process_runs_out_of_mappings"]
fn at_limit_child() {
    let ps = page_size();
    let shm = SharedMemory::create("mr-core-limit", 1024 * ps as u64, true, None).unwrap();
    let n = crate::budget::max_map_count();
    let mut a = MemoryMappingArena::new(2 * n * ps).unwrap();
    // 1. Overlays with gaps until the budget refuses: ENOMEM, layout intact.
    let mut added = 0;
    let refused = loop {
        match a.add_fd_mapping(
            2 * added * ps,
            ps,
            shm.as_fd(),
            (added % 1024 * ps) as u64,
            Protection::READ_WRITE,
        ) {
            Ok(()) => added += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(refused.errno(), Some(libc::ENOMEM));
    assert_eq!(a.mapping_count(), added);
    // Overlay, gap, overlay, gap, ..., overlay, the rest of the arena.
    assert_eq!(a.kernel_mapping_count(), 2 * added);
    let free = crate::budget::max_map_count() - crate::budget::process_map_count().unwrap();
    assert!(
        free >= crate::budget::headroom() - 8,
        "{free} mappings left"
    );
    // 2. Something else in the process takes the rest, up to the kernel limit.
    let spare = 2 * free + 16;
    // SAFETY: a fresh reservation owned by this test.
    let filler = unsafe {
        sys::mmap(
            sys::no_hint(),
            spare * ps,
            libc::PROT_NONE,
            RESERVE_FLAGS,
            None,
            0,
        )
    }
    .unwrap();
    let mut split = 0;
    // SAFETY: mprotect of pages inside `filler`, which nothing else uses.
    while unsafe { libc::mprotect(filler.add(2 * split * ps).cast(), ps, libc::PROT_READ) } == 0 {
        split += 1;
    }
    // At the kernel's limit the count can still be measured: the reader
    // allocates nothing (an allocation needing a new mapping would fail).
    let at_limit = crate::budget::process_map_count().unwrap();
    assert!(
        at_limit + 4 >= crate::budget::max_map_count(),
        "{at_limit} mappings: not at the limit"
    );
    // 3. At the kernel's limit, every overlay can still be removed.
    for i in 0..added {
        a.remove_mapping(2 * i * ps, ps).unwrap();
    }
    assert_eq!(a.mapping_count(), 0);
    assert_eq!(a.kernel_mapping_count(), 1);
    // SAFETY: the filler reservation made above.
    unsafe { sys::munmap(filler, spare * ps) }.unwrap();
    let base = a.as_ptr() as usize;
    assert!(sys::unmapped_ranges(base, base + a.size())
        .unwrap()
        .is_empty());
    println!("emptied at the limit: {added} overlays, {split} filler splits");
}

#[test]
fn truncated_file_read_is_efault() {
    let ps = page_size();
    let f = unlinked_file("trunc", &vec![1u8; ps], true);
    let mut a = MemoryMappingArena::new(2 * ps).unwrap();
    a.add_fd_mapping(0, ps, f.as_fd(), 0, Protection::READ_WRITE)
        .unwrap();
    f.set_len(0).unwrap();
    let mut b = [0u8; 8];
    assert_eq!(
        a.read_into(0, &mut b).unwrap_err().errno(),
        Some(libc::EFAULT)
    );
}

/// Kernel mappings overlapping the arena, read from `/proc/self/maps`.
fn real_count(a: &MemoryMappingArena) -> usize {
    let (start, end) = (a.as_ptr() as usize, a.as_ptr() as usize + a.size());
    let mut n = 0;
    sys::for_each_mapping(|s, e| {
        n += usize::from(s < end && e > start);
        s < end
    })
    .unwrap();
    n
}

#[test]
fn the_kernel_count_holds_when_an_fd_number_is_reused_for_the_same_file() {
    use std::os::fd::IntoRawFd;
    let ps = page_size();
    let path = std::env::temp_dir().join(format!("mr-core-reuse-{}", std::process::id()));
    std::fs::write(&path, vec![3u8; 8 * ps]).unwrap();
    let mut a = MemoryMappingArena::new(16 * ps).unwrap();
    let mut numbers = Vec::new();
    // Open, map the next page, close: the same number each time, a new open
    // file each time, so the kernel keeps the pages as separate mappings.
    for i in 0..4 {
        let fd = std::fs::File::open(&path).unwrap().into_raw_fd();
        numbers.push(fd);
        a.add_fd_mapping(
            ps * (2 + i),
            ps,
            borrow(fd),
            (i * ps) as u64,
            Protection::READ,
        )
        .unwrap();
        crate::testutil::close_raw(fd);
    }
    std::fs::remove_file(&path).unwrap();
    assert_eq!(a.kernel_mapping_count(), real_count(&a), "fds {numbers:?}");
    // Pieces of one open file do merge, in the kernel and in the layout.
    let shm = SharedMemory::create("mr-core-merge", 4 * ps as u64, true, None).unwrap();
    a.add_fd_mapping(8 * ps, ps, shm.as_fd(), 0, Protection::READ_WRITE)
        .unwrap();
    a.add_fd_mapping(9 * ps, ps, shm.as_fd(), ps as u64, Protection::READ_WRITE)
        .unwrap();
    assert_eq!(a.kernel_mapping_count(), real_count(&a));
    // Anonymous memory faulted in on both sides does not merge in the kernel.
    a.add_anonymous(11 * ps, ps, Protection::READ_WRITE)
        .unwrap();
    a.add_anonymous(13 * ps, ps, Protection::READ_WRITE)
        .unwrap();
    a.write_from(11 * ps, b"a").unwrap();
    a.write_from(13 * ps, b"b").unwrap();
    a.add_anonymous(12 * ps, ps, Protection::READ_WRITE)
        .unwrap();
    assert_eq!(a.kernel_mapping_count(), real_count(&a));
}

#[test]
fn fresh_files_under_one_number_reach_the_headroom_with_the_count_exact() {
    // In a child process: it takes the process to its map-count headroom.
    crate::testutil::child_passes("arena::tests::fresh_files_child", "refused at the headroom");
}

#[test]
#[ignore = "run in a child process by fresh_files_under_one_number_reach_the_headroom_with_the_count_exact"]
fn fresh_files_child() {
    let ps = page_size();
    let limit = 65_546;
    let mut a = MemoryMappingArena::new((limit + 1) * ps).unwrap();
    let started = std::time::Instant::now();
    let mut numbers = std::collections::BTreeSet::new();
    // One page of a new file each time, at the file offset that continues
    // the page before: the fd number is the same, the file never is.
    let mut added = 0;
    let refused = loop {
        assert!(added < limit, "never refused");
        let fd = sys::memfd_create(c"mr-fresh", libc::MFD_CLOEXEC).unwrap();
        sys::ftruncate(fd.as_fd(), ((added + 1) * ps) as libc::off_t).unwrap();
        numbers.insert(fd.as_raw_fd());
        match a.add_fd_mapping(
            added * ps,
            ps,
            fd.as_fd(),
            (added * ps) as u64,
            Protection::READ,
        ) {
            Ok(()) => added += 1,
            Err(e) => break e,
        }
    };
    let elapsed = started.elapsed();
    assert_eq!(refused.errno(), Some(libc::ENOMEM));
    assert_eq!(numbers.len(), 1, "fd numbers {numbers:?}");
    assert_eq!(a.mapping_count(), added);
    // Every page its own kernel mapping, then the rest of the reservation.
    assert_eq!(a.kernel_mapping_count(), added + 1);
    assert_eq!(a.kernel_mapping_count(), real_count(&a));
    let free = crate::budget::max_map_count() - crate::budget::process_map_count().unwrap();
    assert!(free + 8 >= crate::budget::headroom(), "{free} left");
    println!("refused at the headroom: {added} overlays in {elapsed:?}");
}

#[test]
fn the_count_holds_on_kernels_without_the_layout_query() {
    // In a child process: it turns the query off for the whole process.
    crate::testutil::child_passes(
        "arena::tests::without_layout_query_child",
        "read /proc/self/maps instead",
    );
}

#[test]
#[ignore = "run in a child process by the_count_holds_on_kernels_without_the_layout_query"]
fn without_layout_query_child() {
    sys::procmap::disable();
    // Merged and unmerged neighbours of every kind, each checked against the kernel.
    the_kernel_count_holds_when_an_fd_number_is_reused_for_the_same_file();
    protect_changes_access_in_place_and_the_layout_follows();
    protect_over_memory_held_for_old_pointers_keeps_it_writable_until_the_reclaim();
    assert_eq!(sys::procmap::kept_fd(), None, "no fd kept");
    println!("read /proc/self/maps instead");
}

#[test]
fn advices_that_split_mappings_stay_inside_the_budget() {
    // In a child process: it changes process-wide state.
    crate::testutil::child_passes(
        "arena::tests::split_advice_child",
        "refused within the headroom",
    );
}

#[test]
#[ignore = "run in a child process by advices_that_split_mappings_stay_inside_the_budget"]
fn split_advice_child() {
    let ps = page_size();
    let n = crate::budget::max_map_count();
    let mut a = MemoryMappingArena::new(2 * n * ps).unwrap();
    a.add_anonymous(0, 2 * n * ps, Protection::READ_WRITE)
        .unwrap();
    let region: &dyn MappedRegion = &a;
    // MADV_DONTFORK on every other page splits the overlay into ever more
    // kernel mappings, without any change to the layout.
    let mut i = 0;
    let refused = loop {
        match region.madvise(2 * i * ps, ps, Advice::new(libc::MADV_DONTFORK).unwrap()) {
            Ok(()) => i += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(refused.errno(), Some(libc::ENOMEM));
    let free = n - crate::budget::process_map_count().unwrap();
    assert!(
        free + 8 >= crate::budget::headroom(),
        "{free} mappings left after {i} advices"
    );
    // mapCount's measure still works there, and the arena empties.
    a.remove_mapping(0, 2 * n * ps).unwrap();
    println!("refused within the headroom: {i} advices, {free} mappings left");
}

#[test]
fn repair_needs_no_fd() {
    // In a child process: it changes process-wide state.
    crate::testutil::child_passes(
        "arena::tests::repair_without_fds_child",
        "repaired without fds",
    );
}

#[test]
#[ignore = "run in a child process by repair_needs_no_fd"]
fn repair_without_fds_child() {
    let ps = page_size();
    let mut a = MemoryMappingArena::new(8 * ps).unwrap();
    a.add_anonymous(ps, 4 * ps, Protection::READ_WRITE).unwrap();
    // SAFETY: socket() returns a fresh fd owned by this test.
    let sock = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
    assert!(sock >= 0);
    // No fd left for anything else: the repair must need none.
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read the struct we pass.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut old);
        let low = libc::rlimit {
            rlim_cur: sock as libc::rlim_t,
            rlim_max: old.rlim_max,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &low), 0);
    }
    // A socket cannot be mapped; the kernel fails after unmapping the range.
    let err = a
        .add_fd_mapping(2 * ps, 2 * ps, borrow(sock), 0, Protection::READ)
        .unwrap_err();
    // SAFETY: restores the limit read above.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &old) };
    let base = a.as_ptr() as usize;
    assert!(
        sys::unmapped_ranges(base, base + a.size())
            .unwrap()
            .is_empty(),
        "a hole inside the arena after {err}"
    );
    // The layout says exactly what the kernel has: readable where mapped.
    for m in a.mappings() {
        let mut b = vec![0u8; m.size];
        a.read_into(m.offset, &mut b).unwrap();
    }
    assert_eq!(a.kernel_mapping_count(), real_count(&a));
    crate::testutil::close_raw(sock);
    println!("repaired without fds: {err}");
}

/// Whether every page of the range can be read through the kernel (mapped,
/// not `PROT_NONE`) — what a built-in holding an old pointer would need.
fn readable(a: &MemoryMappingArena, offset: usize, len: usize) -> bool {
    // SAFETY: the range lies inside the arena; the probe goes through the kernel.
    unsafe { crate::copy::probe_pages(a.as_ptr().add(offset), len) }.is_ok()
}

/// Whether a write through a raw pointer into the range would be allowed.
fn writable_now(a: &MemoryMappingArena, offset: usize) -> bool {
    let addr = a.as_ptr() as usize + offset;
    let text = std::fs::read_to_string("/proc/self/maps").unwrap();
    text.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (range, perms) = (f.next().unwrap(), f.next().unwrap());
        let (s, e) = range.split_once('-').unwrap();
        let (s, e) = (
            usize::from_str_radix(s, 16).unwrap(),
            usize::from_str_radix(e, 16).unwrap(),
        );
        s <= addr && addr < e && perms.starts_with("rw")
    })
}

#[test]
fn ranges_in_use_stay_accessible_until_reclaimed() {
    let ps = page_size();
    let (shm, mut a) = fd_then_anonymous("mr-core-held", 16, 8, 4);
    // Applies a change as the binding does when it detached a live view.
    let in_use = |a: &mut MemoryMappingArena, change: Result<Change>| {
        a.apply(change.unwrap(), true).unwrap()
    };
    // Removed while in use: a hole for every checked access, scratch pages
    // for an old pointer.
    let c = a.plan_removal(0, ps);
    in_use(&mut a, c);
    assert!(matches!(
        a.read_into(0, &mut [0u8; 1]),
        Err(Error::Access { .. })
    ));
    assert!(writable_now(&a, 0));
    // Overlaid narrower while in use: the layout says READ (or NONE) at
    // once, the kernel keeps read-write until the reclaim.
    let c = a.plan_anonymous(8 * ps, ps, Protection::NONE);
    in_use(&mut a, c);
    let c = a.plan_fd_mapping(ps, ps, shm.as_fd(), 0, Protection::READ);
    in_use(&mut a, c);
    assert!(writable_now(&a, 8 * ps) && writable_now(&a, ps));
    assert!(matches!(a.write_from(ps, b"x"), Err(Error::Access { .. })));
    // An old pointer's write into the private copy never reaches the file.
    // SAFETY: the page is mapped read-write (privately) until the reclaim.
    unsafe { *a.as_ptr().add(ps) = 0x5a };
    assert!(a.has_held());
    assert!(a.kernel_mapping_count() >= real_count(&a));
    a.reclaim().unwrap();
    assert!(!a.has_held());
    assert!(!readable(&a, 0, ps) && !readable(&a, 8 * ps, ps));
    assert!(!writable_now(&a, ps) && readable(&a, ps, ps));
    let mut b = [1u8; 1];
    a.read_into(ps, &mut b).unwrap();
    assert_eq!(b, [0], "the file's byte, not the old pointer's");
    // (An anonymous PROT_NONE piece merges into the hole beside it in the
    // kernel: the count may be one above, never below.)
    assert!(a.kernel_mapping_count() >= real_count(&a));
    // A range that is still held counts as in use for the next change too,
    // even with no view left: a NONE overlay over scratch pages stays
    // writable until the reclaim.
    let c = a.plan_removal(2 * ps, ps);
    in_use(&mut a, c);
    a.add_anonymous(2 * ps, ps, Protection::NONE).unwrap();
    assert!(writable_now(&a, 2 * ps));
    a.reclaim().unwrap();
    assert!(!readable(&a, 2 * ps, ps));
    // A view over pages 5-6 detached by a change to page 5 alone: page 6 is
    // in use too, and a later removal of it (with no view left) is held.
    a.hold_in_use(5 * ps, 6 * ps + 100);
    let c = a.plan_anonymous(5 * ps, ps, Protection::READ);
    in_use(&mut a, c);
    a.remove_mapping(6 * ps, ps).unwrap();
    assert!(
        writable_now(&a, 6 * ps),
        "page 6 stays accessible until the reclaim"
    );
    a.reclaim().unwrap();
    assert!(!readable(&a, 6 * ps, ps));
    // Not in use: no holding, nothing to reclaim.
    a.remove_mapping(3 * ps, ps).unwrap();
    assert!(!a.has_held());
}

#[test]
fn device_overlays_get_fault_safe_copies_and_no_views() {
    use std::os::fd::AsRawFd;
    let ps = page_size();
    let zero = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/zero")
        .unwrap();
    let mut a = MemoryMappingArena::new(4 * ps).unwrap();
    // A shared /dev/zero at a non-zero offset faults on every page.
    a.add_fd_mapping(0, ps, zero.as_fd(), 1 << 32, Protection::READ_WRITE)
        .unwrap();
    assert!(matches!(a.check_direct(0, 1), Err(Error::Access { .. })));
    assert_eq!(
        a.read_into(0, &mut [0u8; 4]).unwrap_err().errno(),
        Some(libc::EFAULT)
    );
    // A memfd overlay over it may be viewed again.
    let shm = SharedMemory::create("mr-core-opaque", ps as u64, true, None).unwrap();
    a.add_fd_mapping(0, ps, shm.as_fd(), 0, Protection::READ_WRITE)
        .unwrap();
    a.check_direct(0, ps).unwrap();
    // A MemoryMapping of a device: no view at all.
    let m = crate::MemoryMapping::from_fd(
        borrow(zero.as_raw_fd()),
        ps,
        crate::MappingOptions {
            offset: 1 << 32,
            ..crate::MappingOptions::fd()
        },
    )
    .unwrap();
    assert!(matches!(m.check_direct(0, 1), Err(Error::Access { .. })));
    assert_eq!(
        m.read_into(0, &mut [0u8; 4]).unwrap_err().errno(),
        Some(libc::EFAULT)
    );
}

#[test]
fn reservations_start_at_the_alignment_asked_and_cost_one_mapping() {
    let ps = crate::page_size();
    for align in [ps, 2 << 20, 1 << 30] {
        let arena = MemoryMappingArena::reserve(3 * ps, align).unwrap();
        assert_eq!(arena.as_ptr() as usize % align, 0, "align {align}");
        assert_eq!(arena.size(), 3 * ps);
        assert_eq!(arena.kernel_mapping_count(), 1);
        // Only the aligned part stays reserved: the page after it is free again
        // (MAP_FIXED_NOREPLACE succeeds there) unless something else took it.
        assert!(crate::sys::fully_mapped(arena.as_ptr(), 3 * ps));
    }
    for bad in [0, 3, ps + 1, ps / 2, 3 * ps] {
        assert!(
            matches!(
                MemoryMappingArena::reserve(ps, bad),
                Err(Error::OutOfRange { what: "align", .. })
            ),
            "{bad}"
        );
    }
    assert!(MemoryMappingArena::reserve(usize::MAX / 2, 1 << 30).is_err());
}

/// A hugetlbfs memfd of 2 MiB pages, sized but never mapped: no huge page
/// is needed for the checks (they come before the kernel is asked).
fn huge_memfd() -> Option<OwnedFd> {
    let flags = crate::rules::HugePages::Size2M.memfd_flags() | libc::MFD_CLOEXEC;
    // SAFETY: a fresh memfd owned by the result; ftruncate only sizes it.
    unsafe {
        let fd = libc::memfd_create(c"mr-huge".as_ptr(), flags);
        if fd < 0 {
            return None;
        }
        let fd = OwnedFd::from_raw_fd(fd);
        (libc::ftruncate(fd.as_raw_fd(), 4 << 20) == 0).then_some(fd)
    }
}

#[test]
fn overlays_of_a_huge_page_memfd_must_be_whole_huge_pages() {
    let Some(fd) = huge_memfd() else {
        eprintln!("skipped: this kernel has no 2 MiB hugetlbfs");
        return;
    };
    let huge = 2usize << 20;
    let what = crate::sys::mappable(fd.as_fd()).unwrap();
    assert_eq!(what.huge_page, Some(huge as u64));
    let arena = MemoryMappingArena::reserve(8 << 20, huge).unwrap();
    let rw = Protection::READ_WRITE;
    let refused = |offset, size, fd_offset| match arena.plan_fd_mapping(
        offset,
        size,
        fd.as_fd(),
        fd_offset,
        rw,
    ) {
        Err(Error::HugeUnaligned {
            what, page_size, ..
        }) => {
            assert_eq!(page_size, huge as u64);
            what
        }
        other => panic!("{offset} {size} {fd_offset}: {other:?}"),
    };
    assert_eq!(refused(4096, huge, 0), "offset");
    assert_eq!(refused(huge, 4096, 0), "size");
    assert_eq!(refused(huge, huge, 4096), "fdOffset");
    assert!(arena
        .plan_fd_mapping(huge, huge, fd.as_fd(), huge as u64, rw)
        .is_ok());
    let mapping = crate::MemoryMapping::from_fd(
        fd.as_fd(),
        4096,
        crate::MappingOptions {
            offset: 0,
            ..crate::MappingOptions::fd()
        },
    );
    assert!(matches!(
        mapping,
        Err(Error::HugeUnaligned { what: "size", .. })
    ));
    // An ordinary memfd pays no fstatfs and has no huge page size.
    let shm = crate::SharedMemory::create("mr-not-huge", 4096, true, None).unwrap();
    assert_eq!(crate::sys::mappable(shm.as_fd()).unwrap().huge_page, None);
    // SharedMemory refuses a size that is not whole huge pages before asking for them.
    assert!(matches!(
        crate::SharedMemory::create(
            "mr-huge-size",
            4096,
            true,
            Some(crate::rules::HugePages::Size2M)
        ),
        Err(Error::HugeUnaligned { what: "size", .. })
    ));
}

fn read(arena: &MemoryMappingArena, offset: usize, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    arena.read_into(offset, &mut b[..]).unwrap();
    b
}

/// Resident pages of `[addr, addr + len)` (`mincore`).
fn resident(addr: *mut u8, len: usize) -> usize {
    let mut v = vec![0u8; len.div_ceil(page_size())];
    // SAFETY: mincore writes one byte per page of a live mapping.
    let ret = unsafe { libc::mincore(addr.cast(), len, v.as_mut_ptr()) };
    assert_eq!(ret, 0);
    v.iter().filter(|r| *r & 1 == 1).count()
}

#[test]
fn each_backing_is_discarded_its_own_way() {
    let ps = page_size();
    let shm = SharedMemory::create("mr-discard", 4 * ps as u64, true, None).unwrap();
    let file = unlinked_file("discard-priv", &vec![7u8; 2 * ps], false);
    let shared_file = unlinked_file("discard-shared", &vec![9u8; 4 * ps], true);
    let mut arena = MemoryMappingArena::new(16 * ps).unwrap();
    let rw = Protection::READ_WRITE;
    arena.add_anonymous(0, 2 * ps, rw).unwrap();
    arena
        .add_fd_mapping(2 * ps, 4 * ps, shm.as_fd(), 0, rw)
        .unwrap();
    let change = arena
        .plan_fd_overlay(6 * ps, 2 * ps, file.as_fd(), 0, rw, false)
        .unwrap();
    arena.apply(change, false).unwrap();
    arena
        .add_fd_mapping(8 * ps, 4 * ps, shared_file.as_fd(), 0, rw)
        .unwrap();
    arena.write_from(0, &vec![1u8; 12 * ps][..]).unwrap();
    assert_eq!(resident(arena.addr.wrapping_add(2 * ps), 4 * ps), 4);

    // All four pieces at once: the range crosses them.
    arena.discard(ps, 10 * ps).unwrap();
    assert_eq!(read(&arena, 0, ps), vec![1u8; ps], "before the range");
    assert_eq!(
        read(&arena, ps, ps),
        vec![0u8; ps],
        "private anonymous: zeros"
    );
    assert_eq!(
        read(&arena, 2 * ps, 4 * ps),
        vec![0u8; 4 * ps],
        "memfd: zeros"
    );
    assert_eq!(
        read(&arena, 6 * ps, 2 * ps),
        vec![7u8; 2 * ps],
        "private file: the file again"
    );
    assert_eq!(
        read(&arena, 8 * ps, 3 * ps),
        vec![0u8; 3 * ps],
        "shared file: a hole"
    );
    assert_eq!(read(&arena, 11 * ps, ps), vec![1u8; ps], "after the range");
    // The memfd's pages were freed, not just unmapped: a second mapping
    // of it reads zeros, and none of them is resident (before the reads
    // above faulted the zero page back in — read through the memfd instead).
    let other = MemoryMapping::from_fd(shm.as_fd(), 4 * ps, MappingOptions::fd()).unwrap();
    let mut b = vec![1u8; 4 * ps];
    other.read_into(0, &mut b[..]).unwrap();
    assert_eq!(b, vec![0u8; 4 * ps]);
    // The shared file: same size, zeros where punched (whether its blocks
    // are freed is the file system's to report: not checked here).
    let meta = shared_file.metadata().unwrap();
    assert_eq!(meta.len(), 4 * ps as u64);
    let mut on_disk = vec![0u8; 4 * ps];
    std::os::unix::fs::FileExt::read_exact_at(&shared_file, &mut on_disk, 0).unwrap();
    assert_eq!(&on_disk[..3 * ps], &vec![0u8; 3 * ps][..]);
    assert_eq!(&on_disk[3 * ps..], &vec![1u8; ps][..]);
}

#[test]
fn a_discarded_memfd_gives_its_pages_back() {
    let ps = page_size();
    let shm = SharedMemory::create("mr-discard-rss", 64 * ps as u64, true, None).unwrap();
    let mut arena = MemoryMappingArena::new(64 * ps).unwrap();
    arena
        .add_fd_mapping(0, 64 * ps, shm.as_fd(), 0, Protection::READ_WRITE)
        .unwrap();
    arena.write_from(0, &vec![3u8; 64 * ps][..]).unwrap();
    assert_eq!(resident(arena.addr, 64 * ps), 64);
    arena.discard(0, 64 * ps).unwrap();
    assert_eq!(resident(arena.addr, 64 * ps), 0);
}

#[test]
fn discard_refuses_holes_read_only_memory_and_partial_pages() {
    let ps = page_size();
    let mut arena = MemoryMappingArena::new(8 * ps).unwrap();
    arena
        .add_anonymous(0, 2 * ps, Protection::READ_WRITE)
        .unwrap();
    arena.add_anonymous(4 * ps, ps, Protection::READ).unwrap();
    arena.write_from(0, &[5u8; 8][..]).unwrap();
    let access = |r: Result<()>| matches!(r, Err(Error::Access { .. }));
    assert!(access(arena.discard(0, 3 * ps)), "a hole");
    assert!(access(arena.discard(4 * ps, ps)), "read-only");
    assert!(matches!(
        arena.discard(0, ps + 1),
        Err(Error::Unaligned { what: "size", .. })
    ));
    assert!(matches!(
        arena.discard(1, ps),
        Err(Error::Unaligned { what: "offset", .. })
    ));
    assert!(matches!(
        arena.discard(7 * ps, 2 * ps),
        Err(Error::OutOfBounds { .. })
    ));
    arena.discard(2 * ps, 0).unwrap();
    assert_eq!(read(&arena, 0, 8), vec![5u8; 8], "nothing was discarded");
}

#[test]
fn a_memfd_sealed_against_writes_refuses_with_eperm() {
    let ps = page_size();
    let shm = SharedMemory::create("mr-discard-sealed", 2 * ps as u64, true, None).unwrap();
    let mut arena = MemoryMappingArena::new(2 * ps).unwrap();
    arena
        .add_fd_mapping(0, 2 * ps, shm.as_fd(), 0, Protection::READ_WRITE)
        .unwrap();
    arena.write_from(0, &[4u8; 8][..]).unwrap();
    shm.add_seals(libc::F_SEAL_FUTURE_WRITE).unwrap();
    let err = arena.discard(0, 2 * ps).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EPERM), "{err:?}");
    assert_eq!(read(&arena, 0, 8), vec![4u8; 8]);
}
