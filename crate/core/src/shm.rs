//! `SharedMemory`: a memfd, sealed against shrinking so that no mapping of it
//! can ever fault with `SIGBUS`.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::{OnceLock, RwLock};

use crate::rules::{check_seals, memfd_name, HugePages};
use crate::{sys, Error, Result};

/// A sized memfd created with `MFD_CLOEXEC | MFD_ALLOW_SEALING`.
///
/// The fd number is handed out (`fd()`), so other code can close it and the
/// number can be reused for an unrelated file. The memfd's identity (device
/// and inode) is therefore kept, and the fd is sealed or closed only while its
/// number still refers to that memfd: closing a `SharedMemory` whose fd was
/// closed by someone else closes nothing.
#[derive(Debug)]
pub struct SharedMemory {
    /// `None` only during drop.
    fd: Option<OwnedFd>,
    /// A duplicate of the memfd that is never handed out: it keeps the inode
    /// alive for as long as this value lives, whatever happens to `fd`'s
    /// number, so `identity` cannot come to name another file meanwhile.
    pin: OwnedFd,
    identity: (u64, u64),
    size: u64,
    /// Its huge-page size, for a hugetlbfs memfd.
    huge_page: Option<u64>,
    /// Its size when first sealed against shrinking: it can only grow from
    /// there, so a range within it can never reach past its end.
    sealed_size: OnceLock<u64>,
}

impl SharedMemory {
    /// Creates a memfd named `name` of `size` bytes. With `seal`, adds
    /// `F_SEAL_SHRINK`; with `hugetlb`, backs it with huge pages of that size,
    /// all allocated up front (`ENOSPC` if the pool cannot supply them); its
    /// size must then be a multiple of the huge page size.
    pub fn create(
        name: &str,
        size: u64,
        seal: bool,
        hugetlb: Option<HugePages>,
    ) -> Result<SharedMemory> {
        if size == 0 {
            return Err(Error::ZeroSize { what: "size" });
        }
        let len = libc::off_t::try_from(size).map_err(|_| Error::OutOfRange {
            what: "size",
            reason: format!("{size} does not fit in off_t"),
        })?;
        let cname = memfd_name(name)?;
        let mut flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
        if let Some(pages) = hugetlb {
            flags |= pages.memfd_flags();
        }
        let fd = sys::memfd_create(&cname, flags)?;
        // Dropping `fd` closes the fresh memfd on every error path.
        let what = sys::mappable(fd.as_fd())?;
        let identity = what.identity;
        match what.huge_page {
            // The kernel would round the size up: refused instead, so that the
            // memfd is exactly as large as asked.
            Some(huge) if !size.is_multiple_of(huge) => {
                return Err(Error::HugeUnaligned {
                    what: "size",
                    value: size,
                    page_size: huge,
                })
            }
            _ => {}
        }
        sys::ftruncate(fd.as_fd(), len)?;
        if hugetlb.is_some() {
            // Huge pages come from a fixed pool: a fault on one the pool cannot
            // supply raises SIGBUS. Allocating them all now turns that into an
            // error here (ENOSPC), never a crash later.
            sys::fallocate(fd.as_fd(), len)?;
        }
        let pin = sys::dup_cloexec(fd.as_fd())?;
        let shm = SharedMemory {
            fd: Some(fd),
            pin,
            identity,
            size,
            huge_page: what.huge_page,
            sealed_size: OnceLock::new(),
        };
        if seal {
            shm.add_seals(libc::F_SEAL_SHRINK)?;
        }
        Ok(shm)
    }

    /// The memfd's identity (`st_dev`, `st_ino`), fixed for its life.
    pub(crate) fn identity(&self) -> (u64, u64) {
        self.identity
    }

