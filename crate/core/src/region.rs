//! The `MappedRegion` trait and the operations every region offers (`msync`,
//! `madvise`, prefaulting, checked copies). The argument rules they apply
//! live in [`rules`](crate::rules).

use std::os::fd::BorrowedFd;
use std::sync::OnceLock;

use crate::rules::{syscall_range, Advice};
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
    /// Only arenas can; other regions refuse with [`Error::Unsupported`].
    fn add_fd_mapping(
        &mut self,
        _offset: usize,
        _size: usize,
        _fd: BorrowedFd<'_>,
        _fd_offset: u64,
        _prot: Protection,
    ) -> Result<()> {
        Err(unsupported("addFdMapping"))
    }

    /// Replaces `[offset, offset + size)` by a reserved `PROT_NONE` range.
    /// Only arenas can; other regions refuse with [`Error::Unsupported`].
    fn remove_mapping(&mut self, _offset: usize, _size: usize) -> Result<()> {
        Err(unsupported("removeMapping"))
    }
}

/// The error of an operation a kind of region does not have.
pub(crate) fn unsupported(operation: &'static str) -> Error {
    Error::Unsupported { operation }
}

impl dyn MappedRegion + '_ {
    /// `msync(MS_SYNC)` over the pages touched by `[offset, offset + size)`.
    /// `offset` must be page aligned. A size of 0 does nothing.
    pub fn msync(&self, offset: usize, size: usize) -> Result<()> {
        let range = self.page_range(offset, size)?;
        // SAFETY: the range lies inside the region, which the MappedRegion
        // contract keeps mapped while `self` is borrowed.
        unsafe { range.msync() }
    }

    /// `madvise(advice)` over the pages touched by `[offset, offset + size)`.
    /// `offset` must be page aligned. A size of 0 does nothing.
    pub fn madvise(&self, offset: usize, size: usize, advice: Advice) -> Result<()> {
        let range = self.page_range(offset, size)?;
        // SAFETY: as for msync; `Advice` cannot turn memory into a trap.
        unsafe { range.madvise(advice) }
    }

    /// `mlock` over the pages touched by `[offset, offset + size)`: they stay
    /// in RAM (with `on_fault`, `mlock2(MLOCK_ONFAULT)`: each once first
    /// touched, instead of all now). Limited by `RLIMIT_MEMLOCK` (`ENOMEM`,
    /// or `EPERM` without the privilege). A size of 0 does nothing.
    pub fn mlock(&self, offset: usize, size: usize, on_fault: bool) -> Result<()> {
        let range = self.page_range(offset, size)?;
        // SAFETY: as for msync; locking never changes contents.
        unsafe { range.mlock(on_fault) }
    }

    /// `munlock` over the pages touched by `[offset, offset + size)`.
    pub fn munlock(&self, offset: usize, size: usize) -> Result<()> {
        let range = self.page_range(offset, size)?;
        // SAFETY: as for msync.
        unsafe { range.munlock() }
    }

    /// The pages touched by `[offset, offset + size)`, validated for a kernel
    /// call made later (e.g. on a worker thread).
    pub fn page_range(&self, offset: usize, size: usize) -> Result<PageRange> {
        Span::of(self).page_range(offset, size)
    }
}

/// Where a region lies — its start and size — copied out of it, so that a
/// caller that keeps the region mapped by other means (the Node binding: an
/// open object owns its region) can validate a kernel call's range without
/// borrowing the region, and so without its lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    addr: usize,
    size: usize,
}

impl Span {
    /// The span of `region`.
    pub fn of(region: &(dyn MappedRegion + '_)) -> Span {
        Span {
            addr: region.as_ptr() as usize,
            size: region.size(),
        }
    }

    /// The start address.
    pub fn addr(&self) -> usize {
        self.addr
    }

    /// The size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The pages touched by `[offset, offset + size)` (the rule of
    /// [`syscall_range`]: `offset` page aligned, the range inside the span).
    #[inline]
    pub fn page_range(&self, offset: usize, size: usize) -> Result<PageRange> {
        let len = syscall_range(offset, size, self.size)?;
        Ok(PageRange {
            // Inside the region: offset + size <= self.size.
            addr: self.addr + offset,
            len,
        })
    }
}

/// Whole pages of a region, validated by [`page_range`](MappedRegion::size)
/// and not tied to its borrow, so that a kernel call over them can run on
/// another thread. Whoever holds one keeps the region mapped until the call
/// returns (the binding counts it as a pending operation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRange {
    addr: usize,
    len: usize,
}

