//! Keeping the reservation whole: a removed range becomes a reserved
//! `PROT_NONE` hole again (`make_hole`), and whatever a failed `mmap` left
//! unmapped is reserved again (`repair`), so that nothing else in the process
//! can be mapped inside the arena.

use super::{MemoryMappingArena, RESERVE_FLAGS};
use crate::{sys, Error, Result};

impl MemoryMappingArena {
    /// Replaces `[offset, offset + len)` by a reserved `PROT_NONE` range. At
    /// the map-count limit the remap cannot split a mapping; unmapping whole
    /// mappings frees entries, then the hole is reserved again. Another thread
    /// could map into the hole in between: a narrow, documented race.
    #[inline]
    pub(super) fn make_hole(&mut self, offset: usize, len: usize) -> Result<()> {
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

    /// After a failed `mmap(MAP_FIXED)`: whatever part of `[start, end)` the
    /// kernel left unmapped is reserved again and recorded as a hole, so that no
    /// other allocation can land inside the arena.
    ///
    /// Needs neither an fd nor memory (a failure can be `EMFILE` or `ENOMEM`):
    /// `msync(MS_ASYNC)` tells whether a range is entirely mapped, and
    /// `MAP_FIXED_NOREPLACE` re-reserves a range only if it is entirely
    /// unmapped; ranges that are neither are halved, so the cost grows with the
    /// number of unmapped pieces, not with the size of the range.
    pub(super) fn repair(&mut self, start: usize, end: usize) {
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
            self.clear_layouts(start, end);
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
        self.clear_layouts(start, end);
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
}
