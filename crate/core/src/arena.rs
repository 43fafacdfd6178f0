//! `MemoryMappingArena`: a `PROT_NONE` reservation that fds and anonymous
//! memory are overlaid into and removed from at page granularity.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;

use crate::copy::{copy_in, copy_out, CopyMode};
use crate::held::{HeldRanges, Restore};
use crate::layout::{Backing, FileId, Layout, MappingInfo};
use crate::mapping::copy_mode_for_fd;
use crate::rules::{
    check_alignment, check_bounds, check_eof, check_huge, discard_range, file_offset,
    mapping_range, round_up_to_page, Advice,
};
use crate::{
    budget, sys, Error, MappedRegion, MemSlice, MemSliceMut, Protection, Result, SharedMemory,
};

const RESERVE_FLAGS: libc::c_int = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;

/// A change to an arena, validated but not yet made: returned by
/// [`MemoryMappingArena::plan_fd_mapping`], [`plan_anonymous`] and
/// [`plan_removal`], made by [`MemoryMappingArena::apply`]. In between, whoever
/// else uses the memory of [`range`](Change::range) (views, asynchronous
/// operations) lets go of it, or refuses the change by not applying it, which
/// leaves everything as it was.
///
/// [`plan_anonymous`]: MemoryMappingArena::plan_anonymous
/// [`plan_removal`]: MemoryMappingArena::plan_removal
#[derive(Clone, Copy, Debug)]
#[must_use = "a planned change does nothing until it is applied"]
pub struct Change<'fd> {
    start: usize,
    end: usize,
    what: What<'fd>,
}

#[derive(Clone, Copy, Debug)]
enum What<'fd> {
    Fd {
        fd: BorrowedFd<'fd>,
        /// Checked by [`file_offset`]: page aligned, within `off_t`.
        fd_offset: libc::off_t,
        prot: Protection,
        /// Whether the fd has a size that was checked (regular file, memfd,
        /// block device); views need it.
        sized: bool,
        /// Whether its pages cannot vanish (a memfd sealed against shrinking):
        /// copies of it may be plain.
        plain: bool,
        /// The fd number the layout records (the one the caller named; for a
        /// [`SharedMemory`], its public fd, though its private one is mapped).
        recorded: RawFd,
        /// The identity of the file mapped (from the `fstat` of the plan, or
        /// the [`SharedMemory`]'s own).
        file: Option<FileId>,
        /// `MAP_SHARED`, or `MAP_PRIVATE` (copy-on-write).
        shared: bool,
    },
    Anonymous {
        prot: Protection,
    },
    Protect {
        prot: Protection,
    },
    Remove,
}

impl Change<'_> {
    /// The page range `[start, end)` of the arena the change replaces.
    pub fn range(&self) -> (usize, usize) {
        (self.start, self.end)
    }

    /// Whether views over the range must be detached before the change: every
    /// change but a protection change that keeps `READ | WRITE` (the memory
    /// and its access for a view stay as they are).
    pub fn detaches_views(&self) -> bool {
        !matches!(self.what, What::Protect { prot } if prot.contains(Protection::READ_WRITE))
    }
}

/// What is known of an fd about to be overlaid, from `fstat` or from the
/// [`SharedMemory`] it belongs to.
#[derive(Clone, Copy, Debug)]
struct FdFacts {
    /// Its size, where it has one that was checked (regular file, memfd,
    /// block device); `None` for a device of unknown size.
    size: Option<u64>,
    /// Its huge-page size (hugetlbfs).
    huge_page: Option<u64>,
    /// Whether its pages cannot vanish (sealed against shrinking).
    plain: bool,
    /// The fd number the layout records.
    recorded: RawFd,
    /// The file's identity (`st_dev`, `st_ino`).
    file: Option<FileId>,
}

/// What an fd overlay being applied is, besides where it goes.
#[derive(Clone, Copy, Debug)]
struct FdKind {
    /// The fd's size was checked (views may touch it).
    sized: bool,
    /// Its pages cannot vanish (copies may be plain).
    plain: bool,
    /// `MAP_SHARED` rather than `MAP_PRIVATE`.
    shared: bool,
    /// The fd number the layout records.
    recorded: RawFd,
    /// The file's identity, when known: neighbours of other files are never
    /// merged, without asking the kernel.
    file: Option<FileId>,
}

/// A reserved range of address space with tracked overlays.
#[derive(Debug)]
pub struct MemoryMappingArena {
    addr: *mut u8,
    size: usize,
    layout: Layout,
    /// Overlays of fds whose pages may vanish (not sealed against shrinking),
    /// as a layout of their own so that copies know when to be fault-safe.
    fragile: Layout,
    /// Overlays of fds whose size cannot be checked (character devices and
    /// the like): a device's mapping can fault wherever its driver says (a
    /// shared `/dev/zero` at a non-zero offset faults on every page), so no
    /// view is made over them; copies of them are fault-safe.
    opaque: Layout,
    /// Kernel mappings this arena occupies, as last reported to [`budget`].
    kernel_mappings: usize,
    /// Ranges kept accessible after a change until the next reclaim.
    held: HeldRanges,
}

