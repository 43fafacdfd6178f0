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

use crate::slice::copy_len;
use crate::{Error, MemSlice, MemSliceMut, Result};

/// The guarded plain copy: `Some(0)` when it did the whole copy, `Some(n)`
/// when it faulted with `n` bytes left, `None` when the guard is not armed or
/// not built for this architecture. With `probe_dst`, every destination page
/// is read first (nothing is written if one of them is gone).
fn guarded(dst: MemSliceMut<'_>, src: MemSlice<'_>, probe_dst: bool) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    {
        crate::guard::copy(dst, src, probe_dst)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (dst, src, probe_dst);
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

/// Copies `src` into `dst` (of the same length; neither overlapping the
/// other) with one of the `process_vm_*` calls: `Way::Read` takes `dst` as
/// the local side, `Way::Write` `src`. On failure returns the bytes copied so
/// far and the errno.
fn kernel_copy(
    way: Way,
    dst: MemSliceMut<'_>,
    src: MemSlice<'_>,
) -> std::result::Result<(), (usize, i32)> {
    let len = dst.len().min(src.len());
    let mut done = 0;
    while done < len {
        // SAFETY: both pointers advance inside their slices.
        let (d, s) = unsafe {
            (
                iov(dst.as_ptr().add(done), len - done),
                iov(src.as_ptr().add(done), len - done),
            )
        };
        let (local, remote) = match way {
            Way::Read => (d, s),
            Way::Write => (s, d),
        };
        // SAFETY: the iovecs describe the two slices, memory of this process
        // (their contracts), `dst` writable; the kernel checks each page and
        // reports EFAULT rather than raising a signal.
        let n = unsafe {
            match way {
                Way::Read => crate::sys::process_vm_readv(&[local], &[remote]),
                Way::Write => crate::sys::process_vm_writev(&[local], &[remote]),
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

/// The syscall copy of `src` into `dst` (of the same length), like `memmove`:
/// where the ranges overlap, through a bounce buffer, chunk by chunk in the
/// direction that never reads a byte already overwritten. Both sides go
/// through the kernel, so either may be memory that can vanish.
fn kernel_memmove(way: Way, dst: MemSliceMut<'_>, src: MemSlice<'_>) -> Result<()> {
    let len = src.len();
    if !overlaps(dst.as_ptr(), src.as_ptr(), len) {
        return kernel_copy(way, dst, src).map_err(|(copied, errno)| fault(way, copied, errno));
    }
    const CHUNK: usize = 64 << 10;
    let mut bounce = vec![0u8; CHUNK.min(len)];
    let backward = (dst.as_ptr() as usize) > (src.as_ptr() as usize);
    let mut done = 0;
    while done < len {
        let n = CHUNK.min(len - done);
        let at = if backward { len - done - n } else { done };
        // `at + n <= len`: both chunks lie inside the slices; `bounce` is ours.
        // The chunk is read whole before any of it is written.
        let bounce = MemSliceMut::from(&mut bounce[..n]);
        kernel_copy(Way::Read, bounce, src.sub(at, n)?)
            .map_err(|(_, errno)| fault(way, done, errno))?;
        kernel_copy(Way::Write, dst.sub(at, n)?, bounce.as_const())
            .map_err(|(copied, errno)| fault(way, done + copied, errno))?;
        done += n;
    }
    Ok(())
}

/// Copies `src` into `dst` (of the same length); a page of `src` that vanished
/// under its mapping is `EFAULT`. `dst` may be a view of the same memory.
pub fn read_fault_safe(src: MemSlice<'_>, dst: MemSliceMut<'_>) -> Result<()> {
    let len = copy_len(dst.len(), src.len());
    match guarded(dst, src, false) {
        Some(0) => return Ok(()),
        // An overlapping copy that stopped part-way has overwritten some of its
        // own source: doing it again would copy wrong bytes.
        Some(left) if left < len && overlaps(dst.as_ptr(), src.as_ptr(), len) => {
            return Err(Error::Fault {
                syscall: Way::Read.syscall(),
                copied: (len - left) as u64,
            })
        }
        _ => {}
    }
    kernel_memmove(Way::Read, dst, src)
}

/// Copies `src` into `dst` (of the same length); a page of `dst` that vanished
/// under its mapping is `EFAULT`. A destination page that is gone before the
/// call fails it with nothing written; one that vanishes during the copy
/// leaves the error's `copied` bytes written. `src` may be a view of the same
/// memory.
pub fn write_fault_safe(dst: MemSliceMut<'_>, src: MemSlice<'_>) -> Result<()> {
    let len = copy_len(dst.len(), src.len());
    let written = match guarded(dst, src, true) {
        Some(0) => return Ok(()),
        // Faulted mid-copy (after the probe passed): that much is written. An
        // overlapping copy cannot be redone (its source is partly overwritten).
        Some(left) if left < len && overlaps(dst.as_ptr(), src.as_ptr(), len) => {
            return Err(Error::Fault {
                syscall: Way::Write.syscall(),
                copied: (len - left) as u64,
            })
        }
        Some(left) => len - left,
        None => 0,
    };
    // SAFETY: `dst` is memory of this process (its contract); the kernel reads
    // one byte of each page, and nothing is written unless every page is there.
    unsafe { probe_pages(dst.as_ptr(), len) }.map_err(|_| Error::Fault {
        syscall: "process_vm_writev",
        copied: written as u64,
    })?;
    kernel_memmove(Way::Write, dst, src).map_err(|e| match e {
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

/// Copies `src` (a range of a region, checked readable by the caller) into
/// `dst` (of the same length, which may be a view of the same region).
pub(crate) fn copy_out(src: MemSlice<'_>, dst: MemSliceMut<'_>, mode: CopyMode) -> Result<()> {
    match mode {
        // Memory that cannot fault: memmove (`dst` may overlap `src`).
        CopyMode::Plain => {
            dst.copy_from(src);
            Ok(())
        }
        // A page that vanished under the range is EFAULT instead of a signal.
        CopyMode::FaultSafe => read_fault_safe(src, dst),
    }
}

/// Copies `src` (of the same length, which may be a view of the same region)
/// into `dst` (a range of a region, checked writable by the caller).
pub(crate) fn copy_in(dst: MemSliceMut<'_>, src: MemSlice<'_>, mode: CopyMode) -> Result<()> {
    match mode {
        // Memory that cannot fault: memmove (`src` may overlap `dst`).
        CopyMode::Plain => {
            dst.copy_from(src);
            Ok(())
        }
        // A page that vanished under the range is EFAULT instead of a signal.
        CopyMode::FaultSafe => write_fault_safe(dst, src),
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
                let all = MemSliceMut::from(&mut buf);
                let (dst, src) = (all.sub(to, len).unwrap(), all.sub(from, len).unwrap());
                kernel_memmove(way, dst, src.as_const()).unwrap();
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
                // SAFETY: the mapping is 4 pages, read-write, until the munmap below.
                let all = unsafe { MemSliceMut::new(p, 4 * ps) };
                let part = |at, len| all.sub(at, len).unwrap();
                let mut want = all.as_const().to_vec();
                // read: region -> a "view" of the same region, overlapping.
                read_fault_safe(part(0, 2 * ps).as_const(), part(100, 2 * ps)).unwrap();
                want.copy_within(0..2 * ps, 100);
                // write: a "view" of the same region -> region, overlapping.
                write_fault_safe(part(50, 2 * ps), part(300, 2 * ps).as_const()).unwrap();
                want.copy_within(300..300 + 2 * ps, 50);
                assert!(all.as_const().to_vec() == want, "blocked: {blocked}");
                // SAFETY: the mapping made above; `all` is not used after it.
                unsafe { libc::munmap(p.cast(), 4 * ps) };
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
                // SAFETY: the mapping is 2 pages, read-write, until the munmap
                // below; its second page is past the end of the file, which the
                // fault-safe copy reports.
                let mapped = unsafe { MemSliceMut::new(p, 2 * ps) };
                let err = write_fault_safe(mapped, (&data).into()).unwrap_err();
                assert_eq!(err.errno(), Some(libc::EFAULT));
                assert!(
                    matches!(err, Error::Fault { copied: 0, .. }),
                    "blocked: {blocked}"
                );
                // The first page is still backed by the file.
                let first = mapped.as_const().sub(0, ps).unwrap().to_vec();
                assert!(first.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
                // A read stops at the missing page too, and says how far it got.
                let mut out = vec![0u8; 2 * ps];
                let err = read_fault_safe(mapped.as_const(), (&mut out).into()).unwrap_err();
                assert_eq!(err.errno(), Some(libc::EFAULT));
                // SAFETY: the mapping made above.
                unsafe { libc::munmap(p.cast(), 2 * ps) };
            });
        }
    }
}
