//! `MemoryMapping`: one mapping, anonymous or of an fd.

use std::os::fd::BorrowedFd;

use crate::copy::{copy_in, copy_out, CopyMode};
use crate::rules::{
    check_bounds, check_eof, check_huge, discard_range, file_offset, mapping_len, round_up_to_page,
    Advice,
};
use crate::{budget, sys, Error, MappedRegion, MemSlice, MemSliceMut, Protection, Result};

/// Options of [`MemoryMapping::anonymous`] and [`MemoryMapping::from_fd`].
#[derive(Clone, Copy, Debug)]
pub struct MappingOptions {
    /// The access the mapping allows.
    pub protection: Protection,
    /// `MAP_POPULATE`: prefault the pages.
    pub populate: bool,
    /// `MAP_SHARED` instead of `MAP_PRIVATE`.
    pub shared: bool,
    /// For fds: the file offset, page aligned.
    pub offset: u64,
    /// For fds that are regular files: refuse a mapping past the end of the file.
    pub check_eof: bool,
}

impl MappingOptions {
    /// Defaults for anonymous memory: read-write, private.
    pub fn anonymous() -> MappingOptions {
        MappingOptions {
            protection: Protection::READ_WRITE,
            populate: false,
            shared: false,
            offset: 0,
            check_eof: true,
        }
    }

    /// Defaults for an fd: read-write, shared, offset 0, EOF checked.
    pub fn fd() -> MappingOptions {
        MappingOptions {
            shared: true,
            ..MappingOptions::anonymous()
        }
    }
}

/// A single mapping that is unmapped when dropped.
#[derive(Debug)]
pub struct MemoryMapping {
    addr: *mut u8,
    size: usize,
    mapped_len: usize,
    protection: Protection,
    /// `MAP_SHARED` (shared memory, or a file whose pages are the file's) or
    /// `MAP_PRIVATE`: what discarding its pages means.
    shared: bool,
    copy_mode: CopyMode,
    /// Bytes from the start that may be touched directly (by a view): the whole
    /// mapping, except for a file mapped past its end with `check_eof: false`,
    /// where pages past the end would raise `SIGBUS`.
    direct_limit: usize,
}

// SAFETY: the mapping is plain memory owned by this value; the pointer is never
// used to create Rust references, so moving or sharing it across threads is safe.
unsafe impl Send for MemoryMapping {}
// SAFETY: see Send; every access goes through syscalls or explicit copies.
unsafe impl Sync for MemoryMapping {}

impl MemoryMapping {
    /// Maps `size` bytes of anonymous memory.
    pub fn anonymous(size: usize, options: MappingOptions) -> Result<MemoryMapping> {
        let mapped_len = mapping_len(size)?;
        budget::check_room(1)?;
        let mut flags = libc::MAP_ANONYMOUS;
        flags |= if options.shared {
            libc::MAP_SHARED
        } else {
            libc::MAP_PRIVATE
        };
        if options.populate {
            // Memory faulted in now is committed now: without MAP_NORESERVE the
            // kernel's overcommit check refuses a size the machine cannot hold
            // (ENOMEM) instead of faulting it in until the OOM killer strikes.
            flags |= libc::MAP_POPULATE;
        } else {
            flags |= libc::MAP_NORESERVE;
        }
        // SAFETY: no MAP_FIXED: the kernel picks free address space.
        let addr = unsafe {
            sys::mmap(
                sys::no_hint(),
                mapped_len,
                options.protection.to_prot(),
                flags,
                None,
                0,
            )
        }?;
        budget::update(0, 1);
        Ok(MemoryMapping {
            addr,
            size,
            mapped_len,
            protection: options.protection,
            shared: options.shared,
            copy_mode: CopyMode::Plain,
            direct_limit: size,
        })
    }

