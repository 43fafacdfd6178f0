//! Loading a file straight into a region (`pread` into the mapping, no
//! intermediate buffer): kernels, initrds, firmware and disk images into guest
//! memory. The kernel writes the pages as the process would, so a page it
//! cannot fault in (one past the end of a truncated file) is `EFAULT`, never a
//! signal; a range without `WRITE` or with a hole is refused before any read.

use std::os::fd::BorrowedFd;

use crate::rules::{check_bounds, file_position, load_length};
use crate::{sys, AnyRegion, Error, Protection, Result};

/// A checked, writable range of a region that a load reads a file into, not
/// tied to the region's borrow so that the read can run on another thread.
/// Whoever holds one keeps the region mapped as checked until the load returns
/// (the binding counts it as a pending operation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadTarget {
    addr: usize,
    len: usize,
}

/// How many bytes loading `fd` from `offset` reads (see [`load_length`]): one
/// `fstat` when `length` is not given.
pub fn file_load_length(fd: BorrowedFd<'_>, offset: u64, length: Option<usize>) -> Result<usize> {
    let size = match length {
        Some(_) => None,
        None => sys::mappable(fd)?.size,
    };
    load_length(offset, length, size)
}

impl AnyRegion {
    /// The range `[offset, offset + len)`, checked to be in bounds and mapped
    /// `WRITE` without a hole, as a copy into it is.
    pub fn load_target(&self, offset: usize, len: usize) -> Result<LoadTarget> {
        let base = self.region().as_ptr() as usize;
        match self {
            AnyRegion::Mapping(m) => {
                check_bounds(offset, len, self.region().size())?;
                m.check_access(offset, len, Protection::WRITE)?;
            }
            AnyRegion::Arena(a) => {
                a.check_access(offset, len, Protection::WRITE)?;
            }
        }
        Ok(LoadTarget {
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

impl LoadTarget {
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
        let mut done = 0;
        while done < self.len {
            let at = file_offset
                .checked_add(done as u64)
                .ok_or_else(|| Error::OutOfRange {
                    what: "offset",
                    reason: format!("{file_offset} + {done} overflows"),
                })?;
            let position = file_position("offset", at)?;
            // SAFETY: `[addr + done, addr + len)` lies in the checked range,
            // mapped writable as the caller guarantees; the kernel reports a
            // page it cannot fault in as EFAULT.
            let n =
                unsafe { sys::pread(fd, (self.addr + done) as *mut u8, self.len - done, position) };
            match n {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.errno() == Some(libc::EINTR) => {}
                Err(e) if e.errno() == Some(libc::EFAULT) => {
                    return Err(Error::Fault {
                        syscall: "pread",
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