    /// The memfd's number (see the type's docs on numbers reused by others).
    pub fn fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }

    /// Whether the fd number still refers to this memfd.
    pub fn is_own_fd(&self) -> bool {
        sys::file_identity(self.as_fd()) == Some(self.identity)
    }

    /// The fd for a call that acts on it: `EBADF` once someone else closed it
    /// (whatever the number refers to now is not ours to seal).
    fn own_fd(&self, syscall: &'static str) -> Result<BorrowedFd<'_>> {
        if self.is_own_fd() {
            Ok(self.as_fd())
        } else {
            Err(Error::Syscall {
                syscall,
                errno: libc::EBADF,
            })
        }
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The private duplicate of the memfd: never handed out, so no other
    /// code has its number to close, and it names this memfd while `self`
    /// lives. Mapping through it needs no check that the number is still ours.
    pub fn private_fd(&self) -> BorrowedFd<'_> {
        self.pin.as_fd()
    }

    /// The size the memfd had when it was first sealed against shrinking
    /// through this value (`None` before that): a lower bound of its size
    /// from then on, as seals are never removed.
    pub fn sealed_size(&self) -> Option<u64> {
        self.sealed_size.get().copied()
    }

    /// The huge-page size of a hugetlbfs memfd (`None` for ordinary pages).
    pub fn huge_page_size(&self) -> Option<u64> {
        self.huge_page
    }

    /// The current seals (`F_GET_SEALS`).
    pub fn seals(&self) -> Result<i32> {
        let fd = self.own_fd("fcntl")?;
        sys::seals(fd).ok_or_else(|| Error::last_os_error("fcntl"))
    }

    /// Adds seals (`F_ADD_SEALS`): `F_SEAL_SEAL`, `F_SEAL_SHRINK`, `F_SEAL_GROW`,
    /// `F_SEAL_WRITE`, `F_SEAL_FUTURE_WRITE`.
    pub fn add_seals(&self, seals: i32) -> Result<()> {
        check_seals(seals)?;
        // On the pin: the seals belong to the inode, and the pin is ours.
        let _ = self.own_fd("fcntl")?;
        sys::add_seals(self.pin.as_fd(), seals)?;
        if seals & libc::F_SEAL_SHRINK != 0 {
            sealed::insert(self.identity);
            if self.sealed_size.get().is_none() {
                // Sealed now: the size from here on is at least this.
                if let Some(size) = crate::load::file_size(self.pin.as_fd())? {
                    let _ = self.sealed_size.set(size);
                }
            }
        }
        Ok(())
    }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        // The pin closes with this value: the identity may name another file
        // from now on.
        sealed::remove(self.identity);
        // Close only our memfd: if someone closed it and the number now names
        // another file, that file is not ours to close, so the number is
        // given up without closing it.
        let own = self.is_own_fd();
        if let Some(fd) = self.fd.take() {
            if !own {
                let _ = fd.into_raw_fd();
            }
        }
    }
}

/// The identities of the live `SharedMemory`s sealed against shrinking. Each
/// is pinned (its inode cannot be freed, so its identity cannot be reused)
/// until it is removed, and seals are never taken back: a file with one of
/// these identities cannot shrink. That lets an overlay of such a memfd take
/// the plain copy path after one `fstat` (which it needs for the identity,
/// the size and the type anyway) without asking for its seals.
pub(crate) mod sealed {
    use super::RwLock;

    static LIVE: RwLock<Vec<(u64, u64)>> = RwLock::new(Vec::new());

    pub(super) fn insert(identity: (u64, u64)) {
        let mut live = LIVE.write().unwrap_or_else(|e| e.into_inner());
        if !live.contains(&identity) {
            live.push(identity);
        }
    }

    pub(super) fn remove(identity: (u64, u64)) {
        let mut live = LIVE.write().unwrap_or_else(|e| e.into_inner());
        live.retain(|&i| i != identity);
    }

    /// Whether `identity` is a live `SharedMemory` sealed against shrinking.
    pub(crate) fn contains(identity: (u64, u64)) -> bool {
        let live = LIVE.read().unwrap_or_else(|e| e.into_inner());
        live.contains(&identity)
    }
}

impl AsFd for SharedMemory {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.fd {
            Some(fd) => fd.as_fd(),
            // Only `drop` takes the fd, and nothing borrows `self` after it.
            None => unreachable!("SharedMemory used during drop"),
        }
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
    use std::os::fd::AsFd;

