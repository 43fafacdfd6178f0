//! Fault-safe copies: `process_vm_readv`/`process_vm_writev` on the own process
//! report a page that cannot be accessed (e.g. a truncated file) as `EFAULT`
//! instead of raising `SIGBUS`.

use crate::{Error, Result};

fn iov(ptr: *const u8, len: usize) -> libc::iovec {
    libc::iovec {
        iov_base: ptr as *mut libc::c_void,
        iov_len: len,
    }
}

/// Copies `dst.len()` bytes from `src` into `dst`.
///
/// # Safety
/// `src` must point into this process's address space; the kernel checks each
/// page, so an unmapped or unreadable one yields `EFAULT`, never a signal.
pub unsafe fn read_fault_safe(src: *const u8, dst: &mut [u8]) -> Result<()> {
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

/// Copies `src` to `dst`.
///
/// # Safety
/// `dst` must point into this process's address space, at memory the caller
/// owns and may overwrite; faults are reported as `EFAULT`.
pub unsafe fn write_fault_safe(dst: *mut u8, src: &[u8]) -> Result<()> {
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
