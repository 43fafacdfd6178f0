//! Small wrappers around the system calls the crate uses. Each returns a typed
//! [`Error::Syscall`] on failure and carries no other logic.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{Error, MemSlice, MemSliceMut, Result};

static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);

/// The system page size.
pub fn page_size() -> usize {
    let cached = PAGE_SIZE.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    // SAFETY: sysconf has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let size = if size > 0 { size as usize } else { 4096 };
    PAGE_SIZE.store(size, Ordering::Relaxed);
    size
}

/// `mmap(2)`. Returns the mapped address.
///
/// # Safety
/// With `MAP_FIXED` in `flags`, `[addr, addr + len)` must be memory this caller
/// owns (e.g. inside its own reservation) and that no live Rust reference points into.
pub unsafe fn mmap(
    addr: *mut u8,
    len: usize,
    prot: libc::c_int,
    flags: libc::c_int,
    fd: Option<BorrowedFd<'_>>,
    offset: libc::off_t,
) -> Result<*mut u8> {
    let fd = fd.map_or(-1, |fd| fd.as_raw_fd());
    // SAFETY: the caller guarantees the MAP_FIXED contract; otherwise the kernel
    // picks free address space and touches nothing we own.
    let ret = unsafe { libc::mmap(addr.cast(), len, prot, flags, fd, offset) };
    if ret == libc::MAP_FAILED {
        Err(Error::last_os_error("mmap"))
    } else {
        Ok(ret.cast())
    }
}

/// `munmap(2)`.
///
/// # Safety
/// `[addr, addr + len)` must be owned by the caller and no longer accessed.
pub unsafe fn munmap(addr: *mut u8, len: usize) -> Result<()> {
    // SAFETY: the caller owns the range and gives up all access to it.
    let ret = unsafe { libc::munmap(addr.cast(), len) };
    check(ret, "munmap")
}

/// `msync(2)` with `flags`.
///
/// # Safety
/// `[addr, addr + len)` must lie inside a mapping owned by the caller.
pub unsafe fn msync(addr: *mut u8, len: usize, flags: libc::c_int) -> Result<()> {
    // SAFETY: msync reads kernel state of the caller's own mapping only.
    let ret = unsafe { libc::msync(addr.cast(), len, flags) };
    check(ret, "msync")
}

/// `madvise(2)`.
///
/// # Safety
/// `[addr, addr + len)` must lie inside a mapping owned by the caller; advices
/// that change contents (e.g. `MADV_DONTNEED`) are the caller's intent.
pub unsafe fn madvise(addr: *mut u8, len: usize, advice: libc::c_int) -> Result<()> {
    // SAFETY: the caller owns the range; see above.
    let ret = unsafe { libc::madvise(addr.cast(), len, advice) };
    check(ret, "madvise")
}

/// `mlock(2)`, or `mlock2(2)` with `MLOCK_ONFAULT` when `on_fault` (through
/// `syscall(2)`: glibc has the wrapper only since 2.27).
///
/// # Safety
/// `[addr, addr + len)` must lie inside a mapping owned by the caller.
pub unsafe fn mlock(addr: *mut u8, len: usize, on_fault: bool) -> Result<()> {
    const MLOCK_ONFAULT: libc::c_long = 1;
    // SAFETY: the caller owns the range; locking changes no contents.
    let ret = unsafe {
        if on_fault {
            libc::syscall(libc::SYS_mlock2, addr, len, MLOCK_ONFAULT) as libc::c_int
        } else {
            libc::mlock(addr.cast(), len)
        }
    };
    check(ret, if on_fault { "mlock2" } else { "mlock" })
}

/// `munlock(2)`.
///
/// # Safety
/// `[addr, addr + len)` must lie inside a mapping owned by the caller.
pub unsafe fn munlock(addr: *mut u8, len: usize) -> Result<()> {
    // SAFETY: the caller owns the range.
    check(unsafe { libc::munlock(addr.cast(), len) }, "munlock")
}

/// `mprotect(2)`.
///
/// # Safety
/// `[addr, addr + len)` must be a range of mappings the caller owns; no Rust
/// reference may rely on its old protection.
pub unsafe fn mprotect(addr: *mut u8, len: usize, prot: libc::c_int) -> Result<()> {
    // SAFETY: the caller owns the range; only its protection changes.
    check(
        unsafe { libc::mprotect(addr.cast(), len, prot) },
        "mprotect",
    )
}

/// `pread(2)`: up to `buf.len()` bytes of `fd` at `offset` into `buf`. Returns
/// the bytes read (0 at the end of the file).
pub fn pread(fd: BorrowedFd<'_>, buf: MemSliceMut<'_>, offset: libc::off_t) -> Result<usize> {
    // SAFETY: `buf` is writable memory of this process (its contract); the
    // kernel writes it as the process would and reports a page it cannot fault
    // in as EFAULT (never a signal).
    let n = unsafe { libc::pread(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), offset) };
    if n < 0 {
        return Err(Error::last_os_error("pread"));
    }
    Ok(n as usize)
}

/// `pwrite(2)`: up to `buf.len()` bytes from `buf` to `fd` at `offset`.
/// Returns the bytes written.
pub fn pwrite(fd: BorrowedFd<'_>, buf: MemSlice<'_>, offset: libc::off_t) -> Result<usize> {
    // SAFETY: `buf` is readable memory of this process (its contract); the
    // kernel reads it as the process would and reports a page it cannot fault
    // in as EFAULT (never a signal).
    let n = unsafe { libc::pwrite(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), offset) };
    if n < 0 {
        return Err(Error::last_os_error("pwrite"));
    }
    Ok(n as usize)
}

/// Grows the file behind `fd` to `len` bytes (`ftruncate`) when `fstat` says
/// it is shorter; a longer file is left as it is.
pub fn extend_to(fd: BorrowedFd<'_>, len: u64) -> Result<()> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a full `struct stat` into the buffer on success.
    let ret = unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) };
    check(ret, "fstat")?;
    // SAFETY: fstat returned 0, so the struct is initialised.
    let size = unsafe { st.assume_init() }.st_size as u64;
    if size < len {
        let len = libc::off_t::try_from(len).map_err(|_| Error::Syscall {
            syscall: "ftruncate",
            errno: libc::EFBIG,
        })?;
        ftruncate(fd, len)?;
    }
    Ok(())
}

/// A duplicate of `fd` (`F_DUPFD_CLOEXEC`), owned by the caller.
pub fn dup_cloexec(fd: BorrowedFd<'_>) -> Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC only creates a new fd.
    let dup = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(Error::last_os_error("fcntl"));
    }
    // SAFETY: `dup` is a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(dup) })
}

/// `memfd_create(2)`.
pub fn memfd_create(name: &std::ffi::CStr, flags: libc::c_uint) -> Result<OwnedFd> {
    // SAFETY: `name` is a valid NUL-terminated string for the call.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    if fd < 0 {
        return Err(Error::last_os_error("memfd_create"));
    }
    // SAFETY: `fd` is a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `ftruncate(2)`.
