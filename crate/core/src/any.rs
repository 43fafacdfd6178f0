//! `AnyRegion`: a region of either kind, with the operations both share and
//! the arena-only ones refused in one place for a plain mapping.

use crate::copy::probe_pages;
use crate::region::unsupported;
use crate::rules::{check_atomic, check_bounds};
use crate::{
    CopyMode, Error, MappedRegion, MemSlice, MemSliceMut, MemoryMapping, MemoryMappingArena,
    Protection, Result,
};

/// A [`MemoryMapping`] or a [`MemoryMappingArena`].
// One per open region, kept in place behind the binding's lock and never moved
// on a hot path: boxing the arena would put an indirection on every access to
// save bytes no one copies.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum AnyRegion {
    /// One mapping.
    Mapping(MemoryMapping),
    /// A reservation with overlays.
    Arena(MemoryMappingArena),
}

impl AnyRegion {
    /// The region as the common trait.
    pub fn region(&self) -> &dyn MappedRegion {
        match self {
            AnyRegion::Mapping(m) => m,
            AnyRegion::Arena(a) => a,
        }
    }

    /// The arena, for an operation only arenas have; a mapping refuses it
    /// with [`Error::Unsupported`](crate::Error::Unsupported) naming `operation`.
    pub fn arena(&self, operation: &'static str) -> Result<&MemoryMappingArena> {
        match self {
            AnyRegion::Arena(a) => Ok(a),
            AnyRegion::Mapping(_) => Err(unsupported(operation)),
        }
    }

    /// As [`arena`](Self::arena), mutably.
    pub fn arena_mut(&mut self, operation: &'static str) -> Result<&mut MemoryMappingArena> {
        match self {
            AnyRegion::Arena(a) => Ok(a),
            AnyRegion::Mapping(_) => Err(unsupported(operation)),
        }
    }