    #[test]
    fn create_seals_against_shrinking() {
        let shm = SharedMemory::create("mr-core-shm", page_size() as u64, true, None).unwrap();
        assert_eq!(shm.size(), page_size() as u64);
        assert_ne!(shm.seals().unwrap() & libc::F_SEAL_SHRINK, 0);
        // SAFETY: ftruncate on the memfd; must be refused by the seal.
        let ret = unsafe { libc::ftruncate(shm.fd(), 0) };
        assert_eq!(ret, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EPERM)
        );
        let open = SharedMemory::create("mr-core-open", 1, false, None).unwrap();
        assert_eq!(open.seals().unwrap() & libc::F_SEAL_SHRINK, 0);
        open.add_seals(libc::F_SEAL_GROW).unwrap();
        assert_ne!(open.seals().unwrap() & libc::F_SEAL_GROW, 0);
        assert!(open.add_seals(1 << 20).is_err());
    }

    #[test]
    fn bad_arguments() {
        assert!(matches!(
            SharedMemory::create("x", 0, true, None),
            Err(Error::ZeroSize { .. })
        ));
        assert!(matches!(
            SharedMemory::create("a\0b", 1, true, None),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            SharedMemory::create("x", u64::MAX, true, None),
            Err(Error::OutOfRange { .. })
        ));
    }

    #[test]
    fn closes_only_its_own_memfd() {
        let shm = SharedMemory::create("mr-core-own", 1, true, None).unwrap();
        let fd = shm.fd();
        // Someone else closes the memfd and the number is reused for a pipe.
        crate::testutil::close_raw(fd);
        let mut fds = [0; 2];
        // SAFETY: pipe writes two fds into the array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let (other, spare) = if fds[0] == fd {
            (fds[0], fds[1])
        } else {
            // SAFETY: dup2 onto the freed number, so it now names the pipe.
            assert_eq!(unsafe { libc::dup2(fds[0], fd) }, fd);
            crate::testutil::close_raw(fds[0]);
            (fd, fds[1])
        };
        assert!(!shm.is_own_fd());
        assert_eq!(shm.seals().unwrap_err().errno(), Some(libc::EBADF));
        assert_eq!(
            shm.add_seals(libc::F_SEAL_GROW).unwrap_err().errno(),
            Some(libc::EBADF)
        );
        drop(shm);
        // The pipe is still open.
        // SAFETY: F_GETFD only queries the fd.
        assert_ne!(unsafe { libc::fcntl(other, libc::F_GETFD) }, -1);
        crate::testutil::close_raw(other);
        crate::testutil::close_raw(spare);
    }

    #[test]
    fn sealed_memfds_are_known_while_they_live() {
        let sealed = SharedMemory::create("mr-core-known", 1, true, None).unwrap();
        let open = SharedMemory::create("mr-core-unknown", 1, false, None).unwrap();
        let (a, b) = (sealed.identity, open.identity);
        assert!(super::sealed::contains(a));
        assert!(!super::sealed::contains(b));
        open.add_seals(libc::F_SEAL_GROW).unwrap();
        assert!(!super::sealed::contains(b));
        open.add_seals(libc::F_SEAL_SHRINK).unwrap();
        assert!(super::sealed::contains(b));
        drop(sealed);
        drop(open);
        assert!(!super::sealed::contains(a));
        assert!(!super::sealed::contains(b));
    }

    #[test]
    fn two_mappings_share_memory() {
        let ps = page_size();
        let shm = SharedMemory::create("mr-core-two", ps as u64, true, None).unwrap();
        let a = MemoryMapping::from_fd(shm.as_fd(), ps, MappingOptions::fd()).unwrap();
        let b = MemoryMapping::from_fd(shm.as_fd(), ps, MappingOptions::fd()).unwrap();
        a.write_from(10, b"shared").unwrap();
        let mut buf = [0u8; 6];
        b.read_into(10, &mut buf).unwrap();
        assert_eq!(&buf, b"shared");
    }
}