pub fn ftruncate(fd: BorrowedFd<'_>, len: libc::off_t) -> Result<()> {
    // SAFETY: changes only the size of the file behind `fd`.
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), len) }, "ftruncate")
}

/// `fallocate(2)` of `[0, len)` with mode 0 (allocate the blocks).
pub fn fallocate(fd: BorrowedFd<'_>, len: libc::off_t) -> Result<()> {
    // SAFETY: allocates storage of the file behind `fd`; no memory is touched.
    check(
        unsafe { libc::fallocate(fd.as_raw_fd(), 0, 0, len) },
        "fallocate",
    )
}

/// `fcntl(F_ADD_SEALS)`.
pub fn add_seals(fd: BorrowedFd<'_>, seals: libc::c_int) -> Result<()> {
    // SAFETY: F_ADD_SEALS changes only kernel state of the file behind `fd`.
    check(
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) },
        "fcntl",
    )
}

/// What one `fstat` tells about an fd to be mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mappable {
    /// The size of what the fd maps, where it has one: regular files (memfds
    /// included) and block devices. Pages past it cannot be touched without
    /// `SIGBUS`. `None` for anything else (character devices, …).
    pub size: Option<u64>,
    /// The file's identity (`st_dev`, `st_ino`).
    pub identity: (u64, u64),
    /// For a file of hugetlbfs (a `MFD_HUGETLB` memfd, a file under
    /// `/dev/hugepages`): its huge page size.
    pub huge_page: Option<u64>,
}

/// `HUGETLBFS_MAGIC`, the `f_type` of hugetlbfs.
const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

/// The huge page size of a file of hugetlbfs. Only asked (`fstatfs`) when
/// `fstat`'s block size is larger than a page, as hugetlbfs reports its page
/// size there: other fds pay nothing.
fn huge_page(fd: RawFd, block_size: u64) -> Result<Option<u64>> {
    if block_size <= page_size() as u64 {
        return Ok(None);
    }
    let mut fs = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: fstatfs writes a full `struct statfs` into the buffer on success.
    check(unsafe { libc::fstatfs(fd, fs.as_mut_ptr()) }, "fstatfs")?;
    // SAFETY: fstatfs returned 0, so the struct is initialised.
    let fs = unsafe { fs.assume_init() };
    #[allow(clippy::unnecessary_cast)] // f_type's C type differs between libcs
    Ok((fs.f_type as i64 == HUGETLBFS_MAGIC).then_some(fs.f_bsize as u64))
}

/// What an fd to be mapped is: its mappable size and identity, from one `fstat` (and for a
/// block device one `ioctl`).
pub fn mappable(fd: BorrowedFd<'_>) -> Result<Mappable> {
    let fd = fd.as_raw_fd();
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a full `struct stat` into the buffer on success.
    let ret = unsafe { libc::fstat(fd, st.as_mut_ptr()) };
    check(ret, "fstat")?;
    // SAFETY: fstat returned 0, so the struct is initialised.
    let st = unsafe { st.assume_init() };
    let identity = (st.st_dev, st.st_ino);
    let size = match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => Some(st.st_size as u64),
        libc::S_IFBLK => {
            // _IOR(0x12, 114, size_t). The request's C type differs by libc
            // (`unsigned long` in glibc, `int` in musl: `libc::Ioctl`); the kernel
            // reads its low 32 bits either way.
            const BLKGETSIZE64: u32 = 0x8008_1272;
            let mut size: u64 = 0;
            // SAFETY: BLKGETSIZE64 writes one u64 into `size`.
            let ret =
                unsafe { libc::ioctl(fd, BLKGETSIZE64 as libc::Ioctl, &mut size as *mut u64) };
            check(ret, "ioctl")?;
            Some(size)
        }
        _ => None,
    };
    let huge_page = huge_page(fd, st.st_blksize as u64)?;
    Ok(Mappable {
        size,
        identity,
        huge_page,
    })
}

/// The identity (`st_dev`, `st_ino`) of the file `fd` refers to, or `None`
/// when `fd` is not open.
pub fn file_identity(fd: BorrowedFd<'_>) -> Option<(u64, u64)> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a full `struct stat` into the buffer on success.
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: fstat returned 0, so the struct is initialised.
    let st = unsafe { st.assume_init() };
    Some((st.st_dev, st.st_ino))
}

/// The seals of a memfd (`F_GET_SEALS`), or `None` for an fd that has none.
pub fn seals(fd: BorrowedFd<'_>) -> Option<libc::c_int> {
    // SAFETY: F_GET_SEALS only reads kernel state of the fd.
    let ret = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    (ret >= 0).then_some(ret)
}

/// Turns a `-1` return into the thread's errno.
pub fn check(ret: libc::c_int, syscall: &'static str) -> Result<()> {
    if ret == -1 {
        Err(Error::last_os_error(syscall))
    } else {
        Ok(())
    }
}

/// Calls `f(start, end)` for each mapping of this process, in address order,
/// from `/proc/self/maps`, until `f` returns `false`. Reads through a buffer
/// on the stack: no heap allocation, so it works when the process is at its
/// map-count limit (where an allocation that needs a new mapping would fail).
/// Needs one fd (`EMFILE` when none is free).
pub fn for_each_mapping(mut f: impl FnMut(usize, usize) -> bool) -> Result<()> {
    // SAFETY: a NUL-terminated path.
    let raw = unsafe {
        libc::open(
            c"/proc/self/maps".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(Error::last_os_error("open"));
    }
    // SAFETY: a fresh fd that nothing else owns; dropping it closes it.
    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
    let fd = owned.as_raw_fd();
    let mut buf = [0u8; 8192];
    let mut filled = 0;
    // Parses "start-end ..." at the beginning of each line.
    let mut result = Ok(());
    'read: loop {
        // SAFETY: reads into the unfilled tail of our own buffer.
        let n = unsafe { libc::read(fd, buf[filled..].as_mut_ptr().cast(), buf.len() - filled) };
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            result = Err(Error::last_os_error("read"));
            break;
        }
        filled += n as usize;
        let mut line_start = 0;
        while let Some(nl) = buf[line_start..filled].iter().position(|&b| b == b'\n') {
            let line = &buf[line_start..line_start + nl];
            line_start += nl + 1;
            if let Some((a, b)) = parse_range(line) {
                if !f(a, b) {
                    break 'read;
                }
            }
        }
        if n == 0 {
            // A last line without a newline (never written by the kernel).
            if let Some((a, b)) = parse_range(&buf[line_start..filled]) {
                f(a, b);
            }
            break;
        }
        buf.copy_within(line_start..filled, 0);
        filled -= line_start;
        if filled == buf.len() {
            // A line longer than the buffer (a huge path): skip its rest.
            filled = 0;
        }
    }
    drop(owned);
    result
}