    /// Maps `size` bytes of `fd` from `options.offset`.
    pub fn from_fd(
        fd: BorrowedFd<'_>,
        size: usize,
        options: MappingOptions,
    ) -> Result<MemoryMapping> {
        let mapped_len = mapping_len(size)?;
        let offset = file_offset("offset", options.offset)?;
        let sys::Mappable {
            size: file_size,
            identity,
            huge_page,
        } = sys::mappable(fd)?;
        if let Some(huge) = huge_page {
            check_huge(None, size, options.offset, huge)?;
        }
        budget::check_room(1)?;
        // An fd whose size cannot be checked (a device) gets no view at all: its
        // mapping may fault wherever its driver says (a shared /dev/zero at a
        // non-zero offset faults on every page); copies are fault-safe.
        let mut direct_limit = if file_size.is_some() { size } else { 0 };
        if let Some(file_size) = file_size {
            if options.check_eof {
                check_eof(options.offset, size, file_size)?;
            }
            let backed = file_size.saturating_sub(options.offset);
            let backed = round_up_to_page(usize::try_from(backed).unwrap_or(usize::MAX))
                .unwrap_or(usize::MAX);
            direct_limit = size.min(backed);
        }
        let mut flags = if options.shared {
            libc::MAP_SHARED
        } else {
            libc::MAP_PRIVATE
        };
        if options.populate {
            flags |= libc::MAP_POPULATE;
        }
        // SAFETY: no MAP_FIXED: the kernel picks free address space.
        let addr = unsafe {
            sys::mmap(
                sys::no_hint(),
                mapped_len,
                options.protection.to_prot(),
                flags,
                Some(fd),
                offset,
            )
        }?;
        budget::update(0, 1);
        // Pages past the end of the file raise SIGBUS whatever the seals say: a
        // mapping that reaches past the end always copies fault-safely.
        let copy_mode = if direct_limit < size {
            CopyMode::FaultSafe
        } else {
            copy_mode_for_fd(fd, identity)
        };
        Ok(MemoryMapping {
            addr,
            size,
            mapped_len,
            protection: options.protection,
            shared: options.shared,
            copy_mode,
            direct_limit,
        })
    }

    /// The protection the mapping was made with.
    pub fn protection(&self) -> Protection {
        self.protection
    }

    /// Discards the pages of `[offset, offset + size)` (offset and size page
    /// aligned): `MADV_REMOVE` for a shared mapping (its memfd's, shared
    /// anonymous memory's or file's pages are freed — a hole punched in the
    /// file, its size unchanged — and read as zeros), `MADV_DONTNEED` for a
    /// private one (anonymous memory reads as zeros, a private file mapping as
    /// the file again). Needs `WRITE` ([`Error::Access`] otherwise). A size of
    /// 0 does nothing. See [`MemoryMappingArena::discard`](crate::MemoryMappingArena::discard).
    pub fn discard(&self, offset: usize, size: usize) -> Result<()> {
        discard_range(offset, size, self.size)?;
        if size == 0 {
            return Ok(());
        }
        if !self.protection.contains(Protection::WRITE) {
            return Err(Error::Access {
                offset: offset as u64,
                size: size as u64,
                needed: Protection::WRITE,
            });
        }
        // SAFETY: the range is inside the mapping, which `self` owns and keeps
        // mapped while borrowed, and writable; discarding changes contents
        // only, as a write would; the advice never makes memory fault.
        unsafe {
            sys::madvise(
                self.addr.add(offset),
                size,
                Advice::discarding(self.shared).raw(),
            )
        }
    }

    /// Copies `dst.len()` bytes from `offset` into `dst` (which may be a view
    /// of this mapping); needs `READ`. Faults become `EFAULT`.
    pub fn read_into<'a>(&self, offset: usize, dst: impl Into<MemSliceMut<'a>>) -> Result<()> {
        let dst = dst.into();
        check_bounds(offset, dst.len(), self.size)?;
        self.check_access(offset, dst.len(), Protection::READ)?;
        // SAFETY: the range is inside the mapping, which is readable and stays
        // mapped while `self` is borrowed.
        let src = unsafe { MemSlice::new(self.addr.add(offset), dst.len()) };
        copy_out(src, dst, self.copy_mode)
    }

    /// Copies `src` (which may be a view of this mapping) to `offset`; needs
    /// `WRITE`. Faults become `EFAULT`.
    pub fn write_from<'a>(&self, offset: usize, src: impl Into<MemSlice<'a>>) -> Result<()> {
        let src = src.into();
        check_bounds(offset, src.len(), self.size)?;
        self.check_access(offset, src.len(), Protection::WRITE)?;
        // SAFETY: the range is inside the mapping, which is writable and stays
        // mapped while `self` is borrowed.
        let dst = unsafe { MemSliceMut::new(self.addr.add(offset), src.len()) };
        copy_in(dst, src, self.copy_mode)
    }

    /// Whether `[offset, offset + len)` may be touched directly, as a view does:
    /// in bounds, mapped `READ | WRITE`, and backed by the file (a file mapped
    /// past its end with `check_eof: false` has pages that would `SIGBUS`).
    pub fn check_direct(&self, offset: usize, len: usize) -> Result<()> {
        let end = check_bounds(offset, len, self.size)?;
        self.check_access(offset, len, Protection::READ_WRITE)?;
        if len > 0 && end > self.direct_limit {
            return Err(Error::Access {
                offset: offset as u64,
                size: len as u64,
                needed: Protection::READ_WRITE,
            });
        }
        Ok(())
    }

    /// How checked copies touch this mapping's memory.
    pub fn copy_mode(&self) -> CopyMode {
        self.copy_mode
    }

    /// Whether `[offset, offset + size)` (already bounds-checked) allows `needed`.
    pub fn check_access(&self, offset: usize, size: usize, needed: Protection) -> Result<()> {
        if self.protection.contains(needed) {
            Ok(())
        } else {
            Err(Error::Access {
                offset: offset as u64,
                size: size as u64,
                needed,
            })
        }
    }
}

