//! Fault-safe copies: a page that cannot be accessed (e.g. of a truncated file)
//! is `EFAULT`, never `SIGBUS`.
//!
//! The copy is first tried as a plain copy guarded by a `SIGBUS` handler (see
//! `guard`, x86-64). When the guard is not armed, or the copy did fault, it is
//! done again with `process_vm_readv`/`process_vm_writev` on the own process,
//! which reports the fault (`EFAULT`, with that syscall's name) or — should the
//! page be back — succeeds. Errors are therefore the same on both paths.

use crate::{Error, Result};

/// Whether the guarded plain copy did the whole copy. `false` when the guard
/// is not armed, is not built for this architecture, or the copy faulted: the
/// caller then copies with the syscall, which reports the fault.
///
/// # Safety
/// Both ranges must be mapped with the access the copy needs (the callers
/// check them against the region's layout); only a page that vanished under a
/// mapping may fault, as `SIGBUS`, which the guard catches.
unsafe fn guarded(dst: *mut u8, src: *const u8, len: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: the ranges are mapped as required; see above.
        unsafe { crate::guard::copy(dst, src, len) == Some(true) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (dst, src, len);
        false
    }
}

fn iov(ptr: *const u8, len: usize) -> libc::iovec {
    libc::iovec {
        iov_base: ptr as *mut libc::c_void,
        iov_len: len,
    }
}

/// Copies `dst.len()` bytes from `src` into `dst`; a page that vanished under
/// the mapping is `EFAULT`.
///
/// # Safety
/// `src..src + dst.len()` must be mapped readable (as the region's layout says):
/// the guarded copy catches `SIGBUS`, not `SIGSEGV`. For memory that may not be
/// mapped at all, use [`read_via_kernel`].
pub unsafe fn read_fault_safe(src: *const u8, dst: &mut [u8]) -> Result<()> {
    // SAFETY: `dst` is ours to write; the caller vouches for `src`.
    if unsafe { guarded(dst.as_mut_ptr(), src, dst.len()) } {
        return Ok(());
    }
    // SAFETY: as the caller vouched; the kernel checks each page anyway.
    unsafe { read_via_kernel(src, dst) }
}

/// Copies `dst.len()` bytes from `src` into `dst` with `process_vm_readv`: an
/// unmapped, unreadable or vanished page is `EFAULT`, never a signal.
///
/// # Safety
/// `src` must point into this process's address space.
pub unsafe fn read_via_kernel(src: *const u8, dst: &mut [u8]) -> Result<()> {
    let mut done = 0;
    while done < dst.len() {
        let local = iov(dst[done..].as_ptr(), dst.len() - done);
        // SAFETY: `src + done` stays inside the range the caller named.
        let remote = iov(unsafe { src.add(done) }, dst.len() - done);
        // SAFETY: both iovecs describe valid ranges of this process; the kernel
        // writes only into `dst`, which we borrow mutably.
        let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
        if n < 0 {
            return Err(Error::last_os_error("process_vm_readv"));
        }
        if n == 0 {
            return Err(Error::Syscall {
                syscall: "process_vm_readv",
                errno: libc::EFAULT,
            });
        }
        done += n as usize;
    }
    Ok(())
}

/// Copies `src` to `dst`; a page that vanished under the mapping is `EFAULT`.
///
/// # Safety
/// `dst..dst + src.len()` must be mapped writable (as the region's layout says),
/// at memory the caller owns and may overwrite.
pub unsafe fn write_fault_safe(dst: *mut u8, src: &[u8]) -> Result<()> {
    // SAFETY: `src` is ours to read; the caller vouches for `dst`.
    if unsafe { guarded(dst, src.as_ptr(), src.len()) } {
        return Ok(());
    }
    let mut done = 0;
    while done < src.len() {
        let local = iov(src[done..].as_ptr(), src.len() - done);
        // SAFETY: `dst + done` stays inside the range the caller named.
        let remote = iov(unsafe { dst.add(done) }, src.len() - done);
        // SAFETY: the kernel reads `src` and writes the caller-owned destination.
        let n = unsafe { libc::process_vm_writev(libc::getpid(), &local, 1, &remote, 1, 0) };
        if n < 0 {
            return Err(Error::last_os_error("process_vm_writev"));
        }
        if n == 0 {
            return Err(Error::Syscall {
                syscall: "process_vm_writev",
                errno: libc::EFAULT,
            });
        }
        done += n as usize;
    }
    Ok(())
}