/// `start-end` at the beginning of a `/proc/self/maps` line, in hex.
fn parse_range(line: &[u8]) -> Option<(usize, usize)> {
    fn hex(s: &[u8]) -> Option<usize> {
        if s.is_empty() || s.len() > 16 {
            return None;
        }
        s.iter().try_fold(0usize, |acc, &c| {
            let d = (c as char).to_digit(16)?;
            Some((acc << 4) | d as usize)
        })
    }
    let dash = line.iter().position(|&b| b == b'-')?;
    let end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    Some((hex(&line[..dash])?, hex(line.get(dash + 1..end)?)?))
}

/// Whether a mapping of this process starts exactly at `addr`: where two
/// mappings meet there, the kernel did not merge them. Asks the kernel about
/// that one address (`PROCMAP_QUERY`, Linux 6.11+: O(log n) in the process's
/// mappings); where it cannot, reads `/proc/self/maps` up to `addr` (O(n)).
pub fn mapping_starts_at(addr: usize) -> Result<bool> {
    if let Some(answer) = procmap::vma_start(addr) {
        return answer.map(|start| start == addr);
    }
    mapping_starts_at_by_reading(addr)
}

/// [`mapping_starts_at`] by reading `/proc/self/maps`: the fallback for kernels
/// without `PROCMAP_QUERY`.
pub fn mapping_starts_at_by_reading(addr: usize) -> Result<bool> {
    let mut found = false;
    for_each_mapping(|a, _| {
        found = a == addr;
        a < addr
    })?;
    Ok(found)
}

/// `ioctl(PROCMAP_QUERY)` on `/proc/self/maps` (Linux 6.11+): the mapping
/// (VMA) that covers one address, in O(log n) of the process's mappings.
///
/// One fd to `/proc/self/maps` is opened on the first query (`O_CLOEXEC`) and
/// kept for the life of the process: opening one per query would cost ten
/// times the query. It is opened again in a forked child (a `/proc/self/maps`
/// fd answers for the process that opened it), and when its number was closed
/// behind this crate's back (`EBADF`) or names something else now (the number
/// is then left alone: it is not ours any more). A kernel without the ioctl
/// (`ENOTTY`, `EINVAL` on the first query) is remembered, its fd closed, and
/// the callers read `/proc/self/maps` instead.
pub(crate) mod procmap {
    use std::os::fd::RawFd;
    use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

    use crate::{Error, Result};

    /// `struct procmap_query` of `include/uapi/linux/fs.h` (104 bytes).
    #[repr(C)]
    #[derive(Default)]
    struct ProcmapQuery {
        size: u64,
        query_flags: u64,
        query_addr: u64,
        vma_start: u64,
        vma_end: u64,
        vma_flags: u64,
        vma_page_size: u64,
        vma_offset: u64,
        inode: u64,
        dev_major: u32,
        dev_minor: u32,
        vma_name_size: u32,
        build_id_size: u32,
        vma_name_addr: u64,
        build_id_addr: u64,
    }

    const _: () = assert!(std::mem::size_of::<ProcmapQuery>() == 104);

    /// `_IOWR('f', 17, struct procmap_query)`. The request's C type differs by
    /// libc (`libc::Ioctl`); the kernel reads its low 32 bits either way.
    const PROCMAP_QUERY: u32 = (3 << 30) | (104 << 16) | ((b'f' as u32) << 8) | 17;

    /// Not known yet, answered before, or refused by this kernel.
    const UNKNOWN: u8 = 0;
    const SUPPORTED: u8 = 1;
    const UNSUPPORTED: u8 = 2;
    static SUPPORT: AtomicU8 = AtomicU8::new(UNKNOWN);
    /// The kept fd and the process that opened it, as one value: the pid in
    /// the high 32 bits, the fd + 1 in the low ones (0: none kept).
    static KEPT: AtomicU64 = AtomicU64::new(0);

    fn pack(pid: libc::pid_t, fd: RawFd) -> u64 {
        ((pid as u32 as u64) << 32) | (fd as u32 as u64 + 1)
    }

    fn fd_of(kept: u64) -> RawFd {
        (kept as u32 as RawFd) - 1
    }

