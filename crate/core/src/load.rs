//! File I/O straight between a region and a file, with no intermediate
//! buffer: loading (`pread` into the mapping — kernels, initrds, firmware, disk
//! images, a snapshot's pages) and dumping (`pwrite` from it — snapshots). The
//! kernel touches the pages as the process would, so a page it cannot fault in
//! (one past the end of a truncated file) is `EFAULT`, never a signal; a range
//! without the access needed, or with a hole, is refused before any I/O.

use std::os::fd::BorrowedFd;

use crate::rules::{check_bounds, file_position, load_length};
use crate::{sys, AnyRegion, Error, MemSlice, MemSliceMut, Protection, Result};

/// A checked range of a region that a load reads a file into (checked
/// `WRITE`) or a dump writes to a file (checked `READ`), not tied to the
/// region's borrow so that the I/O can run on another thread. Whoever holds
/// one keeps the region mapped as checked until the I/O returns (the binding
/// counts it as a pending operation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoRange {
    addr: usize,
    len: usize,
}

/// The size of the file behind `fd` where it has one (regular files, memfds,
/// block devices; `None` for a character device and the like): one `fstat`.
pub fn file_size(fd: BorrowedFd<'_>) -> Result<Option<u64>> {
    Ok(sys::mappable(fd)?.size)
}

/// How many bytes loading `fd` from `offset` reads (see [`load_length`]): one
/// `fstat` when `length` is not given.
pub fn file_load_length(fd: BorrowedFd<'_>, offset: u64, length: Option<usize>) -> Result<usize> {
    let size = match length {
        Some(_) => None,
        None => file_size(fd)?,
    };
    load_length(offset, length, size)
}

/// Makes the file behind `fd` at least `len` bytes long: a dump into a fresh
/// file that writes only some pages still leaves a file a restore can map.
pub fn extend_file(fd: BorrowedFd<'_>, len: u64) -> Result<()> {
    sys::extend_to(fd, len)
}

impl AnyRegion {
    /// The range `[offset, offset + len)`, checked to be in bounds and mapped
    /// `WRITE` without a hole, as a copy into it is: what a load reads into.
    pub fn load_target(&self, offset: usize, len: usize) -> Result<IoRange> {
        self.io_range(offset, len, Protection::WRITE)
    }

    /// The range `[offset, offset + len)`, checked to be in bounds and mapped
    /// `READ` without a hole, as a copy out of it is: what a dump writes.
    pub fn dump_source(&self, offset: usize, len: usize) -> Result<IoRange> {
        self.io_range(offset, len, Protection::READ)
    }

    fn io_range(&self, offset: usize, len: usize, needed: Protection) -> Result<IoRange> {
        let base = self.region().as_ptr() as usize;
        match self {
            AnyRegion::Mapping(m) => {
                check_bounds(offset, len, self.region().size())?;
                m.check_access(offset, len, needed)?;
            }
            AnyRegion::Arena(a) => {
                a.check_access(offset, len, needed)?;
            }
        }
        Ok(IoRange {
            addr: base + offset,
            len,
        })
    }

    /// Reads up to `len` bytes of `fd` from `file_offset` into `offset`;
    /// returns the bytes loaded (fewer at the end of the file).
    pub fn load(
        &self,
        offset: usize,
        len: usize,
        fd: BorrowedFd<'_>,
        file_offset: u64,
    ) -> Result<usize> {
        let target = self.load_target(offset, len)?;
        // SAFETY: the range was just checked against the region, which `self`
        // keeps mapped for the whole call.
        unsafe { target.load(fd, file_offset) }
    }
}

/// The file position `done` bytes after `file_offset`, within `off_t`.
fn position_after(file_offset: u64, done: usize) -> Result<libc::off_t> {
    let at = file_offset
        .checked_add(done as u64)
        .ok_or_else(|| Error::OutOfRange {
            what: "offset",
            reason: format!("{file_offset} + {done} overflows"),
        })?;
    file_position("offset", at)
}

