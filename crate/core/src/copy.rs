//! Fault-safe copies: a page that cannot be accessed (e.g. of a truncated file)
//! is `EFAULT`, never `SIGBUS`.
//!
//! The copy is first tried as a plain copy guarded by a `SIGBUS` handler (see
//! `guard`, x86-64). When the guard is not armed, or the copy did fault, it is
//! done again with `process_vm_readv`/`process_vm_writev` on the own process,
//! which reports the fault (`EFAULT`, with that syscall's name) or — should the
//! page be back — succeeds. Both paths give the same bytes: like `memmove`,
//! also when source and destination overlap (a view of the same region).
//!
//! Writes probe every destination page before the first byte is written, so a
//! write over a page that is already gone changes nothing. Only a page that
//! vanishes *during* the copy (a concurrent truncation) can leave part of it
//! done; the error then says how many bytes were written ([`Error::Fault`]).

use crate::{Error, Result};

/// The guarded plain copy: `Some(0)` when it did the whole copy, `Some(n)`
/// when it faulted with `n` bytes left, `None` when the guard is not armed or
/// not built for this architecture. With `probe_dst`, every destination page
/// is read first (nothing is written if one of them is gone).
///
/// # Safety
/// Both ranges must be mapped with the access the copy needs (the callers
/// check them against the region's layout); only a page that vanished under a
/// mapping may fault, as `SIGBUS`, which the guard catches.
unsafe fn guarded(dst: *mut u8, src: *const u8, len: usize, probe_dst: bool) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: the ranges are mapped as required; see above.
        unsafe { crate::guard::copy(dst, src, len, probe_dst) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (dst, src, len, probe_dst);
        None
    }
}

pub(crate) fn iov(ptr: *const u8, len: usize) -> libc::iovec {
    libc::iovec {
        iov_base: ptr as *mut libc::c_void,
        iov_len: len,
    }
}

/// Which way a syscall copy goes: out of the mapping (`process_vm_readv`) or
/// into it (`process_vm_writev`).
#[derive(Clone, Copy)]
enum Way {
    Read,
    Write,
}

impl Way {
    fn syscall(self) -> &'static str {
        match self {
            Way::Read => "process_vm_readv",
            Way::Write => "process_vm_writev",
        }
    }
}

/// Copies `len` bytes between `local` and `remote` (both in this process) with
/// one of the `process_vm_*` calls. On failure returns the bytes copied so far
/// and the errno.
///
/// # Safety
/// Both ranges must lie in this process's address space; the kernel checks
/// each page and reports `EFAULT` rather than raising a signal. The written
/// side must be memory the caller may overwrite.
unsafe fn kernel_copy(
    way: Way,
    local: *const u8,
    remote: *const u8,
    len: usize,
) -> std::result::Result<(), (usize, i32)> {
    let mut done = 0;
    while done < len {
        // SAFETY: both pointers advance inside the ranges the caller named.
        let (l, r) = unsafe {
            (
                iov(local.add(done), len - done),
                iov(remote.add(done), len - done),
            )
        };
        // SAFETY: the iovecs describe ranges of this process (see above).
        let n = unsafe {
            match way {
                Way::Read => crate::sys::process_vm_readv(&[l], &[r]),
                Way::Write => crate::sys::process_vm_writev(&[l], &[r]),
            }
        };
        match n {
            Ok(0) => return Err((done, libc::EFAULT)),
            Ok(n) => done += n,
            Err(e) => return Err((done, e.errno().unwrap_or(libc::EIO))),
        }
    }
    Ok(())
}

/// The error of a copy that stopped after `copied` bytes.
fn fault(way: Way, copied: usize, errno: i32) -> Error {
    if errno == libc::EFAULT {
        Error::Fault {
            syscall: way.syscall(),
            copied: copied as u64,
        }
    } else {
        Error::Syscall {
            syscall: way.syscall(),
            errno,
        }
    }
}

/// Reads one byte of every page of `[addr, addr + len)` with
/// `process_vm_readv`, up to 1024 pages a call: `EFAULT` if any page cannot be
/// faulted in (unmapped, `PROT_NONE`, or past the end of its file).
///
/// # Safety
/// `addr` must point into this process's address space.
pub unsafe fn probe_pages(addr: *const u8, len: usize) -> Result<()> {
    const BATCH: usize = 1024;
    let page = crate::page_size();
    let mut sink = [0u8; BATCH];
    let start = addr as usize;
    let end = start.saturating_add(len);
    let mut at = start;
    while at < end {
        let mut remote = [iov(std::ptr::null(), 0); BATCH];
        let mut n = 0;
        while n < BATCH && at < end {
            remote[n] = iov(at as *const u8, 1);
            n += 1;
            at = (at | (page - 1)) + 1;
        }
        let local = iov(sink.as_mut_ptr(), n);
        // SAFETY: `local` is our own buffer of `n` bytes; each remote iovec is
        // one byte of this process; the kernel reports a bad page as a short
        // read or EFAULT.
        let got = unsafe { crate::sys::process_vm_readv(&[local], &remote[..n]) };
        if !matches!(got, Ok(read) if read == n) {
            return Err(Error::Fault {
                syscall: "process_vm_readv",
                copied: 0,
            });
        }
    }
    Ok(())
}