    /// The kept fd of this process, opened if there is none, and the value
    /// kept (to hand to [`forget`]).
    fn maps_fd() -> Result<(RawFd, u64)> {
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        let kept = KEPT.load(Ordering::Acquire);
        if kept != 0 {
            if kept >> 32 == pid as u32 as u64 {
                return Ok((fd_of(kept), kept));
            }
            // A forked child (one thread then): the inherited fd answers for
            // the parent. It is this process's own copy: closed here.
            if KEPT
                .compare_exchange(kept, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                // SAFETY: the child's copy of the fd this module opened.
                unsafe { libc::close(fd_of(kept)) };
            }
        }
        // SAFETY: a NUL-terminated path.
        let new = unsafe {
            libc::open(
                c"/proc/self/maps".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        if new < 0 {
            return Err(Error::last_os_error("open"));
        }
        let packed = pack(pid, new);
        match KEPT.compare_exchange(0, packed, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Ok((new, packed)),
            Err(theirs) => {
                // Another thread kept one first: use it, close ours.
                // SAFETY: `new` was opened above and is owned by nobody else.
                unsafe { libc::close(new) };
                Ok((fd_of(theirs), theirs))
            }
        }
    }

    /// Forgets the kept fd without closing it: its number was closed by
    /// someone else (and may name another file already).
    fn forget(kept: u64) {
        let _ = KEPT.compare_exchange(kept, 0, Ordering::AcqRel, Ordering::Relaxed);
    }

    /// One query for the mapping covering `addr` on `fd`: its start, or the errno.
    fn query(fd: RawFd, addr: usize) -> std::result::Result<usize, libc::c_int> {
        let mut q = ProcmapQuery {
            size: std::mem::size_of::<ProcmapQuery>() as u64,
            query_addr: addr as u64,
            ..ProcmapQuery::default()
        };
        // SAFETY: PROCMAP_QUERY reads and writes one `struct procmap_query`,
        // which `q` is (size set, no name or build-id buffer asked for). Any
        // other file answers an unknown request with an error.
        let ret = unsafe { libc::ioctl(fd, PROCMAP_QUERY as libc::Ioctl, &mut q) };
        if ret < 0 {
            return Err(std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO));
        }
        if q.vma_start > addr as u64 || q.vma_end <= addr as u64 {
            // Not an answer about `addr`: whatever the fd names now is not ours.
            return Err(libc::ENOTTY);
        }
        Ok(q.vma_start as usize)
    }

    /// The start of the mapping that covers `addr`, or `None` when this
    /// kernel cannot say (no `PROCMAP_QUERY`): the caller reads
    /// `/proc/self/maps` instead. No mapping at `addr` is `ENOENT`.
    pub fn vma_start(addr: usize) -> Option<Result<usize>> {
        if SUPPORT.load(Ordering::Relaxed) == UNSUPPORTED {
            return None;
        }
        // Twice at most: a kept fd that someone else closed is opened again.
        for _ in 0..2 {
            let (fd, kept) = match maps_fd() {
                Ok(fd) => fd,
                // No fd free (EMFILE…): the reader needs one too.
                Err(e) => return Some(Err(e)),
            };
            match query(fd, addr) {
                Ok(start) => {
                    SUPPORT.store(SUPPORTED, Ordering::Relaxed);
                    return Some(Ok(start));
                }
                Err(libc::ENOENT) => {
                    SUPPORT.store(SUPPORTED, Ordering::Relaxed);
                    return Some(Err(Error::Syscall {
                        syscall: "ioctl",
                        errno: libc::ENOENT,
                    }));
                }
                Err(libc::ENOTTY | libc::EINVAL) if SUPPORT.load(Ordering::Relaxed) == UNKNOWN => {
                    // This kernel has no PROCMAP_QUERY: never ask again.
                    SUPPORT.store(UNSUPPORTED, Ordering::Relaxed);
                    if KEPT
                        .compare_exchange(kept, 0, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                    {
                        // SAFETY: the fd this module opened, no longer kept.
                        unsafe { libc::close(fd) };
                    }
                    return None;
                }
                Err(libc::EINTR) => {}
                // The number was closed, or names something else now.
                Err(_) => forget(kept),
            }
        }
        // Still no answer: the reader decides this time.
        None
    }

    /// The kept fd, if any (for tests).
    #[cfg(test)]
    pub fn kept_fd() -> Option<RawFd> {
        let kept = KEPT.load(Ordering::Acquire);
        (kept != 0).then(|| fd_of(kept))
    }

    /// Behaves as on a kernel without `PROCMAP_QUERY` from now on (for tests
    /// of the fallback, in a child process).
    #[cfg(test)]
    pub fn disable() {
        SUPPORT.store(UNSUPPORTED, Ordering::Relaxed);
    }

    /// Whether this kernel answered a query (for tests).
    #[cfg(test)]
    pub fn supported() -> bool {
        SUPPORT.load(Ordering::Relaxed) == SUPPORTED
    }
}

/// Whether every page of `[addr, addr + len)` is mapped (any protection):
/// `msync(MS_ASYNC)` fails with `ENOMEM` over unmapped memory and otherwise
/// does nothing. Needs no fd and no memory. `addr` must be page aligned.
pub fn fully_mapped(addr: *mut u8, len: usize) -> bool {
    // SAFETY: MS_ASYNC neither writes back nor changes anything; it only
    // walks the mappings of the range.
    unsafe { libc::msync(addr.cast(), len, libc::MS_ASYNC) == 0 }
}

/// Address ranges inside `[start, end)` that no mapping of this process covers,
/// read from `/proc/self/maps`.
#[cfg(test)]
pub fn unmapped_ranges(start: usize, end: usize) -> Result<Vec<(usize, usize)>> {
    let mut holes = Vec::new();
    let mut cursor = start;
    for_each_mapping(|a, b| {
        if b <= cursor {
            return true;
        }
        if a >= end {
            return false;
        }
        if a > cursor {
            holes.push((cursor, a));
        }
        cursor = b;
        cursor < end
    })?;
    if cursor < end {
        holes.push((cursor, end));
    }
    Ok(holes)
}

/// `process_vm_readv(2)` on this process: copies from the `remote` ranges into
/// the `local` ones. Returns the bytes copied (fewer at the first bad page).
///
/// # Safety
/// Every range must lie in this process's address space, and the `local` ones
/// must be memory the caller may overwrite. The kernel checks each page and
/// reports `EFAULT` (or a short count) instead of raising a signal.
pub unsafe fn process_vm_readv(local: &[libc::iovec], remote: &[libc::iovec]) -> Result<usize> {
    // SAFETY: guaranteed by the caller.
    unsafe { process_vm(libc::process_vm_readv, "process_vm_readv", local, remote) }
}

/// `process_vm_writev(2)` on this process: copies from the `local` ranges into
/// the `remote` ones. Returns the bytes copied.
///
/// # Safety
/// As [`process_vm_readv`], with the `remote` ranges the ones overwritten.
pub unsafe fn process_vm_writev(local: &[libc::iovec], remote: &[libc::iovec]) -> Result<usize> {
    // SAFETY: guaranteed by the caller.
    unsafe { process_vm(libc::process_vm_writev, "process_vm_writev", local, remote) }
}

type ProcessVm = unsafe extern "C" fn(
    libc::pid_t,
    *const libc::iovec,
    libc::c_ulong,
    *const libc::iovec,
    libc::c_ulong,
    libc::c_ulong,
) -> libc::ssize_t;

/// One of the `process_vm_*` calls on this process.
///
/// # Safety
/// As [`process_vm_readv`] for the direction `call` copies in.
unsafe fn process_vm(
    call: ProcessVm,
    syscall: &'static str,
    local: &[libc::iovec],
    remote: &[libc::iovec],
) -> Result<usize> {
    // SAFETY: guaranteed by the caller; the slices give the iovec counts.
    let n = unsafe {
        call(
            libc::getpid(),
            local.as_ptr(),
            local.len() as libc::c_ulong,
            remote.as_ptr(),
            remote.len() as libc::c_ulong,
            0,
        )
    };
    if n < 0 {
        return Err(Error::last_os_error(syscall));
    }
    Ok(n as usize)
}

/// What the `SIGBUS` guard (guard.rs, x86-64 only) asks of signal handling.
#[cfg(target_arch = "x86_64")]
mod sigbus {
    use std::ptr;

    /// The current `SIGBUS` disposition, or `None` if it cannot be read.
    /// Async-signal-safe.
    pub fn sigbus_action() -> Option<libc::sigaction> {
        let mut old = std::mem::MaybeUninit::<libc::sigaction>::uninit();
        // SAFETY: only queries the current disposition, into `old`.
        if unsafe { libc::sigaction(libc::SIGBUS, ptr::null(), old.as_mut_ptr()) } != 0 {
            return None;
        }
        // SAFETY: sigaction succeeded and filled `old`.
        Some(unsafe { old.assume_init() })
    }

    /// A `SIG_DFL` disposition with no flags and an empty mask.
    pub fn default_sigaction() -> libc::sigaction {
        // SAFETY: a zeroed sigaction is a valid value: SIG_DFL, no flags, and an
        // empty mask on Linux (sigemptyset zeroes it too).
        unsafe { std::mem::zeroed() }
    }

    /// Sets the `SIGBUS` disposition; `false` when the kernel refused.
    /// Async-signal-safe.
    pub fn set_sigbus_action(action: &libc::sigaction) -> bool {
        // SAFETY: `action` is a valid disposition; which handler it names is the
        // caller's choice (the guard's own, or a previous one it restores).
        unsafe { libc::sigaction(libc::SIGBUS, action, ptr::null_mut()) == 0 }
    }

    /// Whether `SIGBUS` is blocked on the calling thread, or `None` if the mask
    /// cannot be read.
    pub fn sigbus_blocked() -> Option<bool> {
        let mut mask = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: only queries the thread's mask into `mask`, then reads it.
        unsafe {
            if libc::pthread_sigmask(libc::SIG_BLOCK, ptr::null(), mask.as_mut_ptr()) != 0 {
                return None;
            }
            Some(libc::sigismember(mask.as_ptr(), libc::SIGBUS) == 1)
        }
    }

    /// `raise(3)`. Async-signal-safe.
    pub fn raise(sig: libc::c_int) {
        // SAFETY: sending a signal to this thread; what it does is the disposition's.
        unsafe { libc::raise(sig) };
    }
}
#[cfg(target_arch = "x86_64")]
pub use sigbus::*;

/// The kernel interfaces of write tracking (`dirty.rs`): userfaultfd in
/// asynchronous write-protect mode and `PAGEMAP_SCAN` on `/proc/self/pagemap`
/// (Linux 6.7+). Debian 12's headers and the `libc` crate predate them, so the
/// structures and request numbers are defined here, from
/// `include/uapi/linux/userfaultfd.h` and `include/uapi/linux/fs.h`, each
/// size and number checked at compile time.
pub(crate) mod wp {
    use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

    use crate::{Error, Result};

    /// `UFFD_API`: the only API version.
    const UFFD_API: u64 = 0xAA;
    /// `userfaultfd(2)` flag: only faults taken in user mode are delivered to
    /// the descriptor (Linux 5.11+). Allowed to every process, where a plain
    /// descriptor needs `vm.unprivileged_userfaultfd`, `CAP_SYS_PTRACE` or
    /// `/dev/userfaultfd`. Asynchronous write-protect faults are resolved by
    /// the kernel whatever mode they are taken in, so tracking is the same.
    pub const UFFD_USER_MODE_ONLY: libc::c_int = 1;
    /// `UFFD_FEATURE_WP_HUGETLBFS_SHMEM`: write-protect of shared memory
    /// (memfds, tmpfs) and hugetlbfs (pte markers).
    pub const UFFD_FEATURE_WP_HUGETLBFS_SHMEM: u64 = 1 << 12;
    /// `UFFD_FEATURE_WP_UNPOPULATED`: write-protecting a range protects its
    /// pages not yet faulted in too (pte markers), so their first write is seen.
    pub const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
    /// `UFFD_FEATURE_WP_ASYNC`: the kernel resolves a write-protect fault
    /// itself (clears the page's protection and lets the write go on) instead
    /// of waiting for a handler; the cleared protection is the record of it.
    pub const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
    /// `UFFDIO_REGISTER_MODE_WP`.
    const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
    /// `UFFDIO_WRITEPROTECT_MODE_WP`: protect (without it: unprotect).
    const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1 << 0;

    /// `PM_SCAN_WP_MATCHING`: write-protect the pages reported, in the same
    /// walk (under the page table lock of each page).
    pub const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
    /// `PM_SCAN_CHECK_WPASYNC`: fail with `EPERM` at a mapping of the range
    /// that is not registered for asynchronous write-protect.
    pub const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;
    /// `PAGE_IS_WPALLOWED`: the page's mapping is registered for
    /// asynchronous write-protect (a category of the mapping, not the page).
    pub const PAGE_IS_WPALLOWED: u64 = 1 << 0;
    /// `PAGE_IS_WRITTEN`: written since it was last write-protected.
    pub const PAGE_IS_WRITTEN: u64 = 1 << 1;

    /// `struct uffdio_api`.
    #[repr(C)]
    struct UffdioApi {
        api: u64,
        features: u64,
        ioctls: u64,
    }

    /// `struct uffdio_range`.
    #[repr(C)]
    struct UffdioRange {
        start: u64,
        len: u64,
    }

    /// `struct uffdio_register`.
    #[repr(C)]
    struct UffdioRegister {
        range: UffdioRange,
        mode: u64,
        ioctls: u64,
    }

    /// `struct uffdio_writeprotect`.
    #[repr(C)]
    struct UffdioWriteprotect {
        range: UffdioRange,
        mode: u64,
    }

    /// `struct page_region`: one run of pages `[start, end)` with the same
    /// categories (those of the scan's `return_mask`).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct PageRegion {
        /// The run's first address.
        pub start: u64,
        /// The address after its last page.
        pub end: u64,
        /// Its `PAGE_IS_*` categories.
        pub categories: u64,
    }

    /// `struct pm_scan_arg`.
    #[repr(C)]
    struct PmScanArg {
        size: u64,
        flags: u64,
        start: u64,
        end: u64,
        walk_end: u64,
        vec: u64,
        vec_len: u64,
        max_pages: u64,
        category_inverted: u64,
        category_mask: u64,
        category_anyof_mask: u64,
        return_mask: u64,
    }

    const _: () = assert!(std::mem::size_of::<UffdioApi>() == 24);
    const _: () = assert!(std::mem::size_of::<UffdioRange>() == 16);
    const _: () = assert!(std::mem::size_of::<UffdioRegister>() == 32);
    const _: () = assert!(std::mem::size_of::<UffdioWriteprotect>() == 24);
    const _: () = assert!(std::mem::size_of::<PageRegion>() == 24);
    const _: () = assert!(std::mem::size_of::<PmScanArg>() == 96);

    /// `_IOC(dir, ty, nr, size)` of the generic encoding (x86-64, arm64,
    /// riscv…): direction in bits 30–31, size in 16–29, type in 8–15.
    const fn ioc(dir: u32, ty: u8, nr: u8, size: usize) -> u32 {
        (dir << 30) | ((size as u32) << 16) | ((ty as u32) << 8) | nr as u32
    }
    /// `_IOC_READ | _IOC_WRITE`, `_IOC_READ`.
    const IOWR: u32 = 3;
    const IOR: u32 = 2;

    /// `_IOWR(0xAA, 0x3F, struct uffdio_api)`.
    const UFFDIO_API: u32 = ioc(IOWR, 0xAA, 0x3F, std::mem::size_of::<UffdioApi>());
    /// `_IOWR(0xAA, 0x00, struct uffdio_register)`.
    const UFFDIO_REGISTER: u32 = ioc(IOWR, 0xAA, 0x00, std::mem::size_of::<UffdioRegister>());
    /// `_IOR(0xAA, 0x01, struct uffdio_range)`.
    const UFFDIO_UNREGISTER: u32 = ioc(IOR, 0xAA, 0x01, std::mem::size_of::<UffdioRange>());
    /// `_IOWR(0xAA, 0x06, struct uffdio_writeprotect)`.
    const UFFDIO_WRITEPROTECT: u32 =
        ioc(IOWR, 0xAA, 0x06, std::mem::size_of::<UffdioWriteprotect>());
    /// `_IOWR('f', 16, struct pm_scan_arg)`.
    const PAGEMAP_SCAN: u32 = ioc(IOWR, b'f', 16, std::mem::size_of::<PmScanArg>());

    // The numbers `<linux/userfaultfd.h>` and `<linux/fs.h>` give.
    const _: () = assert!(UFFDIO_API == 0xC018_AA3F);
    const _: () = assert!(UFFDIO_REGISTER == 0xC020_AA00);
    const _: () = assert!(UFFDIO_UNREGISTER == 0x8010_AA01);
    const _: () = assert!(UFFDIO_WRITEPROTECT == 0xC018_AA06);
    const _: () = assert!(PAGEMAP_SCAN == 0xC060_6610);

    /// `UFFDIO_REGISTER_MODE_MISSING`: faults on pages not present are
    /// delivered to the descriptor (and wait for it to fill them).
    const UFFDIO_REGISTER_MODE_MISSING: u64 = 1 << 0;
    /// `UFFD_EVENT_PAGEFAULT`: the `event` of a page-fault message.
    pub const UFFD_EVENT_PAGEFAULT: u8 = 0x12;

    /// `struct uffdio_copy`.
    #[repr(C)]
    struct UffdioCopy {
        dst: u64,
        src: u64,
        len: u64,
        mode: u64,
        copy: i64,
    }

    /// `struct uffd_msg`, as far as a page fault needs it: the event, and
    /// (for `UFFD_EVENT_PAGEFAULT`) the flags and the faulting address.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct UffdMsg {
        /// `UFFD_EVENT_*`.
        pub event: u8,
        reserved1: u8,
        reserved2: u16,
        reserved3: u32,
        /// `arg.pagefault.flags`.
        pub flags: u64,
        /// `arg.pagefault.address`.
        pub address: u64,
        /// `arg.pagefault.feat` (the thread id, with `UFFD_FEATURE_THREAD_ID`).
        feat: u64,
    }

