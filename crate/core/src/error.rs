//! The typed error of the core. It speaks Rust only: which JavaScript class
//! and `code` each variant becomes is the binding's table
//! (`crate/node/src/errors.rs`).

use std::fmt;

use crate::Protection;

/// Result of every fallible operation in this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong, as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A size of 0 where a mapping is created or removed.
    ZeroSize {
        /// The argument.
        what: &'static str,
    },
    /// An offset that must be page aligned is not.
    Unaligned {
        /// The argument.
        what: &'static str,
        /// Its value.
        value: u64,
    },
    /// A value that must be a multiple of a huge page size (of a huge-page
    /// memfd or file being mapped, or the size of a new one) is not.
    HugeUnaligned {
        /// The argument (`"offset"`, `"size"`, `"fdOffset"`).
        what: &'static str,
        /// Its value.
        value: u64,
        /// The huge page size.
        page_size: u64,
    },
    /// An atomic access whose offset is not a multiple of its width.
    Misaligned {
        /// The offset.
        offset: u64,
        /// The width (and alignment) of the access in bytes.
        width: u64,
    },
    /// Direct access (an atomic, a shared view) to memory that may not be
    /// touched directly: not mapped `READ | WRITE`, or memory that could
    /// vanish under the mapping (a file someone could truncate, a device).
    NotDirect {
        /// The offset.
        offset: u64,
        /// The width of the access.
        width: u64,
    },
    /// `[offset, offset + size)` does not lie inside `[0, limit)`, or overflows.
    OutOfBounds {
        /// Start of the range.
        offset: u64,
        /// Its length.
        size: u64,
        /// The size of the region.
        limit: u64,
    },
    /// A numeric argument outside what the operation can take.
    OutOfRange {
        /// The argument.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An argument of a usable type but an unusable value (e.g. a name with a
    /// NUL byte).
    InvalidArgument {
        /// The argument.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The range is not mapped with the protection the access needs.
    Access {
        /// Start of the range.
        offset: u64,
        /// Its length.
        size: u64,
        /// The access asked for.
        needed: Protection,
    },
    /// A file is shorter than `fd_offset + size`.
    BeyondEof {
        /// Bytes of the file the mapping needs (`fd_offset + size`).
        needed: u64,
        /// The file's size.
        file_size: u64,
    },
    /// Pages of a range that a view would cover are past the end of their
    /// file now (truncated since it was mapped): touching them would `SIGBUS`.
    Unbacked {
        /// Start of the range.
        offset: u64,
        /// Its length.
        size: u64,
    },
    /// The operation does not exist for this kind of region.
    Unsupported {
        /// The operation.
        operation: &'static str,
    },
    /// The region was closed.
    Closed,
    /// A guest region `[start, …)` would overlap the one at `other`.
    GuestOverlap {
        /// Guest address of the region refused.
        start: u64,
        /// Guest address of the region it overlaps.
        other: u64,
    },
    /// A guest address in no guest region.
    GuestAddress {
        /// The address.
        address: u64,
    },
    /// A guest range that runs from a region into a hole or past the last region.
    GuestRange {
        /// Its start.
        address: u64,
        /// Its length.
        length: u64,
        /// Where the regions that cover its start end.
        end: u64,
    },
    /// No guest region starts at the address.
    GuestNoRegion {
        /// The address.
        start: u64,
    },
    /// The range is in use by an asynchronous operation.
    Busy {
        /// The operation refused.
        operation: &'static str,
    },
    /// A system call failed with `errno`.
    Syscall {
        /// The call.
        syscall: &'static str,
        /// The thread's `errno` after it.
        errno: i32,
    },
    /// A fault-safe copy met a page that cannot be accessed (`EFAULT`) after
    /// `copied` bytes of the destination were written (0 when it failed
    /// before writing anything).
    Fault {
        /// The call, or `"memmove"` for the guarded copy.
        syscall: &'static str,
        /// Bytes written before the fault.
        copied: u64,
    },
    /// Kernel write tracking ([`WriteTracker`](crate::WriteTracker)) cannot
    /// be used: in this process at all, or over this range.
    WriteTracking {
        /// Why, as data.
        reason: NoTracking,
    },
    /// A restore served by a pager ([`Pager`](crate::Pager)) cannot be made
    /// here: why, in words.
    Paging {
        /// Why.
        reason: &'static str,
    },
}

/// Why kernel write tracking cannot be used ([`Error::WriteTracking`]). The
/// first five are about the kernel or the process and come from
/// [`WriteTracker::open`](crate::WriteTracker::open)
/// ([`NoTracking::kernel_lacks_it`]); the others are about a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoTracking {
    /// `userfaultfd(2)` is `ENOSYS`: a kernel built without
    /// `CONFIG_USERFAULTFD` (or older than 4.3), a seccomp filter that hides
    /// it, or an emulator that does not know it (valgrind 3.19).
    NoUserfaultfd,
    /// `userfaultfd(2)` is `EPERM` even for user-mode faults only
    /// (`UFFD_USER_MODE_ONLY`, which the kernel allows every process): a
    /// seccomp filter or security module forbids it.
    NotPermitted,
    /// The kernel is older than the interfaces tracking needs (Linux 6.7):
    /// `missing` names the first one it lacks (`UFFD_FEATURE_WP_ASYNC`,
    /// `UFFD_FEATURE_WP_UNPOPULATED`, `PAGEMAP_SCAN`, `UFFD_USER_MODE_ONLY`).
    KernelTooOld {
        /// The interface.
        missing: &'static str,
    },
    /// `/proc/self/pagemap` cannot be opened (`errno`): `/proc` is not
    /// mounted, or is hidden from the process.
    NoPagemap {
        /// The `errno` of `open`.
        errno: i32,
    },
    /// The range holds memory the kernel does not write-protect
    /// (`UFFDIO_REGISTER` is `EINVAL`): `MAP_DROPPABLE` memory, some device
    /// mappings, or a huge-page mapping whose range is not a multiple of its
    /// huge page size.
    MemoryKind,
    /// The range holds a shared mapping this process can never write through
    /// (a file opened read-only, a memfd sealed against writes): the kernel
    /// refuses to track it (`UFFDIO_REGISTER` is `EPERM`).
    NeverWritable,
    /// Part of the range is tracked by another tracker, or registered with
    /// another userfaultfd of this process (`UFFDIO_REGISTER` is `EBUSY`).
    TrackedElsewhere,
    /// Part of the range is not tracked: it never was, it was untracked, or
    /// it was mapped anew since (a mapping placed with `MAP_FIXED` is a new
    /// one, and starts untracked: track it again).
    NotTracked,
    /// Write-protecting the range would take more page-table memory
    /// (`needed` bytes: a table entry for every page, populated or not) than
    /// a quarter of the memory the kernel says is available (`available`).
    PageTables {
        /// Bytes of page tables the range needs.
        needed: u64,
        /// `MemAvailable` of `/proc/meminfo`, in bytes.
        available: u64,
    },
}