// SAFETY: the reservation is owned by this value; the pointer is only used for
// syscalls and explicit copies, never to form Rust references.
unsafe impl Send for MemoryMappingArena {}
// SAFETY: see Send; mutation needs `&mut self`.
unsafe impl Sync for MemoryMappingArena {}

impl MemoryMappingArena {
    /// Reserves `size` bytes (rounded up to whole pages) of `PROT_NONE` address
    /// space. Reserving costs no memory.
    pub fn new(size: usize) -> Result<MemoryMappingArena> {
        Self::reserve(size, crate::page_size())
    }

    /// Reserves `size` bytes (rounded up to whole pages) starting at a multiple
    /// of `align` (a power of two, at least the page size), so that huge-page
    /// backings can be overlaid at their natural alignment. An alignment above
    /// the page size reserves `align - PAGE_SIZE` more and gives the excess
    /// back at once: it costs neither memory nor a kernel mapping.
    pub fn reserve(size: usize, align: usize) -> Result<MemoryMappingArena> {
        let size = crate::rules::mapping_len(size)?;
        check_alignment(align)?;
        let page = crate::page_size();
        let total = size
            .checked_add(align - page)
            .filter(|&t| t <= isize::MAX as usize)
            .ok_or_else(|| Error::OutOfRange {
                what: "size",
                reason: format!("{size} aligned to {align} is larger than the address space"),
            })?;
        budget::check_room(1)?;
        // SAFETY: no MAP_FIXED: the kernel picks free address space.
        let base = unsafe {
            sys::mmap(
                sys::no_hint(),
                total,
                libc::PROT_NONE,
                RESERVE_FLAGS,
                None,
                0,
            )
        }?;
        let start = (base as usize).next_multiple_of(align);
        let (head, tail) = (
            start - base as usize,
            total - size - (start - base as usize),
        );
        // SAFETY: both ranges are the unaligned ends of the reservation just
        // made, owned by nothing else; what stays is [start, start + size).
        unsafe {
            if head > 0 {
                let _ = sys::munmap(base, head);
            }
            if tail > 0 {
                let _ = sys::munmap((start + size) as *mut u8, tail);
            }
        }
        let addr = start as *mut u8;
        budget::update(0, 1);
        Ok(MemoryMappingArena {
            addr,
            size,
            layout: Layout::new(),
            fragile: Layout::new(),
            opaque: Layout::new(),
            kernel_mappings: 1,
            held: HeldRanges::default(),
        })
    }

    /// Maps `size` bytes of private anonymous memory at `offset`.
    pub fn add_anonymous(&mut self, offset: usize, size: usize, prot: Protection) -> Result<()> {
        let change = self.plan_anonymous(offset, size, prot)?;
        self.apply(change, false)
    }