impl IoRange {
    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads `fd` from `file_offset` into the range with `pread` until it is
    /// full or the file ends; returns the bytes loaded. `EINTR` is retried; a
    /// page the kernel could not write is [`Error::Fault`] with the bytes
    /// loaded before it.
    ///
    /// # Safety
    /// The region the range came from must still be mapped as it was checked
    /// (writable, no hole) for the whole call.
    pub unsafe fn load(&self, fd: BorrowedFd<'_>, file_offset: u64) -> Result<usize> {
        // SAFETY: the checked range, mapped writable for the call as the
        // caller guarantees.
        let target = unsafe { MemSliceMut::new(self.addr as *mut u8, self.len) };
        self.transfer(file_offset, "pread", true, |done, position| {
            sys::pread(fd, target.sub(done, self.len - done)?, position)
        })
    }

    /// Writes the whole range to `fd` at `file_offset` with `pwrite` (`EINTR`
    /// retried, short writes continued). A page the kernel could not read is
    /// [`Error::Fault`] with the bytes written before it.
    ///
    /// # Safety
    /// The region the range came from must still be mapped as it was checked
    /// (readable, no hole) for the whole call.
    pub unsafe fn dump(&self, fd: BorrowedFd<'_>, file_offset: u64) -> Result<()> {
        // SAFETY: the checked range, mapped readable for the call as the
        // caller guarantees.
        let source = unsafe { MemSlice::new(self.addr as *const u8, self.len) };
        self.transfer(file_offset, "pwrite", false, |done, position| {
            sys::pwrite(fd, source.sub(done, self.len - done)?, position)
        })
        .map(|_| ())
    }

    /// The loop of [`load`](Self::load) and [`dump`](Self::dump): `call(done,
    /// position)` moves up to the rest of the range, from `done` bytes into
    /// it, from or to the file at `position`, until the range is done. `EINTR` is
    /// retried; 0 bytes ends a read (`at_eof_stops`: the file ended) and fails
    /// a write (the file takes no more); `EFAULT` is [`Error::Fault`] with the
    /// bytes moved before it. Returns the bytes moved.
    fn transfer(
        &self,
        file_offset: u64,
        syscall: &'static str,
        at_eof_stops: bool,
        mut call: impl FnMut(usize, libc::off_t) -> Result<usize>,
    ) -> Result<usize> {
        let mut done = 0;
        while done < self.len {
            let position = position_after(file_offset, done)?;
            match call(done, position) {
                Ok(0) if at_eof_stops => break,
                Ok(0) => {
                    return Err(Error::Syscall {
                        syscall,
                        errno: libc::EIO,
                    })
                }
                Ok(n) => done += n,
                Err(e) if e.errno() == Some(libc::EINTR) => {}
                Err(e) if e.errno() == Some(libc::EFAULT) => {
                    return Err(Error::Fault {
                        syscall,
                        copied: done as u64,
                    })
                }
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::unlinked_file;
    use crate::{MappedRegion, MappingOptions, MemoryMapping, MemoryMappingArena};
    use std::os::fd::AsFd;

    fn content(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 13 % 251) as u8).collect()
    }

    #[test]
    fn loads_at_any_byte_offset_and_stops_at_the_end_of_the_file() {
        let ps = crate::page_size();
        let data = content(3 * ps + 100);
        let file = unlinked_file("load-short", &data, false);
        let region = AnyRegion::Mapping(
            MemoryMapping::anonymous(8 * ps, MappingOptions::anonymous()).unwrap(),
        );
        // Asked for more than the file holds from offset 10: the rest of it.
        let n = region.load(7, 6 * ps, file.as_fd(), 10).unwrap();
        assert_eq!(n, data.len() - 10);
        let mut out = vec![0u8; n];
        region.read_into(7, &mut out).unwrap();
        assert!(out == data[10..]);
        // From past the end: nothing.
        assert_eq!(region.load(0, ps, file.as_fd(), 1 << 40).unwrap(), 0);
        assert_eq!(
            file_load_length(file.as_fd(), 10, None).unwrap(),
            data.len() - 10
        );
        assert_eq!(file_load_length(file.as_fd(), 1 << 40, None).unwrap(), 0);
        assert_eq!(file_load_length(file.as_fd(), 0, Some(5)).unwrap(), 5);
    }

    #[test]
    fn loads_across_contiguous_overlays_and_refuses_holes_and_read_only_memory() {
        let ps = crate::page_size();
        let data = content(4 * ps);
        let file = unlinked_file("load-arena", &data, false);
        let mut arena = MemoryMappingArena::new(8 * ps).unwrap();
        arena
            .add_anonymous(0, 2 * ps, Protection::READ_WRITE)
            .unwrap();
        arena
            .add_anonymous(2 * ps, 2 * ps, Protection::READ_WRITE)
            .unwrap();
        arena.add_anonymous(5 * ps, ps, Protection::READ).unwrap();
        let region = AnyRegion::Arena(arena);
        assert_eq!(
            region.load(ps / 2, 3 * ps, file.as_fd(), 0).unwrap(),
            3 * ps
        );
        let mut out = vec![0u8; 3 * ps];
        region.read_into(ps / 2, &mut out).unwrap();
        assert!(out == data[..3 * ps]);
        // Into the hole at page 4, read-only page 5, past the end: refused, nothing read.
        for (offset, len) in [(3 * ps, 2 * ps), (5 * ps, 1), (7 * ps, 2 * ps)] {
            let err = region.load(offset, len, file.as_fd(), 0).unwrap_err();
            assert!(
                matches!(err, Error::Access { .. } | Error::OutOfBounds { .. }),
                "{err:?}"
            );
        }
    }

    #[test]
    fn a_page_past_the_end_of_its_file_is_efault_not_a_signal() {
        let ps = crate::page_size();
        let backing = unlinked_file("load-trunc", &content(2 * ps), true);
        let mut arena = MemoryMappingArena::new(2 * ps).unwrap();
        arena
            .add_fd_mapping(0, 2 * ps, backing.as_fd(), 0, Protection::READ_WRITE)
            .unwrap();
        backing.set_len(ps as u64).unwrap();
        let source = unlinked_file("load-src", &content(2 * ps), false);
        let region = AnyRegion::Arena(arena);
        let err = region.load(0, 2 * ps, source.as_fd(), 0).unwrap_err();
        assert_eq!(
            err,
            Error::Fault {
                syscall: "pread",
                copied: ps as u64
            }
        );
    }

    #[test]
    fn an_fd_of_unknown_size_needs_a_length() {
        let null = std::fs::File::open("/dev/null").unwrap();
        let err = file_load_length(null.as_fd(), 0, None).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { what: "length", .. }));
        assert!(matches!(
            load_length(u64::MAX, Some(1), None),
            Err(Error::OutOfRange { .. })
        ));
    }
}