impl NoTracking {
    /// Whether this says that the kernel (or the process's sandbox) lacks
    /// write tracking altogether, rather than refusing one range.
    pub fn kernel_lacks_it(self) -> bool {
        matches!(
            self,
            NoTracking::NoUserfaultfd
                | NoTracking::NotPermitted
                | NoTracking::KernelTooOld { .. }
                | NoTracking::NoPagemap { .. }
        )
    }
}

impl fmt::Display for NoTracking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoTracking::NoUserfaultfd => write!(
                f,
                "this kernel has no userfaultfd (ENOSYS: built without CONFIG_USERFAULTFD, hidden by a seccomp filter, or run under an emulator such as valgrind that does not know the call)"
            ),
            NoTracking::NotPermitted => write!(
                f,
                "userfaultfd is not permitted to this process, even for user-mode faults only (a seccomp filter or security module forbids it; outside such a sandbox, sysctl vm.unprivileged_userfaultfd=1 or access to /dev/userfaultfd allow it)"
            ),
            NoTracking::KernelTooOld { missing } => write!(
                f,
                "this kernel lacks {missing} (Linux 6.7 or later has every interface write tracking needs)"
            ),
            NoTracking::NoPagemap { errno } => write!(
                f,
                "/proc/self/pagemap cannot be opened ({}): is /proc mounted?",
                std::io::Error::from_raw_os_error(*errno)
            ),
            NoTracking::MemoryKind => write!(
                f,
                "the range holds memory the kernel cannot write-protect (MAP_DROPPABLE memory, a device mapping, or huge pages not covered whole)"
            ),
            NoTracking::NeverWritable => write!(
                f,
                "the range holds a shared mapping this process can never write (a file opened read-only, or a memfd sealed against writes)"
            ),
            NoTracking::TrackedElsewhere => write!(
                f,
                "part of the range is tracked already by another tracker or userfaultfd of this process"
            ),
            NoTracking::NotTracked => write!(
                f,
                "part of the range is not tracked (never tracked, untracked, or mapped anew since: a new mapping must be tracked again)"
            ),
            NoTracking::PageTables { needed, available } => write!(
                f,
                "write-protecting the range takes {} MiB of page tables (a table entry for every page, touched or not), more than a quarter of the {} MiB available",
                needed >> 20,
                available >> 20
            ),
        }
    }
}

