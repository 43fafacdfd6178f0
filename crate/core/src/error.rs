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