    const _: () = assert!(std::mem::size_of::<UffdioCopy>() == 40);
    const _: () = assert!(std::mem::size_of::<UffdMsg>() == 32);

    /// `_IOR(0xAA, 0x02, struct uffdio_range)`.
    const UFFDIO_WAKE: u32 = ioc(IOR, 0xAA, 0x02, std::mem::size_of::<UffdioRange>());
    /// `_IOWR(0xAA, 0x03, struct uffdio_copy)`.
    const UFFDIO_COPY: u32 = ioc(IOWR, 0xAA, 0x03, std::mem::size_of::<UffdioCopy>());
    const _: () = assert!(UFFDIO_WAKE == 0x8010_AA02);
    const _: () = assert!(UFFDIO_COPY == 0xC028_AA03);

    /// `ioctl(fd, request, arg)`, `-1` turned into the thread's errno.
    ///
    /// # Safety
    /// `arg` must be what `request` reads and writes on this kind of fd, valid
    /// for the call.
    unsafe fn ioctl<T>(
        fd: BorrowedFd<'_>,
        request: u32,
        arg: *mut T,
        name: &'static str,
    ) -> Result<libc::c_int> {
        // SAFETY: guaranteed by the caller. The request's C type differs by
        // libc (`libc::Ioctl`); the kernel reads its low 32 bits either way.
        let ret = unsafe { libc::ioctl(fd.as_raw_fd(), request as libc::Ioctl, arg) };
        if ret < 0 {
            Err(Error::last_os_error(name))
        } else {
            Ok(ret)
        }
    }