impl PageRange {
    /// The length in bytes (whole pages; 0 for an empty range).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `msync(MS_SYNC)` of the range.
    ///
    /// # Safety
    /// The region the range came from must still be mapped for the whole call.
    pub unsafe fn msync(&self) -> Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        // SAFETY: guaranteed by the caller.
        unsafe { sys::msync(self.addr as *mut u8, self.len, libc::MS_SYNC) }
    }

    /// `madvise(advice)` of the range. An advice that changes the mappings'
    /// flags may split them: it must fit in the map-count budget.
    ///
    /// # Safety
    /// As [`msync`](Self::msync).
    pub unsafe fn madvise(&self, advice: Advice) -> Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        let call = || {
            // SAFETY: guaranteed by the caller; the advice cannot make memory fault.
            unsafe { sys::madvise(self.addr as *mut u8, self.len, advice.raw()) }
        };
        if advice.may_split() {
            splitting(call)
        } else {
            call()
        }
    }

    /// `mlock` of the range (`mlock2(MLOCK_ONFAULT)` with `on_fault`).
    /// Locking changes the mappings' flags, so it may split them.
    ///
    /// # Safety
    /// As [`msync`](Self::msync).
    pub unsafe fn mlock(&self, on_fault: bool) -> Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        // SAFETY: guaranteed by the caller; locking never changes contents.
        splitting(|| unsafe { sys::mlock(self.addr as *mut u8, self.len, on_fault) })
    }

    /// `munlock` of the range; may split mappings like [`mlock`](Self::mlock).
    ///
    /// # Safety
    /// As [`msync`](Self::msync).
    pub unsafe fn munlock(&self) -> Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        // SAFETY: guaranteed by the caller.
        splitting(|| unsafe { sys::munlock(self.addr as *mut u8, self.len) })
    }

    /// Prefaults the range with `MADV_POPULATE_READ`/`_WRITE`, in chunks so
    /// that the process's memory-map lock is released between them. Where the
    /// kernel lacks these advices (before 5.14), touches each page through a
    /// fault-safe read instead, which prefaults for reading.
    ///
    /// # Safety
    /// As [`msync`](Self::msync).
    pub unsafe fn populate(&self, write: bool) -> Result<()> {
        const CHUNK: usize = 8 << 20;
        let addr = self.addr as *mut u8;
        if !populate_supported() {
            // SAFETY: guaranteed by the caller; the probe reads through the kernel.
            return unsafe { copy::probe_pages(addr, self.len) };
        }
        let advice = if write {
            Advice::POPULATE_WRITE
        } else {
            Advice::POPULATE_READ
        };
        let mut done = 0;
        while done < self.len {
            let n = CHUNK.min(self.len - done);
            // SAFETY: guaranteed by the caller; populating never changes contents.
            unsafe { sys::madvise(addr.add(done), n, advice.raw()) }?;
            done += n;
        }
        Ok(())
    }
}

/// Runs a call that changes the flags of part of a mapping, which splits it
/// into up to two more kernel mappings: they must fit in the map-count budget
/// like any other, and are counted even when the call fails (it may have
/// split the mappings it got to).
fn splitting(call: impl FnOnce() -> Result<()>) -> Result<()> {
    budget::check_room(2)?;
    let result = call();
    budget::note_untracked(2);
    result
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
            unsafe { sys::madvise(region.as_ptr(), page_size(), Advice::POPULATE_READ.raw(),) },
            Err(Error::Syscall {
                errno: libc::EINVAL,
                ..
            })
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn populate_and_touch_fault_in_pages() {
        use crate::{MappingOptions, MemoryMapping};
        let ps = page_size();
        let m = MemoryMapping::anonymous(4 * ps, MappingOptions::anonymous()).unwrap();
        let region: &dyn MappedRegion = &m;
        let range = region.page_range(0, 4 * ps).unwrap();
        assert_eq!(range.len(), 4 * ps);
        // SAFETY: the range is the whole live mapping.
        unsafe {
            range.populate(true).unwrap();
            range.populate(false).unwrap();
            copy::probe_pages(region.as_ptr(), 4 * ps).unwrap();
            range.msync().unwrap();
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
        let none_region: &dyn MappedRegion = &none;
        let range = none_region.page_range(0, ps).unwrap();
        // SAFETY: the range is the whole live mapping; PROT_NONE makes it fail
        // with the kernel's own error, not the fallback's.
        let err = unsafe { range.populate(false) }.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Syscall {
                    syscall: "madvise",
                    ..
                }
            ),
            "{err:?}"
        );
        // SAFETY: as above; the fault-safe touch reports EFAULT.
        let touched = unsafe { copy::probe_pages(none.as_ptr(), ps) };
        assert_eq!(touched.unwrap_err().errno(), Some(libc::EFAULT));
    }

    #[test]
    fn mlock_and_munlock_lock_the_pages_in_place() {
        use crate::{MappingOptions, MemoryMapping};
        let ps = page_size();
        let m = MemoryMapping::anonymous(2 * ps, MappingOptions::anonymous()).unwrap();
        m.write_from(0, b"kept").unwrap();
        let region: &dyn MappedRegion = &m;
        region.mlock(0, ps, false).unwrap();
        match region.mlock(ps, ps, true) {
            Ok(()) => {}
            // valgrind does not know mlock2 (kernels before 4.4 neither).
            Err(e) if std::env::var_os("MR_UNDER_VALGRIND").is_some() => {
                assert_eq!(e.errno(), Some(libc::ENOSYS), "{e:?}")
            }
            Err(e) => panic!("{e:?}"),
        }
        region.munlock(0, 2 * ps).unwrap();
        region.mlock(0, 0, false).unwrap();
        let mut b = [0u8; 4];
        m.read_into(0, &mut b).unwrap();
        assert_eq!(&b, b"kept");
        assert!(matches!(
            region.mlock(1, ps, false),
            Err(Error::Unaligned { .. })
        ));
        assert!(matches!(
            region.munlock(0, 3 * ps),
            Err(Error::OutOfBounds { .. })
        ));
    }

    #[test]
    fn ranges_are_checked_before_the_kernel_call() {
        use crate::{MappingOptions, MemoryMapping};
        let ps = page_size();
        let m = MemoryMapping::anonymous(ps, MappingOptions::anonymous()).unwrap();
        let region: &dyn MappedRegion = &m;
        let willneed = Advice::new(libc::MADV_WILLNEED).unwrap();
        region.madvise(0, ps, willneed).unwrap();
        region.madvise(0, 0, willneed).unwrap();
        region.msync(0, ps).unwrap();
        assert!(matches!(region.msync(1, ps), Err(Error::Unaligned { .. })));
        assert!(matches!(
            region.madvise(0, ps + 1, willneed),
            Err(Error::OutOfBounds { .. })
        ));
    }
}