impl Error {
    /// Builds a [`Error::Syscall`] from the calling thread's `errno`.
    pub fn last_os_error(syscall: &'static str) -> Error {
        Error::Syscall {
            syscall,
            errno: std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        }
    }

    /// For a failed system call: its `errno` (`EFAULT` for a fault-safe copy
    /// that met a bad page).
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Syscall { errno, .. } => Some(*errno),
            Error::Fault { .. } => Some(libc::EFAULT),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ZeroSize { what } => write!(f, "{what} must be greater than 0"),
            Error::Unaligned { what, value } => write!(
                f,
                "{what} must be a multiple of the page size ({}), got {value}",
                crate::page_size()
            ),
            Error::OutOfBounds {
                offset,
                size,
                limit,
            } => write!(
                f,
                "range [{offset}, {offset} + {size}) is outside the region of {limit} bytes"
            ),
            Error::HugeUnaligned {
                what,
                value,
                page_size,
            } => write!(
                f,
                "{what} must be a multiple of the huge page size ({page_size}), got {value}"
            ),
            Error::Misaligned { offset, width } => write!(
                f,
                "an atomic {width}-byte access needs an offset that is a multiple of {width}, got {offset}"
            ),
            Error::NotDirect { offset, width } => write!(
                f,
                "direct access (atomics, a shared view) to {width} bytes at {offset} needs memory mapped READ | WRITE that cannot vanish (anonymous memory or a memfd sealed against shrinking)"
            ),
            Error::OutOfRange { what, reason } => write!(f, "{what} is out of range: {reason}"),
            Error::InvalidArgument { what, reason } => write!(f, "invalid {what}: {reason}"),
            Error::Access {
                offset,
                size,
                needed,
            } => write!(
                f,
                "range [{offset}, {offset} + {size}) is not entirely mapped with {needed} access"
            ),
            Error::BeyondEof { needed, file_size } => write!(
                f,
                "the mapping needs {needed} bytes of the file, which has only {file_size}"
            ),
            Error::Unbacked { offset, size } => write!(
                f,
                "range [{offset}, {offset} + {size}) has pages past the end of their file"
            ),
            Error::Unsupported { operation } => {
                write!(f, "{operation} is not supported by this region")
            }
            Error::Closed => write!(f, "the region is closed"),
            Error::GuestOverlap { start, other } => write!(
                f,
                "guest region at {start:#x} overlaps the one at {other:#x}"
            ),
            Error::GuestAddress { address } => {
                write!(f, "guest address {address:#x} is in no region")
            }
            Error::GuestRange {
                address,
                length,
                end,
            } => write!(
                f,
                "guest range [{address:#x}, +{length}) runs past the region ending at {end:#x} into no region"
            ),
            Error::GuestNoRegion { start } => write!(f, "no guest region starts at {start:#x}"),
            Error::Busy { operation } => write!(
                f,
                "{operation} refused: an asynchronous operation is still using the range"
            ),
            Error::Fault { syscall, copied } => write!(
                f,
                "{syscall} met a page that cannot be accessed after {copied} bytes"
            ),
            Error::Syscall { syscall, errno } => write!(
                f,
                "{syscall} failed: {}",
                std::io::Error::from_raw_os_error(*errno)
            ),
            Error::WriteTracking { reason } => {
                write!(f, "kernel write tracking is unavailable: {reason}")
            }
            Error::Paging { reason } => {
                write!(f, "a restore served by a pager is unavailable: {reason}")
            }
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_failed() {
        let e = Error::Syscall {
            syscall: "mmap",
            errno: libc::EBADF,
        };
        assert_eq!(e.errno(), Some(libc::EBADF));
        assert!(e
            .to_string()
            .starts_with("mmap failed: Bad file descriptor"));
        assert_eq!(Error::Closed.errno(), None);
        let fault = Error::Fault {
            syscall: "process_vm_readv",
            copied: 3,
        };
        assert_eq!(fault.errno(), Some(libc::EFAULT));
        let access = Error::Access {
            offset: 4,
            size: 8,
            needed: Protection::READ_WRITE,
        };
        assert_eq!(
            access.to_string(),
            "range [4, 4 + 8) is not entirely mapped with READ|WRITE access"
        );
    }
}