/// Whether `[dst, dst + len)` and `[src, src + len)` overlap.
fn overlaps(dst: *const u8, src: *const u8, len: usize) -> bool {
    let (d, s) = (dst as usize, src as usize);
    len > 0 && d < s.saturating_add(len) && s < d.saturating_add(len)
}

/// The syscall copy of `len` bytes from `src` to `dst`, like `memmove`: where
/// the ranges overlap, through a bounce buffer, chunk by chunk in the
/// direction that never reads a byte already overwritten. Both sides go
/// through the kernel, so either may be memory that can vanish.
///
/// # Safety
/// Both ranges must lie in this process's address space; `dst` must be memory
/// the caller may overwrite.
unsafe fn kernel_memmove(way: Way, dst: *mut u8, src: *const u8, len: usize) -> Result<()> {
    if !overlaps(dst, src, len) {
        // SAFETY: guaranteed by the caller. For a read the local side is `dst`.
        let result = unsafe {
            match way {
                Way::Read => kernel_copy(way, dst, src, len),
                Way::Write => kernel_copy(way, src, dst, len),
            }
        };
        return result.map_err(|(copied, errno)| fault(way, copied, errno));
    }
    const CHUNK: usize = 64 << 10;
    let mut bounce = vec![0u8; CHUNK.min(len)];
    let backward = (dst as usize) > (src as usize);
    let mut done = 0;
    while done < len {
        let n = CHUNK.min(len - done);
        let at = if backward { len - done - n } else { done };
        // SAFETY: `at + n <= len`: both chunks lie inside the caller's ranges;
        // `bounce` is ours. The chunk is read whole before any of it is written.
        unsafe {
            kernel_copy(Way::Read, bounce.as_mut_ptr(), src.add(at), n)
                .map_err(|(_, errno)| fault(way, done, errno))?;
            kernel_copy(Way::Write, bounce.as_ptr(), dst.add(at), n)
                .map_err(|(copied, errno)| fault(way, done + copied, errno))?;
        }
        done += n;
    }
    Ok(())
}

/// Copies `dst.len()` bytes from `src` into `dst`; a page that vanished under
/// the mapping is `EFAULT`.
///
/// # Safety
/// `src..src + dst.len()` must be mapped readable (as the region's layout says):
/// the guarded copy catches `SIGBUS`, not `SIGSEGV`. For memory that may not be
/// mapped at all, use [`read_via_kernel`].
pub unsafe fn read_fault_safe(src: *const u8, dst: &mut [u8]) -> Result<()> {
    let len = dst.len();
    // SAFETY: `dst` is ours to write; the caller vouches for `src`.
    match unsafe { guarded(dst.as_mut_ptr(), src, len, false) } {
        Some(0) => return Ok(()),
        // An overlapping copy that stopped part-way has overwritten some of its
        // own source: doing it again would copy wrong bytes.
        Some(left) if left < len && overlaps(dst.as_ptr(), src, len) => {
            return Err(Error::Fault {
                syscall: Way::Read.syscall(),
                copied: (len - left) as u64,
            })
        }
        _ => {}
    }
    // SAFETY: as the caller vouched; the kernel checks each page anyway.
    unsafe { kernel_memmove(Way::Read, dst.as_mut_ptr(), src, len) }
}