    /// `userfaultfd(2)` with `flags` (`O_CLOEXEC`, `O_NONBLOCK`,
    /// [`UFFD_USER_MODE_ONLY`]).
    pub fn userfaultfd(flags: libc::c_int) -> Result<OwnedFd> {
        // SAFETY: creates a new fd; no memory is passed.
        let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
        if fd < 0 {
            return Err(Error::last_os_error("userfaultfd"));
        }
        // SAFETY: a fresh fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
    }

    /// `UFFDIO_API`: enables `features` on a new userfaultfd. Returns every
    /// feature the kernel offers (its answer). A kernel that does not know a
    /// feature asked for fails with `EINVAL`; a descriptor can be set up once.
    pub fn uffd_api(uffd: BorrowedFd<'_>, features: u64) -> Result<u64> {
        let mut api = UffdioApi {
            api: UFFD_API,
            features,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_API reads and writes one `struct uffdio_api`.
        unsafe { ioctl(uffd, UFFDIO_API, &mut api, "ioctl(UFFDIO_API)") }?;
        Ok(api.features)
    }

    /// `UFFDIO_REGISTER` of `[start, start + len)` in write-protect mode.
    /// Changes no page: only faults the range takes from now on are the
    /// descriptor's (in asynchronous mode: resolved by the kernel).
    pub fn uffd_register_wp(uffd: BorrowedFd<'_>, start: usize, len: usize) -> Result<()> {
        let mut reg = UffdioRegister {
            range: UffdioRange {
                start: start as u64,
                len: len as u64,
            },
            mode: UFFDIO_REGISTER_MODE_WP,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER reads and writes one `struct uffdio_register`.
        unsafe { ioctl(uffd, UFFDIO_REGISTER, &mut reg, "ioctl(UFFDIO_REGISTER)") }?;
        Ok(())
    }

    /// `UFFDIO_REGISTER` of `[start, start + len)` in missing mode: from now
    /// on a fault on a page not present there waits until the descriptor's
    /// owner fills it ([`uffd_copy`]) or the descriptor is
    /// closed. Changes no page.
    pub fn uffd_register_missing(uffd: BorrowedFd<'_>, start: usize, len: usize) -> Result<()> {
        let mut reg = UffdioRegister {
            range: UffdioRange {
                start: start as u64,
                len: len as u64,
            },
            mode: UFFDIO_REGISTER_MODE_MISSING,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER reads and writes one `struct uffdio_register`.
        unsafe { ioctl(uffd, UFFDIO_REGISTER, &mut reg, "ioctl(UFFDIO_REGISTER)") }?;
        Ok(())
    }

    /// `UFFDIO_COPY` of `len` bytes from `src` (this process's memory) into
    /// the registered range at `dst`, waking the threads that wait there.
    /// The kernel allocates the pages and copies atomically: a page already
    /// present is not touched (`EEXIST`). Returns the bytes copied, which may
    /// be fewer than `len` (the error of the rest comes with the next call);
    /// an error with nothing copied is `Err`.
    pub fn uffd_copy(uffd: BorrowedFd<'_>, dst: usize, src: &[u8]) -> Result<usize> {
        let mut copy = UffdioCopy {
            dst: dst as u64,
            src: src.as_ptr() as u64,
            len: src.len() as u64,
            mode: 0,
            copy: 0,
        };
        // UFFDIO_COPY reads and writes one `struct uffdio_copy` and reads
        // `len` bytes at `src` (a slice borrowed for the call). It writes only
        // pages of `dst` that are registered with `uffd` and not present:
        // memory nothing can be reading yet (a reader waits for it).
        // SAFETY: as just said.
        let copied = unsafe { ioctl(uffd, UFFDIO_COPY, &mut copy, "ioctl(UFFDIO_COPY)") };
        match copied {
            Ok(_) => Ok(copy.copy.max(0) as usize),
            Err(_) if copy.copy > 0 => Ok(copy.copy as usize),
            Err(e) => Err(e),
        }
    }

    /// `UFFDIO_WAKE` of `[start, start + len)`: wakes the threads waiting on a
    /// fault there (the page was filled by an earlier call).
    pub fn uffd_wake(uffd: BorrowedFd<'_>, start: usize, len: usize) -> Result<()> {
        let mut range = UffdioRange {
            start: start as u64,
            len: len as u64,
        };
        // SAFETY: UFFDIO_WAKE reads one `struct uffdio_range`.
        unsafe { ioctl(uffd, UFFDIO_WAKE, &mut range, "ioctl(UFFDIO_WAKE)") }?;
        Ok(())
    }

    /// Reads the pending messages of a non-blocking userfaultfd into `out`;
    /// returns how many (0 when none is pending).
    pub fn uffd_read(uffd: BorrowedFd<'_>, out: &mut [UffdMsg]) -> Result<usize> {
        let bytes = std::mem::size_of_val(out);
        // SAFETY: the kernel writes whole `struct uffd_msg`s, at most `bytes`
        // bytes, into `out`, borrowed exclusively for the call.
        let n = unsafe { libc::read(uffd.as_raw_fd(), out.as_mut_ptr().cast(), bytes) };
        if n < 0 {
            let e = Error::last_os_error("read(userfaultfd)");
            return if e.errno() == Some(libc::EAGAIN) {
                Ok(0)
            } else {
                Err(e)
            };
        }
        Ok(n as usize / std::mem::size_of::<UffdMsg>())
    }

    /// A new `eventfd(2)` (`EFD_CLOEXEC | EFD_NONBLOCK`), to wake a thread
    /// that polls it.
    pub fn eventfd() -> Result<OwnedFd> {
        // SAFETY: creates a new fd; no memory is passed.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(Error::last_os_error("eventfd"));
        }
        // SAFETY: a fresh fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Adds 1 to an eventfd's counter: it polls readable from now on.
    pub fn eventfd_signal(fd: BorrowedFd<'_>) -> Result<()> {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a local array.
        let n = unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        if n < 0 {
            return Err(Error::last_os_error("write(eventfd)"));
        }
        Ok(())
    }

    /// `poll(2)` for input on `fds`, waiting up to `timeout_ms` (-1: for
    /// ever). Returns, per fd, whether it is readable (or hung up / in
    /// error: a read then says which). `EINTR` counts as nothing ready.
    pub fn poll_readable<const N: usize>(
        fds: [BorrowedFd<'_>; N],
        timeout_ms: libc::c_int,
    ) -> Result<[bool; N]> {
        let mut polled = fds.map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        // SAFETY: `polled` holds N `struct pollfd`s, borrowed for the call.
        let n = unsafe { libc::poll(polled.as_mut_ptr(), N as libc::nfds_t, timeout_ms) };
        if n < 0 {
            let e = Error::last_os_error("poll");
            return if e.errno() == Some(libc::EINTR) {
                Ok([false; N])
            } else {
                Err(e)
            };
        }
        Ok(polled.map(|p| p.revents != 0))
    }

    /// `UFFDIO_UNREGISTER` of `[start, start + len)`: the kernel lifts the
    /// write protection of its pages too.
    pub fn uffd_unregister(uffd: BorrowedFd<'_>, start: usize, len: usize) -> Result<()> {
        let mut range = UffdioRange {
            start: start as u64,
            len: len as u64,
        };
        // SAFETY: UFFDIO_UNREGISTER reads one `struct uffdio_range`.
        unsafe {
            ioctl(
                uffd,
                UFFDIO_UNREGISTER,
                &mut range,
                "ioctl(UFFDIO_UNREGISTER)",
            )
        }?;
        Ok(())
    }

    /// `UFFDIO_WRITEPROTECT` (protect) of `[start, start + len)`, registered
    /// in write-protect mode. Contents are not touched; the next write to each
    /// page faults once (resolved by the kernel in asynchronous mode).
    pub fn uffd_write_protect(uffd: BorrowedFd<'_>, start: usize, len: usize) -> Result<()> {
        let mut wp = UffdioWriteprotect {
            range: UffdioRange {
                start: start as u64,
                len: len as u64,
            },
            mode: UFFDIO_WRITEPROTECT_MODE_WP,
        };
        // SAFETY: UFFDIO_WRITEPROTECT reads one `struct uffdio_writeprotect`.
        unsafe {
            ioctl(
                uffd,
                UFFDIO_WRITEPROTECT,
                &mut wp,
                "ioctl(UFFDIO_WRITEPROTECT)",
            )
        }?;
        Ok(())
    }

    /// What one `PAGEMAP_SCAN` asks (the output array aside).
    #[derive(Clone, Copy, Debug)]
    pub struct Scan {
        /// `PM_SCAN_*`.
        pub flags: u64,
        /// The range `[start, end)`, page aligned.
        pub start: usize,
        /// Its end.
        pub end: usize,
        /// `category_inverted`, `category_mask`, `return_mask` (`PAGE_IS_*`).
        pub inverted: u64,
        /// Categories a page must have (after `inverted`).
        pub mask: u64,
        /// Categories reported in each [`PageRegion`].
        pub returned: u64,
    }

    /// `ioctl(pagemap, PAGEMAP_SCAN)` over `scan`'s range, with `out` for the
    /// runs of matching pages. Returns how many entries of `out` the kernel
    /// filled and where its walk ended (before `scan.end` when `out` filled
    /// up: the caller goes on from there). `pagemap` must be an fd of
    /// `/proc/<pid>/pagemap`; the scan reads (and with `PM_SCAN_WP_MATCHING`
    /// write-protects) that process's page tables, never its memory.
    pub fn pagemap_scan(
        pagemap: BorrowedFd<'_>,
        scan: Scan,
        out: &mut [PageRegion],
    ) -> Result<(usize, usize)> {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            flags: scan.flags,
            start: scan.start as u64,
            end: scan.end as u64,
            walk_end: 0,
            vec: out.as_mut_ptr() as u64,
            vec_len: out.len() as u64,
            max_pages: 0,
            category_inverted: scan.inverted,
            category_mask: scan.mask,
            category_anyof_mask: 0,
            return_mask: scan.returned,
        };
        // SAFETY: PAGEMAP_SCAN reads and writes one `struct pm_scan_arg` and
        // writes at most `vec_len` `struct page_region`s at `vec`: `out`,
        // borrowed exclusively for the call.
        let n = unsafe { ioctl(pagemap, PAGEMAP_SCAN, &mut arg, "ioctl(PAGEMAP_SCAN)") }?;
        Ok(((n as usize).min(out.len()), arg.walk_end as usize))
    }

    /// Opens `path` read-only (`O_CLOEXEC`).
    pub fn open_read_only(path: &std::ffi::CStr) -> Result<OwnedFd> {
        // SAFETY: a NUL-terminated path; creates a new fd.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(Error::last_os_error("open"));
        }
        // SAFETY: a fresh fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// A null pointer helper for `mmap` without a hint.
pub fn no_hint() -> *mut u8 {
    ptr::null_mut()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_is_a_power_of_two() {
        assert!(page_size().is_power_of_two());
        assert_eq!(page_size(), page_size());
    }

    /// A fresh private `PROT_NONE` reservation of `len` bytes, for the test to unmap.
    fn reserve(len: usize) -> *mut u8 {
        // SAFETY: no MAP_FIXED: the kernel picks free address space nothing else uses.
        unsafe {
            mmap(
                no_hint(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                None,
                0,
            )
        }
        .unwrap()
    }

    #[test]
    fn unmapped_ranges_sees_a_hole() {
        let ps = page_size();
        let base = reserve(3 * ps);
        let start = base as usize;
        assert!(unmapped_ranges(start, start + 3 * ps).unwrap().is_empty());
        // SAFETY: the middle page belongs to the mapping made above.
        unsafe { munmap(base.add(ps), ps) }.unwrap();
        assert_eq!(
            unmapped_ranges(start, start + 3 * ps).unwrap(),
            vec![(start + ps, start + 2 * ps)]
        );
        // SAFETY: the rest of the mapping made above.
        unsafe { munmap(base, 3 * ps) }.unwrap();
    }

    #[test]
    fn the_maps_reader_sees_every_mapping_and_probes_without_an_fd() {
        let ps = page_size();
        let mut lines = 0usize;
        for_each_mapping(|a, b| {
            assert!(a < b);
            lines += 1;
            true
        })
        .unwrap();
        let text = std::fs::read_to_string("/proc/self/maps").unwrap();
        // Other threads may map meanwhile; the counts stay close.
        assert!(lines.abs_diff(text.lines().count()) < 16, "{lines}");
        let base = reserve(3 * ps);
        assert!(mapping_starts_at(base as usize).unwrap());
        assert!(!mapping_starts_at(base as usize + ps).unwrap());
        assert!(mapping_starts_at_by_reading(base as usize).unwrap());
        assert!(!mapping_starts_at_by_reading(base as usize + ps).unwrap());
        assert!(fully_mapped(base, 3 * ps));
        // SAFETY: the middle page of the reservation made above.
        unsafe { munmap(base.add(ps), ps) }.unwrap();
        assert!(!fully_mapped(base, 3 * ps));
        assert!(fully_mapped(base, ps));
        assert!(mapping_starts_at(base as usize + 2 * ps).unwrap());
        // SAFETY: the rest of the reservation.
        unsafe { munmap(base, 3 * ps) }.unwrap();
    }

    #[test]
    fn the_layout_query_answers_as_the_maps_file_does() {
        // In a child process: it closes and replaces the kept fd.
        crate::testutil::child_passes("sys::tests::layout_query_child", "layout query:");
    }

    #[test]
    #[ignore = "run in a child process by the_layout_query_answers_as_the_maps_file_does"]
    fn layout_query_child() {
        let ps = page_size();
        let base = reserve(8 * ps);
        let start = base as usize;
        // Pages 2 and 5 apart from their neighbours; page 7 unmapped.
        // SAFETY: pages of the reservation made above.
        unsafe {
            mprotect(base.add(2 * ps), ps, libc::PROT_READ).unwrap();
            mprotect(base.add(5 * ps), ps, libc::PROT_READ).unwrap();
            munmap(base.add(7 * ps), ps).unwrap();
        }
        let agree = || {
            for page in 0..7 {
                let addr = start + page * ps;
                assert_eq!(
                    mapping_starts_at(addr).unwrap(),
                    mapping_starts_at_by_reading(addr).unwrap(),
                    "page {page}"
                );
            }
        };
        agree();
        if !procmap::supported() {
            // SAFETY: the reservation made above.
            unsafe { munmap(base, 7 * ps) }.unwrap();
            println!("layout query: not offered by this kernel, read /proc/self/maps");
            return;
        }
        assert!(mapping_starts_at(start + 2 * ps).unwrap());
        assert!(!mapping_starts_at(start + ps).unwrap());
        // Nothing mapped there: no answer (taken as apart by the arena).
        assert!(mapping_starts_at(start + 7 * ps).is_err());
        // The kept fd closed behind the crate's back: opened again.
        let kept = procmap::kept_fd().unwrap();
        crate::testutil::close_raw(kept);
        agree();
        let again = procmap::kept_fd().unwrap();
        // Its number made to name another file: left to its owner, a new one kept.
        let null = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: replaces the crate's kept fd number (a test of exactly that).
        assert_eq!(unsafe { libc::dup2(null.as_raw_fd(), again) }, again);
        agree();
        let third = procmap::kept_fd().unwrap();
        assert_ne!(third, again);
        assert!(crate::sys::file_identity(crate::testutil::borrow(again)).is_some());
        crate::testutil::close_raw(again);
        assert!(procmap::supported());
        // SAFETY: the reservation made above.
        unsafe { munmap(base, 7 * ps) }.unwrap();
        println!("layout query: fds {kept}, {again}, {third}");
    }

    #[test]
    fn block_devices_have_a_size() {
        // Any readable block device will do; none on this machine: nothing to check.
        let Some(dev) = std::fs::read_dir("/sys/block").ok().and_then(|dir| {
            dir.flatten()
                .map(|e| std::path::Path::new("/dev").join(e.file_name()))
                .find_map(|p| std::fs::File::open(p).ok())
        }) else {
            return;
        };
        use std::os::fd::AsFd;
        assert!(mappable(dev.as_fd()).unwrap().size.is_some());
        let null = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(mappable(null.as_fd()).unwrap().size, None);
    }

    #[test]
    fn fstat_of_bad_fd_is_ebadf() {
        assert_eq!(
            mappable(crate::testutil::borrow(999_999)).map(|m| m.size),
            Err(Error::Syscall {
                syscall: "fstat",
                errno: libc::EBADF
            })
        );
    }
}
