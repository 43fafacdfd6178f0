//! The `MappedRegion` trait, range validation shared by every region, and the
//! operations any region offers (`msync`, `madvise`, checked copies).

use std::os::fd::AsRawFd;
use std::sync::OnceLock;

use crate::{budget, copy, page_size, sys, Error, Protection, Result};

/// A region of mapped memory that this process owns.
///
/// # Safety
/// Implementors guarantee that `[as_ptr(), as_ptr() + size())` stays mapped (at
/// least reserved) for as long as the value lives, and that it is owned by the
/// value, so that `msync`/`madvise` over any sub-range touch nothing else.
pub unsafe trait MappedRegion: Send + Sync {
    /// The start of the region.
    fn as_ptr(&self) -> *mut u8;

    /// The size of the region in bytes.
    fn size(&self) -> usize;

    /// Maps `size` bytes of `fd` from `fd_offset` at `offset` inside the region.
    fn add_fd_mapping(
        &mut self,
        _offset: usize,
        _size: usize,
        _fd: &dyn AsRawFd,
        _fd_offset: u64,
        _prot: Protection,
    ) -> Result<()> {
        Err(Error::Unsupported {
            operation: "addFdMapping",
        })
    }

    /// Replaces `[offset, offset + size)` by a reserved `PROT_NONE` range.
    fn remove_mapping(&mut self, _offset: usize, _size: usize) -> Result<()> {
        Err(Error::Unsupported {
            operation: "removeMapping",
        })
    }
}

impl dyn MappedRegion + '_ {
    /// `msync(MS_SYNC)` over the pages touched by `[offset, offset + size)`.
    /// `offset` must be page aligned. A size of 0 does nothing.
    pub fn msync(&self, offset: usize, size: usize) -> Result<()> {
        let len = check_syscall_range(offset, size, self.size())?;
        if len == 0 {
            return Ok(());
        }
        // SAFETY: the range was checked to lie inside the region, which the
        // MappedRegion contract says is mapped and owned by `self`.
        unsafe { sys::msync(self.as_ptr().add(offset), len, libc::MS_SYNC) }
    }

    /// `madvise(advice)` over the pages touched by `[offset, offset + size)`.
    /// `offset` must be page aligned; advices that could make a later access
    /// fault (poisoning, guard pages) are refused. A size of 0 does nothing.
    pub fn madvise(&self, offset: usize, size: usize, advice: i32) -> Result<()> {
        check_advice(advice)?;
        let len = check_syscall_range(offset, size, self.size())?;
        if len == 0 {
            return Ok(());
        }
        // SAFETY: as for msync; the advice cannot turn memory into a trap, see
        // check_advice.
        unsafe { madvise_range(self.as_ptr().add(offset), len, advice) }
    }
}

/// `MADV_POPULATE_READ` (Linux 5.14).
pub const MADV_POPULATE_READ: i32 = 22;
/// `MADV_POPULATE_WRITE` (Linux 5.14).
pub const MADV_POPULATE_WRITE: i32 = 23;

/// `msync(MS_SYNC)` of `[addr, addr + len)`, for callers that validated the range
/// already (e.g. a worker thread running an asynchronous msync).
///
/// # Safety
/// The range must lie inside a mapping that stays mapped for the whole call.
pub unsafe fn msync_range(addr: *mut u8, len: usize) -> Result<()> {
    // SAFETY: guaranteed by the caller.
    unsafe { sys::msync(addr, len, libc::MS_SYNC) }
}

