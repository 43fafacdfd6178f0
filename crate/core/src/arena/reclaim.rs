//! Memory held for pointers taken before a change: which ranges are held and
//! how (`hold_in_use`, `settle_held`, the private stand-in for a shared file
//! mapping), and `reclaim`, which gives each held range what its change asked
//! for once no such pointer can be in use.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use super::MemoryMappingArena;
use crate::held::Restore;
use crate::rules::{file_offset, round_up_to_page};
use crate::{sys, Protection, Result};

impl MemoryMappingArena {
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
    pub(super) fn settle_held(
        &mut self,
        start: usize,
        end: usize,
        in_use: bool,
        restore: Option<Restore>,
    ) {
        match restore {
            Some(restore) => self.held.hold(start, end, restore),
            None if in_use => self.held.hold(start, end, Restore::Keep),
            None => self.held.release(start, end),
        }
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
    pub(super) unsafe fn map_private_until_reclaim(
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

    /// Whether some range is held until [`reclaim`](Self::reclaim).
    pub fn has_held(&self) -> bool {
        !self.held.is_empty()
    }

    /// The ranges held until [`reclaim`](Self::reclaim), `[start, end)`:
    /// what it will map anew.
    pub fn held_ranges(&self) -> Vec<(usize, usize)> {
        self.held.ranges().collect()
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
                        self.clear_layouts(h.start, h.end);
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
}
