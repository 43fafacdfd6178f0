//! `SharedMemory`: a memfd, sealed against shrinking so that no mapping of it
//! can ever fault with `SIGBUS`.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::{sys, Error, Result};

/// A sized memfd created with `MFD_CLOEXEC | MFD_ALLOW_SEALING`.
#[derive(Debug)]
pub struct SharedMemory {
    fd: OwnedFd,
    size: u64,
}

impl SharedMemory {
    /// Creates a memfd named `name` of `size` bytes. With `seal`, adds
    /// `F_SEAL_SHRINK`; with `hugetlb`, backs it with huge pages, all allocated
    /// up front (`ENOSPC` if the pool cannot supply them).
    pub fn create(name: &str, size: u64, seal: bool, hugetlb: bool) -> Result<SharedMemory> {
        if size == 0 {
            return Err(Error::ZeroSize { what: "size" });
        }
        let len = libc::off_t::try_from(size).map_err(|_| Error::OutOfRange {
            what: "size",
            reason: format!("{size} does not fit in off_t"),
        })?;
        let cname = CString::new(name).map_err(|_| Error::InvalidArgument {
            what: "name",
            reason: "contains a NUL byte".into(),
        })?;
        let mut flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
        if hugetlb {
            flags |= libc::MFD_HUGETLB;
        }
        // SAFETY: `cname` is a valid NUL-terminated string for the call.
        let raw = unsafe { libc::memfd_create(cname.as_ptr(), flags) };
        if raw < 0 {
            return Err(Error::last_os_error("memfd_create"));
        }
        // SAFETY: memfd_create returned a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: ftruncate on our own fd.
        sys::check(unsafe { libc::ftruncate(fd.as_raw_fd(), len) }, "ftruncate")?;
        if hugetlb {
            // Huge pages come from a fixed pool: a fault on one the pool cannot
            // supply raises SIGBUS. Allocating them all now turns that into an
            // error here (ENOSPC), never a crash later.
            // SAFETY: fallocate on our own fd.
            sys::check(
                unsafe { libc::fallocate(fd.as_raw_fd(), 0, 0, len) },
                "fallocate",
            )?;
        }
        let shm = SharedMemory { fd, size };
        if seal {
            shm.add_seals(libc::F_SEAL_SHRINK)?;
        }
        Ok(shm)
    }

    /// The memfd.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The current seals (`F_GET_SEALS`).
    pub fn seals(&self) -> Result<i32> {
        sys::seals(self.fd()).ok_or_else(|| Error::last_os_error("fcntl"))
    }

    /// Adds seals (`F_ADD_SEALS`): `F_SEAL_SEAL`, `F_SEAL_SHRINK`, `F_SEAL_GROW`,
    /// `F_SEAL_WRITE`, `F_SEAL_FUTURE_WRITE`.
    pub fn add_seals(&self, seals: i32) -> Result<()> {
        const KNOWN: i32 = libc::F_SEAL_SEAL
            | libc::F_SEAL_SHRINK
            | libc::F_SEAL_GROW
            | libc::F_SEAL_WRITE
            | libc::F_SEAL_FUTURE_WRITE;
        if seals & !KNOWN != 0 || seals < 0 {
            return Err(Error::OutOfRange {
                what: "seals",
                reason: format!("{seals} has unknown seal bits"),
            });
        }
        // SAFETY: F_ADD_SEALS on our own fd changes only kernel state.
        let ret = unsafe { libc::fcntl(self.fd(), libc::F_ADD_SEALS, seals) };
        sys::check(ret, "fcntl")
    }
}

impl AsRawFd for SharedMemory {
    fn as_raw_fd(&self) -> RawFd {
        self.fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{page_size, MappingOptions, MemoryMapping};

    #[test]
    fn create_seals_against_shrinking() {
        let shm = SharedMemory::create("mr-core-shm", page_size() as u64, true, false).unwrap();
        assert_eq!(shm.size(), page_size() as u64);
        assert_ne!(shm.seals().unwrap() & libc::F_SEAL_SHRINK, 0);
        // SAFETY: ftruncate on the memfd; must be refused by the seal.
        let ret = unsafe { libc::ftruncate(shm.fd(), 0) };
        assert_eq!(ret, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EPERM)
        );
        let open = SharedMemory::create("mr-core-open", 1, false, false).unwrap();
        assert_eq!(open.seals().unwrap() & libc::F_SEAL_SHRINK, 0);
        open.add_seals(libc::F_SEAL_GROW).unwrap();
        assert_ne!(open.seals().unwrap() & libc::F_SEAL_GROW, 0);
        assert!(open.add_seals(1 << 20).is_err());
    }

    #[test]
    fn bad_arguments() {
        assert!(matches!(
            SharedMemory::create("x", 0, true, false),
            Err(Error::ZeroSize { .. })
        ));
        assert!(matches!(
            SharedMemory::create("a\0b", 1, true, false),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            SharedMemory::create("x", u64::MAX, true, false),
            Err(Error::OutOfRange { .. })
        ));
    }

    #[test]
    fn two_mappings_share_memory() {
        let ps = page_size();
        let shm = SharedMemory::create("mr-core-two", ps as u64, true, false).unwrap();
        let a = MemoryMapping::from_fd(&shm, ps, MappingOptions::fd()).unwrap();
        let b = MemoryMapping::from_fd(&shm, ps, MappingOptions::fd()).unwrap();
        a.write_from(10, b"shared").unwrap();
        let mut buf = [0u8; 6];
        b.read_into(10, &mut buf).unwrap();
        assert_eq!(&buf, b"shared");
    }
}