/// `madvise(advice)` of `[addr, addr + len)` for callers that validated the
/// range already; refuses the advices [`check_advice`] refuses.
///
/// # Safety
/// The range must lie inside a mapping the caller owns, mapped for the whole call.
pub unsafe fn madvise_range(addr: *mut u8, len: usize, advice: i32) -> Result<()> {
    check_advice(advice)?;
    let splits = len > 0 && advice_may_split(advice);
    if splits {
        // Changing the flags of part of a mapping splits it: up to two more
        // kernel mappings, which must fit in the map-count budget like any other.
        budget::check_room(2)?;
    }
    // SAFETY: guaranteed by the caller; the advice cannot make memory fault.
    let result = unsafe { sys::madvise(addr, len, advice) };
    if splits {
        // Even a failed call may have split the mappings it got to.
        budget::note_untracked(2);
    }
    result
}

/// Whether `advice` changes a mapping's flags (and so may split it): every
/// advice except those known to act on pages only. Unknown raw numbers are
/// assumed to split.
pub fn advice_may_split(advice: i32) -> bool {
    // WILLNEED, DONTNEED, FREE, REMOVE, COLD, PAGEOUT, POPULATE_READ/_WRITE,
    // DONTNEED_LOCKED, COLLAPSE, SOFT_OFFLINE, GUARD_REMOVE.
    const PAGES_ONLY: [i32; 12] = [3, 4, 8, 9, 20, 21, 22, 23, 24, 25, 101, 103];
    !PAGES_ONLY.contains(&advice)
}

/// Prefaults `[addr, addr + len)` with `MADV_POPULATE_READ`/`_WRITE`, in chunks
/// so that the process's memory-map lock is released between them (other
/// threads that map or unmap memory are not stalled for the whole range).
/// Where the kernel lacks these advices (before 5.14), touches each page
/// instead through a fault-safe read, which prefaults for reading.
///
/// # Safety
/// The range must be page aligned and lie inside a mapping that stays mapped for
/// the whole call.
pub unsafe fn populate_range(addr: *mut u8, len: usize, write: bool) -> Result<()> {
    const CHUNK: usize = 8 << 20;
    if !populate_supported() {
        // SAFETY: guaranteed by the caller.
        return unsafe { touch_pages(addr, len) };
    }
    let advice = if write {
        MADV_POPULATE_WRITE
    } else {
        MADV_POPULATE_READ
    };
    let mut done = 0;
    while done < len {
        let n = CHUNK.min(len - done);
        // SAFETY: guaranteed by the caller; populating never changes contents.
        unsafe { sys::madvise(addr.add(done), n, advice) }?;
        done += n;
    }
    Ok(())
}

/// Whether the kernel knows `MADV_POPULATE_READ`, probed once on a private page.
pub fn populate_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let Ok(probe) =
            crate::MemoryMapping::anonymous(page_size(), crate::MappingOptions::anonymous())
        else {
            return false;
        };
        let region: &dyn MappedRegion = &probe;
        // SAFETY: the probe page is a live private mapping owned here.
        !matches!(
            unsafe { sys::madvise(region.as_ptr(), page_size(), MADV_POPULATE_READ) },
            Err(Error::Syscall {
                errno: libc::EINVAL,
                ..
            })
        )
    })
}

/// Reads one byte of every page of `[addr, addr + len)` through
/// `process_vm_readv`, so that a page that cannot be faulted in is `EFAULT`
/// (including `PROT_NONE` holes, which a guarded copy would not catch).
///
/// # Safety
/// The range must lie inside a mapping that stays mapped for the whole call.
pub unsafe fn touch_pages(addr: *mut u8, len: usize) -> Result<()> {
    // SAFETY: guaranteed by the caller; the probe reads through the kernel.
    unsafe { copy::probe_pages(addr, len) }
}

/// `MADV_HWPOISON` and `MADV_GUARD_INSTALL` turn pages into traps: a later
/// access through a view or a copy would kill the process.
const FORBIDDEN_ADVICE: [i32; 2] = [100, 102];

/// Refuses negative advices and those that make memory fault on access.
pub fn check_advice(advice: i32) -> Result<()> {
    if advice < 0 || FORBIDDEN_ADVICE.contains(&advice) {
        return Err(Error::OutOfRange {
            what: "advice",
            reason: format!(
                "{advice} is not an advice this library passes on (it could make the memory fault)"
            ),
        });
    }
    Ok(())
}