#[cfg(test)]
mod dump_tests {
    use super::*;
    use crate::testutil::unlinked_file;
    use crate::{MemoryMappingArena, Protection};
    use std::os::fd::AsFd;

    #[test]
    fn dumps_write_the_bytes_of_readable_memory_and_refuse_holes() {
        let ps = crate::page_size();
        let mut arena = MemoryMappingArena::new(4 * ps).unwrap();
        arena
            .add_anonymous(0, 2 * ps, Protection::READ_WRITE)
            .unwrap();
        let region = AnyRegion::Arena(arena);
        let data: Vec<u8> = (0..2 * ps).map(|i| (i % 241) as u8).collect();
        region.write_from(0, &data).unwrap();
        let out = unlinked_file("dump", &[], true);
        let source = region.dump_source(0, 2 * ps).unwrap();
        // SAFETY: the arena is alive and unchanged for the call.
        unsafe { source.dump(out.as_fd(), ps as u64) }.unwrap();
        extend_file(out.as_fd(), 4 * ps as u64).unwrap();
        let mut back = vec![0u8; 2 * ps];
        let n = region.load(0, 0, out.as_fd(), 0).unwrap();
        assert_eq!(n, 0);
        use std::os::unix::fs::FileExt;
        out.read_exact_at(&mut back, ps as u64).unwrap();
        assert!(back == data);
        assert_eq!(
            out.metadata().unwrap().len(),
            4 * ps as u64,
            "extended, never shortened"
        );
        extend_file(out.as_fd(), ps as u64).unwrap();
        assert_eq!(out.metadata().unwrap().len(), 4 * ps as u64);
        assert!(matches!(
            region.dump_source(ps, 2 * ps),
            Err(Error::Access { .. })
        ));
    }
}