    /// Copies `dst.len()` bytes from `offset` into `dst` (which may be a view
    /// of this region); needs `READ` there.
    pub fn read_into<'a>(&self, offset: usize, dst: impl Into<MemSliceMut<'a>>) -> Result<()> {
        let dst = dst.into();
        match self {
            AnyRegion::Mapping(m) => m.read_into(offset, dst),
            AnyRegion::Arena(a) => a.read_into(offset, dst),
        }
    }

    /// Copies `src` (which may be a view of this region) to `offset`; needs
    /// `WRITE` there.
    pub fn write_from<'a>(&self, offset: usize, src: impl Into<MemSlice<'a>>) -> Result<()> {
        let src = src.into();
        match self {
            AnyRegion::Mapping(m) => m.write_from(offset, src),
            AnyRegion::Arena(a) => a.write_from(offset, src),
        }
    }

    /// Discards the pages of `[offset, offset + size)`: see
    /// [`MemoryMappingArena::discard`] (per piece of the layout) and
    /// [`MemoryMapping::discard`]. The mappings stay; views see the memory
    /// as it reads afterwards (zeros, or a private file mapping's file).
    pub fn discard(&self, offset: usize, size: usize) -> Result<()> {
        match self {
            AnyRegion::Mapping(m) => m.discard(offset, size),
            AnyRegion::Arena(a) => a.discard(offset, size),
        }
    }

    /// Whether `[offset, offset + len)` may be touched directly, as a view
    /// does: mapped `READ | WRITE` and backed by memory whose size is known.
    pub fn check_direct(&self, offset: usize, len: usize) -> Result<()> {
        match self {
            AnyRegion::Mapping(m) => m.check_direct(offset, len),
            AnyRegion::Arena(a) => a.check_direct(offset, len),
        }
    }

    /// Whether a view (memory touched directly, for as long as it lives) may
    /// be made over `[offset, offset + len)`: [`check_direct`](Self::check_direct),
    /// and, where the memory could vanish (a file, an unsealed memfd), every
    /// page of it backed now — a file truncated since it was mapped is
    /// [`Error::Unbacked`], not a view whose first touch is `SIGBUS`.
    ///
    /// The region keeps no fd of its overlays, so the kernel is asked, the
    /// way it answers a touch: one byte of the last page of each piece of the
    /// range read with `process_vm_readv` ([`probe_pages`]). A piece is one
    /// file at contiguous offsets and a file is backed up to its size, so
    /// its last page is backed only if all of them are. A truncation after
    /// this check is the documented exception (a file someone else truncates).
    pub fn check_view(&self, offset: usize, len: usize) -> Result<()> {
        let plain = match self {
            AnyRegion::Mapping(m) => {
                m.check_direct(offset, len)?;
                m.copy_mode() == CopyMode::Plain
            }
            AnyRegion::Arena(a) => a.direct_mode(offset, len)? == CopyMode::Plain,
        };
        if len == 0 || plain {
            return Ok(());
        }
        let page = crate::page_size();
        let base = self.region().as_ptr() as usize;
        let end = offset + len;
        let mut at = offset;
        while at < end {
            let piece_end = match self {
                AnyRegion::Mapping(_) => end,
                AnyRegion::Arena(a) => a.mapping_at(at).map_or(end, |(_, e)| e.min(end)),
            };
            let last = (piece_end - 1) & !(page - 1);
            // SAFETY: `last` is inside the region, which the caller keeps
            // mapped for the call; the kernel reports an unbacked page as
            // EFAULT instead of a signal.
            unsafe { probe_pages((base + last) as *const u8, 1) }.map_err(|_| Error::Unbacked {
                offset: offset as u64,
                size: len as u64,
            })?;
            at = piece_end;
        }
        Ok(())
    }

    /// The window around `offset` where typed accesses may touch memory
    /// directly: the mapping (or the arena's layout entry) that contains
    /// `offset`, cut to the `max`-aligned block of `max` bytes (a power of two)
    /// around it. `direct` says whether memory there is mapped `READ | WRITE`
    /// and can never fault — anonymous memory or a memfd sealed against
    /// shrinking, not a file someone could truncate nor a device — so that a
    /// load or store through a view there (or an atomic one) is as safe as a
    /// checked copy. `None` in a hole or past the end.
    pub fn window(&self, offset: usize, max: usize) -> Option<Window> {
        let (start, end) = match self {
            AnyRegion::Mapping(m) => (offset < m.size()).then_some((0, m.size()))?,
            AnyRegion::Arena(a) => a.mapping_at(offset)?,
        };
        let block = offset & !(max - 1);
        let (start, end) = (start.max(block), end.min(block.saturating_add(max)));
        let len = end - start;
        let direct = self.cannot_vanish(start, len) && self.check_direct(start, len).is_ok();
        Some(Window { start, end, direct })
    }

    /// Whether `[offset, offset + len)` is mapped `READ | WRITE` over memory
    /// that cannot vanish under the mapping (copies there may be plain).
    fn cannot_vanish(&self, offset: usize, len: usize) -> bool {
        match self {
            AnyRegion::Mapping(m) => m.copy_mode() == CopyMode::Plain,
            AnyRegion::Arena(a) => {
                a.check_access(offset, len, Protection::READ_WRITE) == Ok(CopyMode::Plain)
            }
        }
    }

    /// Whether an atomic access of `width` bytes at `offset` may be made
    /// (through a window): in bounds, naturally aligned, mapped `READ | WRITE`
    /// and in memory that cannot vanish (a [`Window`] that is `direct`).
    pub fn check_atomic(&self, offset: usize, width: usize) -> Result<()> {
        check_bounds(offset, width, self.region().size())?;
        check_atomic(offset, width)?;
        self.check_direct(offset, width)?;
        match self.window(offset, width.next_power_of_two()) {
            Some(w) if w.direct => Ok(()),
            _ => Err(Error::NotDirect {
                offset: offset as u64,
                width: width as u64,
            }),
        }
    }

    /// An atomic access of a 4- or 8-byte word at `offset` (sequentially
    /// consistent), for callers that have no window over the memory (a region
    /// shared with other threads hands out none): checked as
    /// [`check_atomic`](Self::check_atomic) first. The caller keeps the region
    /// from changing during the call (the binding holds its lock).
    pub fn atomic<T: AtomicWord>(&self, offset: usize, op: Atomic<T>) -> Result<T> {
        self.check_atomic(offset, std::mem::size_of::<T>())?;
        // `check_atomic` proved the word in bounds, naturally aligned, mapped
        // READ | WRITE and backed by memory that cannot vanish; the caller
        // keeps the layout unchanged until this returns.
        // SAFETY: so the word can be loaded and stored atomically without a fault.
        Ok(unsafe { T::apply(self.region().as_ptr().add(offset), op) })
    }

    /// Whether `[offset, offset + len)` may be handed out as memory that is
    /// never detached (a `SharedArrayBuffer` over it): in bounds, mapped
    /// `READ | WRITE` throughout, and memory that cannot vanish (anonymous, or
    /// a memfd sealed against shrinking), so that touching it can never fault.
    /// The caller keeps the range from changing while it is handed out.
    pub fn check_pinnable(&self, offset: usize, len: usize) -> Result<()> {
        check_bounds(offset, len, self.region().size())?;
        self.check_direct(offset, len)?;
        if !self.cannot_vanish(offset, len) {
            return Err(Error::NotDirect {
                offset: offset as u64,
                width: len as u64,
            });
        }
        Ok(())
    }

    /// Kernel mappings the region occupies: 1 for a mapping, the overlays and
    /// holes of an arena.
    pub fn kernel_mapping_count(&self) -> usize {
        match self {
            AnyRegion::Mapping(_) => 1,
            AnyRegion::Arena(a) => a.kernel_mapping_count(),
        }
    }
}