/// Checks that `offset` is page aligned.
pub fn check_aligned(what: &'static str, value: u64) -> Result<()> {
    if !value.is_multiple_of(page_size() as u64) {
        return Err(Error::Unaligned { what, value });
    }
    Ok(())
}

/// Checks that `[offset, offset + size)` lies inside `[0, limit)`, without overflow.
/// Returns the end of the range.
pub fn check_bounds(offset: usize, size: usize, limit: usize) -> Result<usize> {
    match offset.checked_add(size) {
        Some(end) if end <= limit => Ok(end),
        _ => Err(Error::OutOfBounds {
            offset: offset as u64,
            size: size as u64,
            limit: limit as u64,
        }),
    }
}

/// `size` rounded up to whole pages, or `None` on overflow.
pub fn round_up_to_page(size: usize) -> Option<usize> {
    let mask = page_size() - 1;
    size.checked_add(mask).map(|s| s & !mask)
}

/// Validation of a range that starts a kernel call: aligned offset, in bounds.
/// Returns the length in whole pages the call covers.
pub fn check_syscall_range(offset: usize, size: usize, limit: usize) -> Result<usize> {
    check_aligned("offset", offset as u64)?;
    check_bounds(offset, size, limit)?;
    // offset + size <= limit; the pages it touches stay inside the mapping, whose
    // length is whole pages. round_up cannot overflow as size <= limit.
    Ok(round_up_to_page(size).unwrap_or(size))
}

/// Validation of a range that creates or removes a mapping: also size > 0.
pub(crate) fn check_mapping_range(offset: usize, size: usize, limit: usize) -> Result<usize> {
    if size == 0 {
        return Err(Error::ZeroSize { what: "size" });
    }
    check_syscall_range(offset, size, limit)
}

/// How a checked copy may touch the memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyMode {
    /// Memory that cannot vanish under the mapping (anonymous memory): plain copy.
    Plain,
    /// Memory that might (a file someone could truncate): fault-safe copy.
    FaultSafe,
}

/// Copies `dst.len()` bytes from `base + offset` after the caller checked access.
///
/// # Safety
/// `[base + offset, base + offset + dst.len())` must be mapped readable for the
/// whole call; with `CopyMode::Plain` it must also be backed by memory that
/// cannot fault (anonymous or sealed against shrinking).
pub(crate) unsafe fn copy_out(
    base: *mut u8,
    offset: usize,
    dst: &mut [u8],
    mode: CopyMode,
) -> Result<()> {
    // SAFETY: the caller checked that the source range is inside the mapping.
    let src = unsafe { base.add(offset) };
    match mode {
        // SAFETY: readable, non-faulting memory of dst.len() bytes; `dst` may be
        // a view of the same mapping, hence `copy` (memmove), not a non-overlapping copy.
        CopyMode::Plain => unsafe {
            std::ptr::copy(src, dst.as_mut_ptr(), dst.len());
            Ok(())
        },
        // SAFETY: the layout says the range is readable; a page that vanished
        // under it is EFAULT instead of a signal.
        CopyMode::FaultSafe => unsafe { copy::read_fault_safe(src, dst) },
    }
}