/// Copies `src` to `dst`; a page that vanished under the mapping is `EFAULT`.
/// A destination page that is gone before the call fails it with nothing
/// written; one that vanishes during the copy leaves the error's `copied`
/// bytes written.
///
/// # Safety
/// `dst..dst + src.len()` must be mapped writable (as the region's layout says),
/// at memory the caller owns and may overwrite.
pub unsafe fn write_fault_safe(dst: *mut u8, src: &[u8]) -> Result<()> {
    let len = src.len();
    // SAFETY: `src` is ours to read; the caller vouches for `dst`.
    let written = match unsafe { guarded(dst, src.as_ptr(), len, true) } {
        Some(0) => return Ok(()),
        // Faulted mid-copy (after the probe passed): that much is written. An
        // overlapping copy cannot be redone (its source is partly overwritten).
        Some(left) if left < len && overlaps(dst, src.as_ptr(), len) => {
            return Err(Error::Fault {
                syscall: Way::Write.syscall(),
                copied: (len - left) as u64,
            })
        }
        Some(left) => len - left,
        None => 0,
    };
    // SAFETY: `dst` is in this process; nothing is written unless every page is there.
    unsafe { probe_pages(dst, len) }.map_err(|_| Error::Fault {
        syscall: "process_vm_writev",
        copied: written as u64,
    })?;
    // SAFETY: as the caller vouched; the kernel checks each page anyway.
    unsafe { kernel_memmove(Way::Write, dst, src.as_ptr(), len) }.map_err(|e| match e {
        Error::Fault { syscall, copied } => Error::Fault {
            syscall,
            copied: copied.max(written as u64),
        },
        e => e,
    })
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
        CopyMode::FaultSafe => unsafe { read_fault_safe(src, dst) },
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
        CopyMode::FaultSafe => unsafe { write_fault_safe(dst, src) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::unlinked_file;
    use std::os::fd::AsRawFd;

    /// Runs `f` with `SIGBUS` blocked in this thread when `blocked`: the guard
    /// then declines and every copy takes the syscall path.
    fn with_sigbus(blocked: bool, f: impl FnOnce()) {
        // SAFETY: sigsets we own; only this thread's mask changes, and it is
        // restored below.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGBUS);
            let how = if blocked {
                libc::SIG_BLOCK
            } else {
                libc::SIG_UNBLOCK
            };
            libc::pthread_sigmask(how, &set, &mut old);
            f();
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        }
    }

    /// A shared read-write mapping of a `pages`-page file; the file is returned
    /// so the caller can truncate it.
    fn file_mapping(pages: usize) -> (*mut u8, std::fs::File) {
        let ps = crate::page_size();
        let content: Vec<u8> = (0..pages * ps).map(|i| (i % 251) as u8).collect();
        let file = unlinked_file(&format!("copy{pages}"), &content, true);
        // SAFETY: a fresh shared mapping of the whole file.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                pages * ps,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        (p.cast(), file)
    }

    #[test]
    fn the_syscall_path_copies_like_memmove() {
        // Larger than the bounce chunk, both directions, both ways.
        let len = 200 << 10;
        for (from, to) in [(0usize, 4096usize), (4096, 0), (0, 1), (1, 0)] {
            for way in [Way::Read, Way::Write] {
                let mut buf: Vec<u8> = (0..len + 8192).map(|i| (i * 7 % 253) as u8).collect();
                let mut want = buf.clone();
                want.copy_within(from..from + len, to);
                let base = buf.as_mut_ptr();
                // SAFETY: both ranges lie inside `buf`.
                unsafe { kernel_memmove(way, base.add(to), base.add(from), len) }.unwrap();
                assert!(buf == want, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn both_paths_give_the_same_bytes_for_overlapping_copies() {
        let ps = crate::page_size();
        for blocked in [false, true] {
            with_sigbus(blocked, || {
                let (p, _file) = file_mapping(4);
                // SAFETY: the mapping is 4 pages; every range below lies inside it.
                unsafe {
                    let mut want: Vec<u8> = std::slice::from_raw_parts(p, 4 * ps).to_vec();
                    // read: region -> a "view" of the same region, overlapping.
                    read_fault_safe(p, std::slice::from_raw_parts_mut(p.add(100), 2 * ps)).unwrap();
                    want.copy_within(0..2 * ps, 100);
                    // write: a "view" of the same region -> region, overlapping.
                    write_fault_safe(p.add(50), std::slice::from_raw_parts(p.add(300), 2 * ps))
                        .unwrap();
                    want.copy_within(300..300 + 2 * ps, 50);
                    assert!(
                        std::slice::from_raw_parts(p, 4 * ps) == &want[..],
                        "blocked: {blocked}"
                    );
                    libc::munmap(p.cast(), 4 * ps);
                }
            });
        }
    }

    #[test]
    fn a_write_over_a_vanished_page_writes_nothing() {
        let ps = crate::page_size();
        for blocked in [false, true] {
            with_sigbus(blocked, || {
                let (p, file) = file_mapping(2);
                file.set_len(ps as u64).unwrap();
                let data = vec![0xeeu8; 2 * ps];
                // SAFETY: the mapping is 2 pages; its second page is past the end
                // of the file, which the fault-safe copy reports.
                let err = unsafe { write_fault_safe(p, &data) }.unwrap_err();
                assert_eq!(err.errno(), Some(libc::EFAULT));
                assert!(
                    matches!(err, Error::Fault { copied: 0, .. }),
                    "blocked: {blocked}"
                );
                // SAFETY: the first page is still backed by the file.
                let first = unsafe { std::slice::from_raw_parts(p, ps) };
                assert!(first.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
                // A read stops at the missing page too, and says how far it got.
                let mut out = vec![0u8; 2 * ps];
                // SAFETY: as above.
                let err = unsafe { read_fault_safe(p, &mut out) }.unwrap_err();
                assert_eq!(err.errno(), Some(libc::EFAULT));
                // SAFETY: the mapping made above.
                unsafe { libc::munmap(p.cast(), 2 * ps) };
            });
        }
    }
}