/// An atomic operation of [`AnyRegion::atomic`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Atomic<T> {
    /// Load; returns the value.
    Load,
    /// Store the value; returns it.
    Store(T),
    /// Store the second value if the word holds the first; returns the old value.
    CompareExchange(T, T),
}

/// A word [`AnyRegion::atomic`] works on: `u32` or `u64`.
pub trait AtomicWord: Copy + private::Sealed {
    /// Applies `op` to the word at `at`, returning the value loaded, stored or
    /// found.
    ///
    /// # Safety
    /// `at` must be valid for atomic loads and stores of `Self` (in bounds,
    /// naturally aligned, mapped read-write, unable to fault) for the call.
    unsafe fn apply(at: *mut u8, op: Atomic<Self>) -> Self;
}

mod private {
    pub trait Sealed {}
    impl Sealed for u32 {}
    impl Sealed for u64 {}
}

macro_rules! atomic_word {
    ($t:ty, $atomic:ty) => {
        impl AtomicWord for $t {
            unsafe fn apply(at: *mut u8, op: Atomic<$t>) -> $t {
                use std::sync::atomic::Ordering::SeqCst;
                // The one reference formed over region memory: to an atomic,
                // whose `UnsafeCell` lets anyone change it meanwhile (as
                // vm-memory's atomic access does).
                // SAFETY: guaranteed by the caller (aligned, mapped, direct).
                let cell = unsafe { <$atomic>::from_ptr(at.cast()) }; // raw-ref: an interior-mutable atomic word, for one operation.
                match op {
                    Atomic::Load => cell.load(SeqCst),
                    Atomic::Store(v) => {
                        cell.store(v, SeqCst);
                        v
                    }
                    Atomic::CompareExchange(e, r) => cell
                        .compare_exchange(e, r, SeqCst, SeqCst)
                        .unwrap_or_else(|old| old),
                }
            }
        }
    };
}
atomic_word!(u32, std::sync::atomic::AtomicU32);
atomic_word!(u64, std::sync::atomic::AtomicU64);