/// Copies `src` to `base + offset` after the caller checked access.
///
/// # Safety
/// As [`copy_out`], with the range mapped writable.
pub(crate) unsafe fn copy_in(
    base: *mut u8,
    offset: usize,
    src: &[u8],
    mode: CopyMode,
) -> Result<()> {
    // SAFETY: the caller checked that the destination range is inside the mapping.
    let dst = unsafe { base.add(offset) };
    match mode {
        // SAFETY: writable, non-faulting memory; `src` is a Rust slice, which may
        // alias the mapping only if the caller passed a view, hence `copy`.
        CopyMode::Plain => unsafe {
            std::ptr::copy(src.as_ptr(), dst, src.len());
            Ok(())
        },
        // SAFETY: the layout says the range is writable; a page that vanished
        // under it is EFAULT instead of a signal.
        CopyMode::FaultSafe => unsafe { copy::write_fault_safe(dst, src) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_reject_overflow_and_past_end() {
        assert_eq!(check_bounds(0, 10, 10), Ok(10));
        assert!(matches!(
            check_bounds(5, 6, 10),
            Err(Error::OutOfBounds { .. })
        ));
        assert!(matches!(
            check_bounds(usize::MAX, 2, usize::MAX),
            Err(Error::OutOfBounds { .. })
        ));
    }

    #[test]
    fn alignment_and_zero_size() {
        let ps = page_size();
        assert!(matches!(
            check_mapping_range(1, ps, 4 * ps),
            Err(Error::Unaligned {
                what: "offset",
                value: 1
            })
        ));
        assert!(matches!(
            check_mapping_range(0, 0, 4 * ps),
            Err(Error::ZeroSize { .. })
        ));
        assert_eq!(check_mapping_range(ps, 1, 4 * ps), Ok(ps));
        assert_eq!(check_syscall_range(0, 0, 4 * ps), Ok(0));
    }

    #[test]
    fn populate_and_touch_fault_in_pages() {
        use crate::{MappingOptions, MemoryMapping};
        let ps = page_size();
        let m = MemoryMapping::anonymous(4 * ps, MappingOptions::anonymous()).unwrap();
        let region: &dyn MappedRegion = &m;
        // SAFETY: the range is the whole live mapping.
        unsafe {
            populate_range(region.as_ptr(), 4 * ps, true).unwrap();
            populate_range(region.as_ptr(), 4 * ps, false).unwrap();
            touch_pages(region.as_ptr(), 4 * ps).unwrap();
            msync_range(region.as_ptr(), 4 * ps).unwrap();
        }
        let mut resident = [0u8; 4];
        // SAFETY: mincore writes one byte per page of the live mapping.
        let ret = unsafe { libc::mincore(region.as_ptr().cast(), 4 * ps, resident.as_mut_ptr()) };
        assert_eq!(ret, 0);
        assert!(resident.iter().all(|r| r & 1 == 1));
        let none = MemoryMapping::anonymous(
            ps,
            MappingOptions {
                protection: Protection::NONE,
                ..MappingOptions::anonymous()
            },
        )
        .unwrap();
        assert!(populate_supported());
        // SAFETY: the range is the whole live mapping; PROT_NONE makes it fail
        // with the kernel's own error, not the fallback's.
        let err = unsafe { populate_range(none.as_ptr(), ps, false) }.unwrap_err();
        assert_eq!(err.syscall().map(|(_, call)| call), Some("madvise"));
        // SAFETY: as above; the fault-safe touch reports EFAULT.
        let touched = unsafe { touch_pages(none.as_ptr(), ps) };
        assert_eq!(touched.unwrap_err().code(), "EFAULT");
    }

    #[test]
    fn dangerous_advices_are_refused() {
        use crate::{MappingOptions, MemoryMapping};
        let m = MemoryMapping::anonymous(page_size(), MappingOptions::anonymous()).unwrap();
        let region: &dyn MappedRegion = &m;
        // SAFETY: the range is the whole live mapping.
        unsafe {
            madvise_range(region.as_ptr(), page_size(), libc::MADV_WILLNEED).unwrap();
            assert!(matches!(
                madvise_range(region.as_ptr(), page_size(), 100),
                Err(Error::OutOfRange { .. })
            ));
        }
        assert!(check_advice(libc::MADV_WILLNEED).is_ok());
        assert!(check_advice(100).is_err());
        assert!(check_advice(102).is_err());
        assert!(check_advice(-1).is_err());
    }
}