/// A memfd sealed against shrinking can never lose pages under a mapping, so
/// copies may skip the fault-safe path; anything else might be truncated.
/// `identity` is the fd's, from the `fstat` the caller made: a live
/// `SharedMemory` sealed against shrinking needs no `F_GET_SEALS`.
pub(crate) fn copy_mode_for_fd(fd: BorrowedFd<'_>, identity: (u64, u64)) -> CopyMode {
    if crate::shm::sealed::contains(identity) {
        return CopyMode::Plain;
    }
    match sys::seals(fd) {
        Some(seals) if seals & libc::F_SEAL_SHRINK != 0 => CopyMode::Plain,
        _ => CopyMode::FaultSafe,
    }
}

// SAFETY: `[addr, addr + mapped_len)` is mapped by this value until drop and
// owned by it alone.
unsafe impl MappedRegion for MemoryMapping {
    fn as_ptr(&self) -> *mut u8 {
        self.addr
    }

    fn size(&self) -> usize {
        self.size
    }
}

impl Drop for MemoryMapping {
    fn drop(&mut self) {
        // SAFETY: the mapping is owned by this value and nothing can use it
        // after drop.
        let _ = unsafe { sys::munmap(self.addr, self.mapped_len) };
        budget::update(1, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{borrow, read_only_mapping, unlinked_file};
    use crate::Advice;
    use crate::{page_size, SharedMemory};
    use std::os::fd::AsFd;

    #[test]
    fn anonymous_read_write_and_zero_size() {
        let m = MemoryMapping::anonymous(10_000, MappingOptions::anonymous()).unwrap();
        assert_eq!(m.size(), 10_000);
        m.write_from(9_990, b"0123456789").unwrap();
        let mut buf = [0u8; 10];
        m.read_into(9_990, &mut buf).unwrap();
        assert_eq!(&buf, b"0123456789");
        assert!(matches!(
            m.read_into(9_995, &mut buf),
            Err(Error::OutOfBounds { .. })
        ));
        assert!(matches!(
            MemoryMapping::anonymous(0, MappingOptions::anonymous()),
            Err(Error::ZeroSize { .. })
        ));
        assert!(matches!(
            MemoryMapping::anonymous(usize::MAX, MappingOptions::anonymous()),
            Err(Error::OutOfRange { .. })
        ));
    }

    #[test]
    fn a_read_only_mapping_refuses_writes_views_and_discards() {
        let m = read_only_mapping();
        assert!(matches!(m.write_from(0, b"x"), Err(Error::Access { .. })));
        let mut b = [1u8; 4];
        m.read_into(0, &mut b).unwrap();
        assert_eq!(b, [0; 4]);
        assert!(matches!(m.check_direct(0, 1), Err(Error::Access { .. })));
        assert!(matches!(
            m.discard(0, page_size()),
            Err(Error::Access { .. })
        ));
    }

    #[test]
    fn bad_fd_is_ebadf_and_file_checks_eof() {
        assert_eq!(
            MemoryMapping::from_fd(borrow(999_999), 4096, MappingOptions::fd()).unwrap_err(),
            Error::Syscall {
                syscall: "fstat",
                errno: libc::EBADF
            }
        );
        let f = unlinked_file("eof", &[7u8; 100], true);
        assert_eq!(
            MemoryMapping::from_fd(f.as_fd(), 4096, MappingOptions::fd()).unwrap_err(),
            Error::BeyondEof {
                needed: 4096,
                file_size: 100
            }
        );
        let m = MemoryMapping::from_fd(f.as_fd(), 100, MappingOptions::fd()).unwrap();
        let mut b = [0u8; 100];
        m.read_into(0, &mut b).unwrap();
        assert_eq!(b, [7u8; 100]);
        assert!(matches!(
            MemoryMapping::from_fd(
                f.as_fd(),
                100,
                MappingOptions {
                    offset: 1,
                    ..MappingOptions::fd()
                }
            ),
            Err(Error::Unaligned { .. })
        ));
        // Truncated under the mapping: the copy reports EFAULT instead of SIGBUS.
        f.set_len(0).unwrap();
        assert_eq!(
            m.read_into(0, &mut b).unwrap_err(),
            Error::Fault {
                syscall: "process_vm_readv",
                copied: 0
            }
        );
        assert_eq!(
            m.write_from(0, &b).unwrap_err(),
            Error::Fault {
                syscall: "process_vm_writev",
                copied: 0
            }
        );
    }

    #[test]
    fn msync_and_madvise_through_the_trait() {
        let shm =
            SharedMemory::create("mr-core-msync", 2 * page_size() as u64, true, None).unwrap();
        let m = MemoryMapping::from_fd(shm.as_fd(), 2 * page_size(), MappingOptions::fd()).unwrap();
        let region: &dyn MappedRegion = &m;
        region.msync(0, 2 * page_size()).unwrap();
        region.msync(page_size(), 1).unwrap();
        assert!(matches!(
            region.msync(0, 2 * page_size() + 1),
            Err(Error::OutOfBounds { .. })
        ));
        assert!(matches!(region.msync(1, 1), Err(Error::Unaligned { .. })));
        m.write_from(0, b"abc").unwrap();
        region
            .madvise(0, page_size(), Advice::new(libc::MADV_REMOVE).unwrap())
            .unwrap();
        let mut b = [9u8; 3];
        m.read_into(0, &mut b).unwrap();
        assert_eq!(b, [0; 3]);
        assert!(matches!(
            region.madvise(
                page_size(),
                page_size() + 1,
                Advice::new(libc::MADV_WILLNEED).unwrap()
            ),
            Err(Error::OutOfBounds { .. })
        ));
        assert!(matches!(Advice::new(100), Err(Error::OutOfRange { .. })));
    }

    #[test]
    fn direct_access_stops_at_the_last_backed_page() {
        let ps = page_size();
        let f = unlinked_file("direct", &vec![3u8; ps + 10], true);
        let opts = MappingOptions {
            check_eof: false,
            ..MappingOptions::fd()
        };
        let m = MemoryMapping::from_fd(f.as_fd(), 4 * ps, opts).unwrap();
        assert_eq!(m.protection(), Protection::READ_WRITE);
        m.check_direct(0, 2 * ps).unwrap();
        m.check_direct(4 * ps, 0).unwrap();
        assert!(matches!(
            m.check_direct(2 * ps, 1),
            Err(Error::Access { .. })
        ));
        assert!(matches!(
            m.check_direct(ps, ps + 1),
            Err(Error::Access { .. })
        ));
        assert!(matches!(
            m.check_direct(4 * ps, 1),
            Err(Error::OutOfBounds { .. })
        ));
    }

    #[test]
    fn mapping_does_not_support_overlays() {
        let mut m = MemoryMapping::anonymous(page_size(), MappingOptions::anonymous()).unwrap();
        assert_eq!(
            m.remove_mapping(0, page_size()),
            Err(Error::Unsupported {
                operation: "removeMapping"
            })
        );
    }

    #[test]
    fn a_sealed_memfd_mapped_past_its_end_copies_fault_safely() {
        let ps = page_size();
        let shm = SharedMemory::create("mr-core-past-eof", ps as u64, true, None).unwrap();
        let m = MemoryMapping::from_fd(
            shm.as_fd(),
            3 * ps,
            MappingOptions {
                check_eof: false,
                ..MappingOptions::fd()
            },
        )
        .unwrap();
        m.write_from(0, b"in the file").unwrap();
        let mut b = [0u8; 16];
        // Past the end of the memfd: EFAULT, not SIGBUS, although it is sealed.
        assert_eq!(
            m.read_into(ps, &mut b).unwrap_err().errno(),
            Some(libc::EFAULT)
        );
        assert_eq!(
            m.write_from(2 * ps, &b).unwrap_err().errno(),
            Some(libc::EFAULT)
        );
        // A copy that starts in the file and runs past its end writes nothing.
        let err = m.write_from(ps - 4, &[1u8; 8]).unwrap_err();
        assert!(matches!(err, Error::Fault { copied: 0, .. }));
        let mut tail = [0u8; 4];
        m.read_into(ps - 4, &mut tail).unwrap();
        assert_eq!(tail, [0u8; 4]);
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
        assert!(matches!(
            private.discard(0, 3 * ps),
            Err(Error::OutOfBounds { .. })
        ));
    }
}