    /// Validates an anonymous overlay of `size` bytes at `offset` (range, map
    /// count) without making it.
    pub fn plan_anonymous(
        &self,
        offset: usize,
        size: usize,
        prot: Protection,
    ) -> Result<Change<'static>> {
        let len = mapping_range(offset, size, self.size)?;
        budget::check_room(2)?;
        Ok(Change {
            start: offset,
            end: offset + len,
            what: What::Anonymous { prot },
        })
    }

    /// Validates an overlay of `size` bytes of `fd` from `fd_offset` at
    /// `offset` without making it: range, alignment, `off_t`, end of file and
    /// map count. Regular files (memfds included) and block devices shorter
    /// than `fd_offset + size` are refused: touching pages past their end would
    /// raise `SIGBUS`.
    pub fn plan_fd_mapping<'fd>(
        &self,
        offset: usize,
        size: usize,
        fd: BorrowedFd<'fd>,
        fd_offset: u64,
        prot: Protection,
    ) -> Result<Change<'fd>> {
        self.plan_fd_overlay(offset, size, fd, fd_offset, prot, true)
    }

    /// As [`plan_fd_mapping`](Self::plan_fd_mapping), `MAP_SHARED` (writes
    /// reach the file) or, without `shared`, `MAP_PRIVATE`: copy-on-write,
    /// writes stay in this process and the file never changes (so a read-only
    /// fd may be mapped writable). The rules are the same either way: pages
    /// not yet written are the file's, and past its end they would `SIGBUS`.
    pub fn plan_fd_overlay<'fd>(
        &self,
        offset: usize,
        size: usize,
        fd: BorrowedFd<'fd>,
        fd_offset: u64,
        prot: Protection,
        shared: bool,
    ) -> Result<Change<'fd>> {
        self.plan_fd_with(offset, size, fd, fd_offset, prot, shared, || {
            let sys::Mappable {
                size,
                identity,
                huge_page,
            } = sys::mappable(fd)?;
            Ok(FdFacts {
                size,
                huge_page,
                plain: copy_mode_for_fd(fd, identity) == CopyMode::Plain,
                recorded: fd.as_raw_fd(),
                file: Some(identity),
            })
        })
    }

    /// The rules every fd overlay obeys: range and file offset first, then,
    /// applied to what `known` says of the fd (asked only once those hold),
    /// huge-page alignment, end of file and map count.
    #[allow(clippy::too_many_arguments)]
    fn plan_fd_with<'fd>(
        &self,
        offset: usize,
        size: usize,
        fd: BorrowedFd<'fd>,
        fd_offset: u64,
        prot: Protection,
        shared: bool,
        known: impl FnOnce() -> Result<FdFacts>,
    ) -> Result<Change<'fd>> {
        let len = mapping_range(offset, size, self.size)?;
        let off = file_offset("fdOffset", fd_offset)?;
        let known = known()?;
        if let Some(huge) = known.huge_page {
            check_huge(Some(self.addr as usize + offset), size, fd_offset, huge)?;
        }
        if let Some(file_size) = known.size {
            check_eof(fd_offset, size, file_size)?;
        }
        budget::check_room(2)?;
        Ok(Change {
            start: offset,
            end: offset + len,
            what: What::Fd {
                fd,
                fd_offset: off,
                prot,
                sized: known.size.is_some(),
                plain: known.plain,
                recorded: known.recorded,
                file: known.file,
                shared,
            },
        })
    }

    /// As [`plan_fd_overlay`](Self::plan_fd_overlay) for a [`SharedMemory`]:
    /// maps its private descriptor, which it never hands out, so nothing can
    /// close it or make its number name another file while `shm` lives. Once
    /// sealed against shrinking its size can only grow from the size it had
    /// then, and its huge-page size is known from its creation: a range within
    /// that size needs no `fstat` and no `F_GET_SEALS` (the end-of-file,
    /// huge-page and copy rules are applied to what `shm` knows). Anything
    /// else — not sealed, or a range past the size at sealing (the memfd may
    /// have grown since) — asks the kernel as the fd path does. The layout
    /// records `shm`'s public fd, as if the caller had named it.
    pub fn plan_shm_overlay<'fd>(
        &self,
        offset: usize,
        size: usize,
        shm: &'fd SharedMemory,
        fd_offset: u64,
        prot: Protection,
        shared: bool,
    ) -> Result<Change<'fd>> {
        let fd = shm.private_fd();
        let known = shm.sealed_size().filter(|&sealed| {
            fd_offset
                .checked_add(size as u64)
                .is_some_and(|end| end <= sealed)
        });
        if known.is_none() {
            let mut change = self.plan_fd_overlay(offset, size, fd, fd_offset, prot, shared)?;
            if let What::Fd { recorded, .. } = &mut change.what {
                *recorded = shm.fd();
            }
            return Ok(change);
        }
        let known = FdFacts {
            size: known,
            huge_page: shm.huge_page_size(),
            plain: true,
            recorded: shm.fd(),
            file: Some(shm.identity()),
        };
        self.plan_fd_with(offset, size, fd, fd_offset, prot, shared, || Ok(known))
    }

    /// Validates a change of the protection of `[offset, offset + size)` in
    /// place (`mprotect`: contents and backing kept) without making it. The
    /// range must be mapped throughout (a hole is [`Error::Access`]). Where a
    /// narrower fd overlay over just-detached views is still mapped privately
    /// (until [`reclaim`](Self::reclaim)), it is [`Error::Busy`].
    pub fn plan_protect(
        &self,
        offset: usize,
        size: usize,
        prot: Protection,
    ) -> Result<Change<'static>> {
        let len = mapping_range(offset, size, self.size)?;
        let end = offset + len;
        if self
            .layout
            .check_access(offset, end, Protection::NONE)
            .is_none()
        {
            return Err(Error::Access {
                offset: offset as u64,
                size: size as u64,
                needed: Protection::NONE,
            });
        }
        // Memory held for detached views takes the new protection like any
        // other (read-write until the reclaim, if narrower) — except where a
        // private mapping stands in for a shared one until the reclaim.
        if self.held.shared_overlaps(offset, end) {
            return Err(Error::Busy {
                operation: "protect",
            });
        }
        // mprotect of part of a mapping splits it.
        budget::check_room(2)?;
        Ok(Change {
            start: offset,
            end,
            what: What::Protect { prot },
        })
    }

    /// Changes the protection of `[offset, offset + size)` in place; see
    /// [`plan_protect`](Self::plan_protect).
    pub fn protect(&mut self, offset: usize, size: usize, prot: Protection) -> Result<()> {
        let change = self.plan_protect(offset, size, prot)?;
        self.apply(change, false)
    }

    /// Validates the removal of `[offset, offset + size)` without making it.
    /// Never refused for the map-count budget: removal must work at the limit.
    pub fn plan_removal(&self, offset: usize, size: usize) -> Result<Change<'static>> {
        let len = mapping_range(offset, size, self.size)?;
        Ok(Change {
            start: offset,
            end: offset + len,
            what: What::Remove,
        })
    }

    /// Makes a planned change. `in_use` says whether pointers into its range
    /// taken before may still be used (views were just detached there): the
    /// range is then *held* until [`reclaim`](Self::reclaim) — kept readable
    /// and writable while the layout already says what the change asked for
    /// (see the `held` module). A range still held from an earlier change
    /// counts as in use too. A failed change leaves the range as it was where
    /// the kernel kept it, and re-reserves what the kernel destroyed.
    pub fn apply(&mut self, change: Change<'_>, in_use: bool) -> Result<()> {
        let (start, end) = change.range();
        let in_use = in_use || self.held.overlaps(start, end);
        let result = match change.what {
            What::Anonymous { prot } => self.apply_anonymous(start, end, prot, in_use),
            What::Fd {
                fd,
                fd_offset,
                prot,
                sized,
                plain,
                recorded,
                file,
                shared,
            } => {
                let kind = FdKind {
                    sized,
                    plain,
                    shared,
                    recorded,
                    file,
                };
                self.apply_fd_mapping(start, end, fd, fd_offset, prot, kind, in_use)
            }
            What::Protect { prot } => self.apply_protect(start, end, prot, in_use),
            What::Remove => self.apply_removal(start, end, in_use),
        };
        self.sync_budget();
        result
    }

    fn apply_anonymous(
        &mut self,
        offset: usize,
        end: usize,
        prot: Protection,
        in_use: bool,
    ) -> Result<()> {
        let len = end - offset;
        let (map_prot, restore) = interim(prot, in_use);
        // SAFETY: `[offset, end)` lies inside the reservation owned by `self`
        // (a planned change); the caller let go of every view over it.
        let result = unsafe {
            sys::mmap(
                self.addr.add(offset),
                len,
                map_prot.to_prot(),
                RESERVE_FLAGS | libc::MAP_FIXED,
                None,
                0,
            )
        };
        match result {
            Ok(_) => {
                self.settle_held(offset, end, in_use, restore);
                let base = self.addr as usize;
                self.layout
                    .set_checked(offset, end, Backing::Anonymous, prot, &mut |b| {
                        kernel_merged(base + b)
                    });
                self.fragile.clear(offset, end);
                self.opaque.clear(offset, end);
                Ok(())
            }
            Err(e) => {
                self.repair(offset, end);
                Err(e)
            }
        }
    }

    /// Gives every held range what the change that held it asked for (a
    /// `PROT_NONE` hole, the narrower protection, the shared file mapping).
    /// Call it once no pointer taken before those changes can be in use; for
    /// Node, on the next turn of the event loop. A range whose shared mapping
    /// cannot be made again becomes a hole (the layout says so); the first
    /// error is returned.
    pub fn reclaim(&mut self) -> Result<()> {
        let mut first_error = None;
        for h in self.held.take() {
            let len = h.end - h.start;
            // SAFETY: held ranges lie inside the reservation; their views were
            // detached when they were held, and no new view can be made over
            // them (the layout refuses: a hole, or less than READ | WRITE).
            let addr = unsafe { self.addr.add(h.start) };
            let result = match h.restore {
                Restore::Keep => Ok(()),
                Restore::Hole => self.make_hole(h.start, len),
                // SAFETY: as above; only the protection changes.
                Restore::Protect(prot) => unsafe { sys::mprotect(addr, len, prot.to_prot()) },
                Restore::File {
                    fd,
                    fd_offset,
                    prot,
                    shared,
                } => {
                    let flags = if shared {
                        libc::MAP_SHARED
                    } else {
                        libc::MAP_PRIVATE
                    };
                    // SAFETY: as above; the file was mapped there (privately) already.
                    let mapped = file_offset("fdOffset", fd_offset).and_then(|off| unsafe {
                        sys::mmap(
                            addr,
                            len,
                            prot.to_prot(),
                            flags | libc::MAP_FIXED,
                            Some(fd.as_fd()),
                            off,
                        )
                    });
                    mapped.map(|_| ()).or_else(|e| {
                        self.repair(h.start, h.end);
                        let hole = self.make_hole(h.start, len);
                        self.layout.clear(h.start, h.end);
                        self.fragile.clear(h.start, h.end);
                        self.opaque.clear(h.start, h.end);
                        hole.and(Err(e))
                    })
                }
            };
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        self.sync_budget();
        first_error.map_or(Ok(()), Err)
    }

    /// Marks `[start, end)` (rounded out to whole pages, clipped to the arena)
    /// as memory that may still be touched through pointers taken before: the
    /// whole range of a live view that a change detached, of which the change
    /// itself may cover only part. Until [`reclaim`](Self::reclaim), every
    /// change there is held, as [`apply`](Self::apply) with `in_use` is.
    pub fn hold_in_use(&mut self, start: usize, end: usize) {
        let page = crate::page_size();
        let start = start & !(page - 1);
        let end = round_up_to_page(end).unwrap_or(self.size).min(self.size);
        if start < end {
            self.held.hold_gaps(start, end);
        }
    }

    /// After a successful overlay of `[start, end)`: held with `restore` where
    /// the overlay was mapped differently from what it asked for, held as it is
    /// where old pointers may still be in use, released otherwise.
    fn settle_held(&mut self, start: usize, end: usize, in_use: bool, restore: Option<Restore>) {
        match restore {
            Some(restore) => self.held.hold(start, end, restore),
            None if in_use => self.held.hold(start, end, Restore::Keep),
            None => self.held.release(start, end),
        }
    }

    /// Whether some range is held until [`reclaim`](Self::reclaim).
    pub fn has_held(&self) -> bool {
        !self.held.is_empty()
    }

    /// For an fd overlay narrower than `READ | WRITE` over memory that may
    /// still be touched through an old pointer: a private read-write mapping of
    /// the file now (writes through such a pointer never reach the file), and a
    /// duplicate of the fd for the shared mapping the reclaim makes (the caller
    /// may close theirs). `None` where either is impossible: the caller then
    /// makes the shared mapping at once.
    ///
    /// # Safety
    /// `[offset, offset + len)` must lie inside the reservation, with every view
    /// over it detached.
    unsafe fn map_private_until_reclaim(
        &mut self,
        offset: usize,
        len: usize,
        fd: BorrowedFd<'_>,
        fd_offset: libc::off_t,
        prot: Protection,
    ) -> Option<Arc<OwnedFd>> {
        let dup = Arc::new(sys::dup_cloexec(fd).ok()?);
        // SAFETY: guaranteed by the caller.
        let mapped = unsafe {
            sys::mmap(
                self.addr.add(offset),
                len,
                (prot | Protection::READ_WRITE).to_prot(),
                libc::MAP_PRIVATE | libc::MAP_FIXED,
                Some(fd),
                fd_offset,
            )
        };
        mapped.ok().map(|_| dup)
    }

    /// Replaces `[offset, offset + len)` by a reserved `PROT_NONE` range. At
    /// the map-count limit the remap cannot split a mapping; unmapping whole
    /// mappings frees entries, then the hole is reserved again. Another thread
    /// could map into the hole in between: a narrow, documented race.
    #[inline]
    fn make_hole(&mut self, offset: usize, len: usize) -> Result<()> {
        // SAFETY: the range is inside our reservation; callers detached every
        // view over it.
        let addr = unsafe { self.addr.add(offset) };
        // SAFETY: as above; replacing our own pages with a PROT_NONE reservation.
        let remap = unsafe {
            sys::mmap(
                addr,
                len,
                libc::PROT_NONE,
                RESERVE_FLAGS | libc::MAP_FIXED,
                None,
                0,
            )
        };
        match remap {
            Ok(_) => Ok(()),
            Err(Error::Syscall {
                errno: libc::ENOMEM,
                ..
            }) => {
                // SAFETY: the range is ours and no view uses it any more.
                unsafe { sys::munmap(addr, len) }?;
                // SAFETY: the range is inside the arena and was just unmapped.
                unsafe { self.reserve_again(addr, len) }
            }
            Err(e) => Err(e),
        }
    }

    /// The current layout, sorted by offset, merged as the kernel sees it.
    pub fn mappings(&self) -> impl Iterator<Item = MappingInfo> + '_ {
        self.layout.iter()
    }

    /// The extent `[start, end)` of the layout entry that contains `offset`
    /// (`None` in a hole).
    pub fn mapping_at(&self, offset: usize) -> Option<(usize, usize)> {
        self.layout.piece_at(offset)
    }

    /// Number of entries in the layout.
    pub fn mapping_count(&self) -> usize {
        self.layout.len()
    }

    /// Whether `[offset, offset + size)` is entirely mapped with `needed`.
    pub fn check_access(&self, offset: usize, size: usize, needed: Protection) -> Result<CopyMode> {
        let end = check_bounds(offset, size, self.size)?;
        if size == 0 {
            return Ok(CopyMode::Plain);
        }
        // Access works on whole pages.
        let page = crate::page_size();
        let start = offset & !(page - 1);
        match self.layout.check_access(start, end, needed) {
            None => Err(Error::Access {
                offset: offset as u64,
                size: size as u64,
                needed,
            }),
            Some(true) => Ok(CopyMode::Plain),
            Some(false) if self.fragile.overlaps(start, end) => Ok(CopyMode::FaultSafe),
            Some(false) => Ok(CopyMode::Plain),
        }
    }

    /// Whether `[offset, offset + len)` may be touched directly, as a view does:
    /// mapped `READ | WRITE`, and not an overlay of an fd whose size cannot be
    /// checked (a device: its pages may fault wherever its driver says).
    pub fn check_direct(&self, offset: usize, len: usize) -> Result<()> {
        self.direct_mode(offset, len).map(|_| ())
    }

    /// [`check_direct`](Self::check_direct), answering with how copies of the
    /// range go: `Plain` where its memory cannot vanish (one layout look-up
    /// for both, as `view` needs both).
    pub fn direct_mode(&self, offset: usize, len: usize) -> Result<CopyMode> {
        let mode = self.check_access(offset, len, Protection::READ_WRITE)?;
        let page = crate::page_size();
        if len > 0 && self.opaque.overlaps(offset & !(page - 1), offset + len) {
            return Err(Error::Access {
                offset: offset as u64,
                size: len as u64,
                needed: Protection::READ_WRITE,
            });
        }
        Ok(mode)
    }

    /// Copies `dst.len()` bytes from `offset` into `dst` (which may be a view
    /// of this arena); needs `READ` over the range.
    pub fn read_into<'a>(&self, offset: usize, dst: impl Into<MemSliceMut<'a>>) -> Result<()> {
        let dst = dst.into();
        let mode = self.check_access(offset, dst.len(), Protection::READ)?;
        // SAFETY: the range is inside the arena and mapped readable; the layout
        // cannot change while `self` is borrowed.
        let src = unsafe { MemSlice::new(self.addr.add(offset), dst.len()) };
        copy_out(src, dst, mode)
    }

    /// Copies `src` (which may be a view of this arena) to `offset`; needs
    /// `WRITE` over the range.
    pub fn write_from<'a>(&self, offset: usize, src: impl Into<MemSlice<'a>>) -> Result<()> {
        let src = src.into();
        let mode = self.check_access(offset, src.len(), Protection::WRITE)?;
        // SAFETY: the range is inside the arena and mapped writable; the layout
        // cannot change while `self` is borrowed.
        let dst = unsafe { MemSliceMut::new(self.addr.add(offset), src.len()) };
        copy_in(dst, src, mode)
    }

    /// Discards the pages of `[offset, offset + size)` (offset and size page
    /// aligned: [`discard_range`]), piece by piece of the layout, as each is
    /// backed ([`Advice::discarding`]): `MADV_REMOVE` over a shared overlay
    /// (a memfd's or file's pages are freed — a hole punched in the file, its
    /// size unchanged — and read as zeros), `MADV_DONTNEED` over a private
    /// one (anonymous memory reads as zeros; a private file overlay reads as
    /// the file again). The mappings stay: views keep seeing the same memory.
    ///
    /// Needs `WRITE` over the whole range: a hole or a piece without it is
    /// [`Error::Access`] and nothing is discarded (discarding is a write, and
    /// `MADV_REMOVE` of memory mapped without write access is the kernel's
    /// `EACCES` anyway). A kernel refusal of one piece (`EPERM` from a memfd
    /// sealed against writes, `EOPNOTSUPP` from a file system that cannot punch
    /// holes, `EINVAL` over locked or huge pages) stops there: the pieces
    /// before it are discarded already. A size of 0 does nothing. (A shared
    /// overlay held privately until the next [`reclaim`](Self::reclaim) — one
    /// made with `WRITE` but not `READ` over just-detached views — is the
    /// kernel's `EACCES` until then.)
    pub fn discard(&self, offset: usize, size: usize) -> Result<()> {
        discard_range(offset, size, self.size)?;
        if size == 0 {
            return Ok(());
        }
        let end = offset + size;
        if self
            .layout
            .check_access(offset, end, Protection::WRITE)
            .is_none()
        {
            return Err(Error::Access {
                offset: offset as u64,
                size: size as u64,
                needed: Protection::WRITE,
            });
        }
        for piece in self.layout.within(offset, end) {
            let shared = matches!(piece.backing, Backing::Fd { shared: true, .. });
            // The piece lies inside the arena (a checked range, cut to a layout
            // entry) and is mapped writable; the layout cannot change while
            // `self` is borrowed. Discarding changes contents only, as a write
            // would; the advice never makes memory fault.
            // SAFETY: as just said: an owned, writable range and a harmless advice.
            unsafe {
                sys::madvise(
                    self.addr.add(piece.offset),
                    piece.size,
                    Advice::discarding(shared).raw(),
                )
            }?;
        }
        Ok(())
    }

    /// After a failed `mmap(MAP_FIXED)`: whatever part of `[start, end)` the
    /// kernel left unmapped is reserved again and recorded as a hole, so that no
    /// other allocation can land inside the arena.
    ///
    /// Needs neither an fd nor memory (a failure can be `EMFILE` or `ENOMEM`):
    /// `msync(MS_ASYNC)` tells whether a range is entirely mapped, and
    /// `MAP_FIXED_NOREPLACE` re-reserves a range only if it is entirely
    /// unmapped; ranges that are neither are halved, so the cost grows with the
    /// number of unmapped pieces, not with the size of the range.
    fn repair(&mut self, start: usize, end: usize) {
        let page = crate::page_size();
        if start >= end {
            return;
        }
        // SAFETY: `[start, end)` lies inside the reservation.
        let addr = unsafe { self.addr.add(start) };
        if sys::fully_mapped(addr, end - start) {
            return;
        }
        // SAFETY: inside our reservation; MAP_FIXED_NOREPLACE fails rather than
        // replace anything that is still mapped there.
        if unsafe { self.reserve_again(addr, end - start) }.is_ok() {
            self.layout.clear(start, end);
            self.fragile.clear(start, end);
            self.opaque.clear(start, end);
            return;
        }
        let pages = (end - start) / page;
        if pages > 1 {
            let mid = start + pages / 2 * page;
            self.repair(start, mid);
            self.repair(mid, end);
            return;
        }
        // One unmapped page that cannot be reserved again (the process is out
        // of mappings): the layout must at least not claim it is mapped.
        self.layout.clear(start, end);
        self.fragile.clear(start, end);
        self.opaque.clear(start, end);
    }

    /// Reserves `[addr, addr + len)` again after it was unmapped.
    ///
    /// # Safety
    /// The range must be inside this arena and unmapped.
    unsafe fn reserve_again(&self, addr: *mut u8, len: usize) -> Result<()> {
        // SAFETY: the caller guarantees the range is ours and unmapped.
        let got = unsafe {
            sys::mmap(
                addr,
                len,
                libc::PROT_NONE,
                RESERVE_FLAGS | libc::MAP_FIXED_NOREPLACE,
                None,
                0,
            )
        }?;
        if got != addr {
            // A kernel without MAP_FIXED_NOREPLACE treated it as a hint.
            // SAFETY: `got` is the mapping just made, owned by nobody else.
            let _ = unsafe { sys::munmap(got, len) };
            return Err(Error::Syscall {
                syscall: "mmap",
                errno: libc::EEXIST,
            });
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_fd_mapping(
        &mut self,
        offset: usize,
        end: usize,
        fd: BorrowedFd<'_>,
        fd_offset: libc::off_t,
        prot: Protection,
        kind: FdKind,
        in_use: bool,
    ) -> Result<()> {
        let FdKind {
            sized,
            plain,
            shared,
            recorded,
            file,
        } = kind;
        let flags = if shared {
            libc::MAP_SHARED
        } else {
            libc::MAP_PRIVATE
        };
        let len = end - offset;
        let private = if in_use && !prot.contains(Protection::READ_WRITE) {
            // SAFETY: `[offset, offset + len)` lies inside the reservation owned
            // by `self`; the caller detached every view over it before this call.
            unsafe { self.map_private_until_reclaim(offset, len, fd, fd_offset, prot) }
        } else {
            None
        };
        let (result, held) = match private {
            Some(dup) => (Ok(()), Some(dup)),
            None => (
                // SAFETY: as above.
                unsafe {
                    sys::mmap(
                        self.addr.add(offset),
                        len,
                        prot.to_prot(),
                        flags | libc::MAP_FIXED,
                        Some(fd),
                        fd_offset,
                    )
                }
                .map(|_| ()),
                None,
            ),
        };
        match result {
            Ok(_) => {
                // Non-negative: checked by `file_offset` when planned.
                let fd_offset = fd_offset as u64;
                let restore = held.map(|fd| Restore::File {
                    fd,
                    fd_offset,
                    prot,
                    shared,
                });
                self.settle_held(offset, end, in_use, restore);
                if sized {
                    self.opaque.clear(offset, end);
                } else {
                    self.opaque
                        .set(offset, end, Backing::Anonymous, Protection::NONE);
                }
                let base = self.addr as usize;
                self.layout.set_file_checked(
                    offset,
                    end,
                    Backing::Fd {
                        fd: recorded,
                        fd_offset,
                        shared,
                    },
                    file,
                    prot,
                    &mut |b| kernel_merged(base + b),
                );
                if plain {
                    self.fragile.clear(offset, end);
                } else {
                    self.fragile
                        .set(offset, end, Backing::Anonymous, Protection::NONE);
                }
                Ok(())
            }
            Err(e) => {
                self.repair(offset, offset + len);
                Err(e)
            }
        }
    }

    fn apply_protect(
        &mut self,
        offset: usize,
        end: usize,
        prot: Protection,
        in_use: bool,
    ) -> Result<()> {
        let (now, restore) = interim(prot, in_use);
        // SAFETY: `[offset, end)` is mapped inside the reservation owned by
        // `self` (planned); views that rely on read-write access were detached.
        let result = unsafe { sys::mprotect(self.addr.add(offset), end - offset, now.to_prot()) };
        if let Err(e) = result {
            // mprotect may have changed part of the range before failing: put
            // back what the layout says, piece by piece.
            for m in self
                .layout
                .iter()
                .filter(|m| m.offset < end && m.offset + m.size > offset)
            {
                let (s, t) = (m.offset.max(offset), (m.offset + m.size).min(end));
                // SAFETY: as above; restoring the protection the layout records.
                let _ = unsafe { sys::mprotect(self.addr.add(s), t - s, m.protection.to_prot()) };
            }
            return Err(e);
        }
        self.settle_held(offset, end, in_use, restore);
        let base = self.addr as usize;
        self.layout
            .set_protection(offset, end, prot, &mut |b| kernel_merged(base + b));
        Ok(())
    }

    fn apply_removal(&mut self, offset: usize, end: usize, in_use: bool) -> Result<()> {
        let len = end - offset;
        // Memory that may still be touched through an old pointer: scratch
        // pages until the reclaim makes the hole (two more kernel mappings
        // meanwhile, if the budget has room; at the limit, the hole at once).
        if in_use && budget::check_room(2).is_ok() {
            // SAFETY: the range is inside our reservation; the caller detached
            // every view over it; fresh private anonymous pages replace it.
            let scratch = unsafe {
                sys::mmap(
                    self.addr.add(offset),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    RESERVE_FLAGS | libc::MAP_FIXED,
                    None,
                    0,
                )
            };
            if scratch.is_ok() {
                self.held.hold(offset, offset + len, Restore::Hole);
                self.layout.clear(offset, offset + len);
                self.fragile.clear(offset, offset + len);
                self.opaque.clear(offset, offset + len);
                return Ok(());
            }
        }
        let result = self.make_hole(offset, len);
        if let Err(Error::Syscall { errno, .. }) = result {
            if errno != libc::ENOMEM {
                // The remap failed before anything changed.
                return result;
            }
        }
        // Removed — or, if re-reserving after the unmap failed, unmapped: either
        // way nothing is mapped there any more.
        self.held.release(offset, offset + len);
        self.layout.clear(offset, offset + len);
        self.fragile.clear(offset, offset + len);
        self.opaque.clear(offset, offset + len);
        result
    }

    /// Kernel mappings (VMAs) this arena occupies: its overlays and the
    /// reserved holes between them.
    pub fn kernel_mapping_count(&self) -> usize {
        self.kernel_mappings
    }

    /// Reports this arena's current kernel mapping count to the budget.
    fn sync_budget(&mut self) {
        // Scratch pages inside a hole are a mapping the layout does not list,
        // and split the hole around them.
        let now = self.layout.kernel_mappings(self.size) + 2 * self.held.holes();
        budget::update(self.kernel_mappings, now);
        self.kernel_mappings = now;
    }
}

/// The protection to map `prot` with now, and what the reclaim must restore:
/// memory that may still be touched through an old pointer (`in_use`) stays
/// read-write until the reclaim applies a narrower `prot`.
fn interim(prot: Protection, in_use: bool) -> (Protection, Option<Restore>) {
    if in_use && !prot.contains(Protection::READ_WRITE) {
        (prot | Protection::READ_WRITE, Some(Restore::Protect(prot)))
    } else {
        (prot, None)
    }
}

/// Whether the kernel merged the two mappings that meet at `addr` (no mapping
/// starts there): one `PROCMAP_QUERY` (O(log n) in the process's mappings), or
/// on older kernels a read of `/proc/self/maps` up to `addr`. Asked only where
/// the layout cannot tell (the same file or an unknown one at contiguous
/// offsets, anonymous neighbours). When it cannot be told (no fd free), they
/// are taken as apart: the budget then counts one too many, never one too few.
fn kernel_merged(addr: usize) -> bool {
    matches!(sys::mapping_starts_at(addr), Ok(false))
}

// SAFETY: `[addr, addr + size)` is reserved or overlaid by this value until drop
// and owned by it alone.
unsafe impl MappedRegion for MemoryMappingArena {
    fn as_ptr(&self) -> *mut u8 {
        self.addr
    }

    fn size(&self) -> usize {
        self.size
    }

    fn add_fd_mapping(
        &mut self,
        offset: usize,
        size: usize,
        fd: BorrowedFd<'_>,
        fd_offset: u64,
        prot: Protection,
    ) -> Result<()> {
        let change = self.plan_fd_mapping(offset, size, fd, fd_offset, prot)?;
        self.apply(change, false)
    }

    fn remove_mapping(&mut self, offset: usize, size: usize) -> Result<()> {
        let change = self.plan_removal(offset, size)?;
        self.apply(change, false)
    }
}

impl Drop for MemoryMappingArena {
    fn drop(&mut self) {
        // SAFETY: the whole reservation is owned by this value and unused after drop.
        let _ = unsafe { sys::munmap(self.addr, self.size) };
        budget::update(self.kernel_mappings, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::unlinked_file;
    use crate::{page_size, SharedMemory};

    use crate::testutil::borrow;
    use crate::Advice;

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
        while unsafe { libc::mprotect(filler.add(2 * split * ps).cast(), ps, libc::PROT_READ) } == 0
        {
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
}

#[cfg(test)]
mod huge_tests {
    use super::*;
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};

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
}

#[cfg(test)]
mod discard_tests {
    use super::*;
    use crate::testutil::unlinked_file;
    use crate::{page_size, MappingOptions, MemoryMapping};

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

    #[test]
    fn a_mapping_discards_by_its_sharing() {
        let ps = page_size();
        let private = MemoryMapping::anonymous(2 * ps, MappingOptions::anonymous()).unwrap();
        let shared = MemoryMapping::anonymous(
            2 * ps,
            MappingOptions {
                shared: true,
                ..MappingOptions::anonymous()
            },
        )
        .unwrap();
        let file = unlinked_file("discard-mapping", &vec![6u8; 2 * ps], false);
        let cow = MemoryMapping::from_fd(
            file.as_fd(),
            2 * ps,
            MappingOptions {
                shared: false,
                ..MappingOptions::fd()
            },
        )
        .unwrap();
        for m in [&private, &shared, &cow] {
            m.write_from(0, &vec![2u8; 2 * ps][..]).unwrap();
            m.discard(ps, ps).unwrap();
            let mut b = vec![0u8; 2 * ps];
            m.read_into(0, &mut b[..]).unwrap();
            assert_eq!(&b[..ps], &vec![2u8; ps][..]);
            let expected = if std::ptr::eq(m, &cow) { 6 } else { 0 };
            assert_eq!(&b[ps..], &vec![expected; ps][..]);
        }
        let ro = MemoryMapping::anonymous(
            ps,
            MappingOptions {
                protection: Protection::READ,
                ..MappingOptions::anonymous()
            },
        )
        .unwrap();
        assert!(matches!(ro.discard(0, ps), Err(Error::Access { .. })));
        assert!(matches!(
            private.discard(0, 3 * ps),
            Err(Error::OutOfBounds { .. })
        ));
    }
}
