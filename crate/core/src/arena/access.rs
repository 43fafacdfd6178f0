//! Using the memory as it is mapped: what the layout says (`mappings`,
//! `check_access`, `direct_mode`), checked copies in and out, and discarding
//! pages. All take `&self`: nothing here changes what is mapped.

use super::MemoryMappingArena;
use crate::copy::{copy_in, copy_out, CopyMode};
use crate::layout::{Backing, MappingInfo};
use crate::rules::{check_bounds, discard_range, Advice};
use crate::{sys, Error, MemSlice, MemSliceMut, Protection, Result};

impl MemoryMappingArena {
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
}