/// See [`AnyRegion::window`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Start of the window (bytes from the region's start).
    pub start: usize,
    /// Its end.
    pub end: usize,
    /// Whether memory there may be touched directly.
    pub direct: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::unlinked_file;
    use crate::{MappingOptions, SharedMemory};
    use std::os::fd::AsFd;

    #[test]
    fn a_view_over_pages_already_truncated_away_is_refused() {
        let ps = crate::page_size();
        let file = unlinked_file("view-eof", &vec![1u8; 4 * ps], true);
        let mut arena = MemoryMappingArena::new(16 * ps).unwrap();
        arena
            .add_anonymous(0, 2 * ps, Protection::READ_WRITE)
            .unwrap();
        arena
            .add_fd_mapping(2 * ps, 4 * ps, file.as_fd(), 0, Protection::READ_WRITE)
            .unwrap();
        let r = AnyRegion::Arena(arena);
        assert!(r.check_view(0, 6 * ps).is_ok());
        file.set_len(ps as u64 + 1).unwrap();
        // The file's first two pages are backed (the second in part), the rest is gone.
        assert!(r.check_view(0, 4 * ps).is_ok());
        assert!(r.check_view(3 * ps + 7, 1).is_ok());
        let gone = r.check_view(ps, 4 * ps);
        assert!(
            matches!(gone, Err(Error::Unbacked { offset, size }) if offset == ps as u64 && size == 4 * ps as u64),
            "{gone:?}"
        );
        assert!(matches!(
            r.check_view(4 * ps, 1),
            Err(Error::Unbacked { .. })
        ));
        // Anonymous memory alone is never probed, and never refused.
        assert!(r.check_view(0, 2 * ps).is_ok());
    }

    #[test]
    fn windows_cover_one_layout_entry_cut_to_an_aligned_block() {
        let ps = crate::page_size();
        let shm = SharedMemory::create("window", 4 * ps as u64, true, None).unwrap();
        let file = unlinked_file("window", &vec![0u8; 4 * ps], true);
        let mut arena = MemoryMappingArena::new(16 * ps).unwrap();
        arena
            .add_anonymous(0, 2 * ps, Protection::READ_WRITE)
            .unwrap();
        arena
            .add_fd_mapping(2 * ps, 2 * ps, shm.as_fd(), 0, Protection::READ_WRITE)
            .unwrap();
        arena
            .add_fd_mapping(6 * ps, 2 * ps, file.as_fd(), 0, Protection::READ_WRITE)
            .unwrap();
        arena.add_anonymous(8 * ps, ps, Protection::READ).unwrap();
        let r = AnyRegion::Arena(arena);
        let w = |offset| r.window(offset, 1 << 30);
        assert_eq!(
            w(5),
            Some(Window {
                start: 0,
                end: 2 * ps,
                direct: true
            })
        );
        // A sealed memfd cannot shrink: direct.
        assert_eq!(
            w(3 * ps),
            Some(Window {
                start: 2 * ps,
                end: 4 * ps,
                direct: true
            })
        );
        assert_eq!(w(4 * ps), None, "a hole");
        // A file someone could truncate, read-only memory: no direct access.
        assert_eq!(
            w(6 * ps + 1),
            Some(Window {
                start: 6 * ps,
                end: 8 * ps,
                direct: false
            })
        );
        assert_eq!(
            w(8 * ps),
            Some(Window {
                start: 8 * ps,
                end: 9 * ps,
                direct: false
            })
        );
        assert_eq!(w(16 * ps), None, "past the end");
        // Cut to the block of `max` bytes around the offset.
        assert_eq!(
            r.window(ps + 3, ps),
            Some(Window {
                start: ps,
                end: 2 * ps,
                direct: true
            })
        );
        assert!(r.check_atomic(8, 8).is_ok());
        assert!(matches!(
            r.check_atomic(6, 4),
            Err(Error::Misaligned {
                offset: 6,
                width: 4
            })
        ));
        assert!(matches!(
            r.check_atomic(6 * ps, 4),
            Err(Error::NotDirect { .. })
        ));
        assert!(matches!(
            r.check_atomic(8 * ps, 4),
            Err(Error::Access { .. })
        ));
        assert!(matches!(
            r.check_atomic(4 * ps, 4),
            Err(Error::Access { .. })
        ));
        assert!(matches!(
            r.check_atomic(16 * ps - 4, 8),
            Err(Error::OutOfBounds { .. })
        ));
    }

    #[test]
    fn a_mapping_is_one_window() {
        let ps = crate::page_size();
        let m = AnyRegion::Mapping(
            MemoryMapping::anonymous(3 * ps, MappingOptions::anonymous()).unwrap(),
        );
        assert_eq!(
            m.window(ps, 1 << 30),
            Some(Window {
                start: 0,
                end: 3 * ps,
                direct: true
            })
        );
        assert_eq!(m.window(3 * ps, 1 << 30), None);
        let m = AnyRegion::Mapping(crate::testutil::read_only_mapping());
        assert_eq!(
            m.window(0, 1 << 30),
            Some(Window {
                start: 0,
                end: ps,
                direct: false
            })
        );
    }

    #[test]
    fn checked_atomics_refuse_what_check_atomic_refuses_and_are_coherent_across_threads() {
        let ps = crate::page_size();
        let mut arena = MemoryMappingArena::new(4 * ps).unwrap();
        arena.add_anonymous(0, ps, Protection::READ_WRITE).unwrap();
        arena.add_anonymous(ps, ps, Protection::READ).unwrap();
        let r = AnyRegion::Arena(arena);
        assert_eq!(r.atomic::<u32>(8, Atomic::Store(5)), Ok(5));
        assert_eq!(
            r.atomic::<u32>(8, Atomic::CompareExchange(4, 9)),
            Ok(5),
            "no exchange: the old value"
        );
        assert_eq!(r.atomic::<u32>(8, Atomic::CompareExchange(5, 9)), Ok(5));
        assert_eq!(r.atomic::<u32>(8, Atomic::Load), Ok(9));
        assert_eq!(r.atomic::<u64>(16, Atomic::Store(u64::MAX)), Ok(u64::MAX));
        assert_eq!(r.atomic::<u64>(16, Atomic::Load), Ok(u64::MAX));
        assert!(matches!(
            r.atomic::<u32>(2, Atomic::Load),
            Err(Error::Misaligned { .. })
        ));
        assert!(matches!(
            r.atomic::<u64>(12, Atomic::Load),
            Err(Error::Misaligned { .. })
        ));
        assert!(
            r.atomic::<u32>(ps, Atomic::Load).is_err(),
            "read-only memory"
        );
        assert!(r.atomic::<u32>(2 * ps, Atomic::Load).is_err(), "a hole");
        assert!(
            r.atomic::<u32>(4 * ps, Atomic::Load).is_err(),
            "out of bounds"
        );
        // Four threads x 10,000 compare-exchange increments of one word: exact.
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..10_000 {
                        loop {
                            let old = r.atomic::<u32>(64, Atomic::Load).unwrap();
                            if r.atomic::<u32>(64, Atomic::CompareExchange(old, old + 1)) == Ok(old)
                            {
                                break;
                            }
                        }
                    }
                });
            }
        });
        assert_eq!(r.atomic::<u32>(64, Atomic::Load), Ok(40_000));
    }
}
