//! `MemoryMappingArena`: a `PROT_NONE` reservation that fds and anonymous
//! memory are overlaid into and removed from at page granularity. This file is
//! the arena itself: its reservation (made, and given back on drop), its three
//! layouts, the kernel-mapping count it reports and the [`MappedRegion`] trait;
//! what is done with it is in the modules below.

use std::os::fd::BorrowedFd;

use crate::held::HeldRanges;
use crate::layout::Layout;
use crate::rules::check_alignment;
use crate::{budget, sys, Error, MappedRegion, Protection, Result};

mod access;
mod apply;
mod plan;
mod reclaim;
mod repair;
#[cfg(test)]
mod tests;

pub use plan::Change;

/// The flags of the `PROT_NONE` reservation and of every hole made in it again.
const RESERVE_FLAGS: libc::c_int = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;

/// A reserved range of address space with tracked overlays.
#[derive(Debug)]
pub struct MemoryMappingArena {
    addr: *mut u8,
    size: usize,
    /// What is mapped where, merged where the kernel merged the mappings.
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

    /// Makes `[start, end)` a hole in all three layouts: where a change
    /// unmapped the range or found it unmapped (nothing there is mapped, so
    /// nothing is fragile or opaque either), and before anonymous memory,
    /// which is neither, is recorded there.
    fn clear_layouts(&mut self, start: usize, end: usize) {
        self.layout.clear(start, end);
        self.fragile.clear(start, end);
        self.opaque.clear(start, end);
    }
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
