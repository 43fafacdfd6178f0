//! The typed error of the core, and the one place where each error is given its
//! JavaScript class and stable `code`.

use std::fmt;

use crate::Protection;

/// Result of every fallible operation in this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong, as data. Each variant maps to exactly one JS
/// error class and `code` through [`Error::class`] and [`Error::code`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A size of 0 where a mapping is created or removed.
    ZeroSize { what: &'static str },
    /// An offset that must be page aligned is not.
    Unaligned { what: &'static str, value: u64 },
    /// `[offset, offset + size)` does not lie inside `[0, limit)`, or overflows.
    OutOfBounds { offset: u64, size: u64, limit: u64 },
    /// A numeric argument outside what the operation can take.
    OutOfRange { what: &'static str, reason: String },
    /// An argument of the right type but an unusable value (e.g. a name with a
    /// NUL byte): `ERR_INVALID_ARG_VALUE`, as the facade throws it.
    InvalidArgument { what: &'static str, reason: String },
    /// The range is not mapped with the protection the access needs.
    Access {
        offset: u64,
        size: u64,
        needed: Protection,
    },
    /// A regular file is shorter than `fd_offset + size`.
    BeyondEof { needed: u64, file_size: u64 },
    /// The operation does not exist for this kind of region.
    Unsupported { operation: &'static str },
    /// The region was closed.
    Closed,
    /// The range is in use by an asynchronous operation.
    Busy { operation: &'static str },
    /// A system call failed with `errno`.
    Syscall { syscall: &'static str, errno: i32 },
    /// A fault-safe copy met a page that cannot be accessed (`EFAULT`) after
    /// `copied` bytes of the destination were written (0 when it failed
    /// before writing anything).
    Fault { syscall: &'static str, copied: u64 },
}

/// The JavaScript class an error is thrown as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    Error,
    TypeError,
    RangeError,
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

    /// The stable `code` property of the JS error.
    pub fn code(&self) -> &'static str {
        match self {
            Error::ZeroSize { .. } | Error::OutOfRange { .. } => "ERR_OUT_OF_RANGE",
            Error::InvalidArgument { .. } => "ERR_INVALID_ARG_VALUE",
            Error::Unaligned { .. } => "ERR_MMAP_UNALIGNED",
            Error::OutOfBounds { .. } => "ERR_MMAP_OUT_OF_BOUNDS",
            Error::Access { .. } => "ERR_MMAP_ACCESS",
            Error::BeyondEof { .. } => "ERR_MMAP_BEYOND_EOF",
            Error::Unsupported { .. } => "ERR_MMAP_UNSUPPORTED",
            Error::Closed => "ERR_MMAP_CLOSED",
            Error::Busy { .. } => "ERR_MMAP_BUSY",
            Error::Syscall { errno, .. } => errno_name(*errno),
            Error::Fault { .. } => "EFAULT",
        }
    }

    /// The JS class of the error.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::InvalidArgument { .. } => ErrorClass::TypeError,
            Error::ZeroSize { .. }
            | Error::OutOfRange { .. }
            | Error::Unaligned { .. }
            | Error::OutOfBounds { .. }
            | Error::BeyondEof { .. } => ErrorClass::RangeError,
            Error::Access { .. }
            | Error::Unsupported { .. }
            | Error::Closed
            | Error::Busy { .. }
            | Error::Syscall { .. }
            | Error::Fault { .. } => ErrorClass::Error,
        }
    }

    /// For [`Error::Syscall`]: the errno as Node reports it (negative) and the call.
    pub fn syscall(&self) -> Option<(i32, &'static str)> {
        match self {
            Error::Syscall { syscall, errno } => Some((-errno, *syscall)),
            Error::Fault { syscall, .. } => Some((-libc::EFAULT, *syscall)),
            _ => None,
        }
    }

    /// For [`Error::Fault`]: how many bytes of the destination were written
    /// before the copy failed.
    pub fn bytes_copied(&self) -> Option<u64> {
        match self {
            Error::Fault { copied, .. } => Some(*copied),
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
            Error::Unsupported { operation } => {
                write!(f, "{operation} is not supported by this region")
            }
            Error::Closed => write!(f, "the region is closed"),
            Error::Busy { operation } => write!(
                f,
                "{operation} refused: an asynchronous operation is still using the range"
            ),
            Error::Fault { syscall, copied } => write!(
                f,
                "{}, {syscall} ({copied} bytes copied before the fault)",
                Error::Syscall {
                    syscall,
                    errno: libc::EFAULT
                }
                .to_string()
                .split(',')
                .next()
                .unwrap_or("EFAULT")
            ),
            Error::Syscall { syscall, errno } => {
                let text = std::io::Error::from_raw_os_error(*errno).to_string();
                // std renders "Bad file descriptor (os error 9)"; Node writes
                // "EBADF: bad file descriptor, mmap".
                let text = text.split(" (os error").next().unwrap_or(&text);
                let mut chars = text.chars();
                let lowered: String = match chars.next() {
                    Some(c) => c.to_lowercase().chain(chars).collect(),
                    None => String::new(),
                };
                write!(f, "{}: {lowered}, {syscall}", errno_name(*errno))
            }
        }
    }
}

impl std::error::Error for Error {}

/// The symbolic name of a Linux errno, as Node's `err.code` spells it.
pub fn errno_name(errno: i32) -> &'static str {
    use libc::*;
    match errno {
        EPERM => "EPERM",
        ENOENT => "ENOENT",
        ESRCH => "ESRCH",
        EINTR => "EINTR",
        EIO => "EIO",
        ENXIO => "ENXIO",
        E2BIG => "E2BIG",
        ENOEXEC => "ENOEXEC",
        EBADF => "EBADF",
        ECHILD => "ECHILD",
        EAGAIN => "EAGAIN",
        ENOMEM => "ENOMEM",
        EACCES => "EACCES",
        EFAULT => "EFAULT",
        EBUSY => "EBUSY",
        EEXIST => "EEXIST",
        EXDEV => "EXDEV",
        ENODEV => "ENODEV",
        ENOTDIR => "ENOTDIR",
        EISDIR => "EISDIR",
        EINVAL => "EINVAL",
        ENFILE => "ENFILE",
        EMFILE => "EMFILE",
        ENOTTY => "ENOTTY",
        ETXTBSY => "ETXTBSY",
        EFBIG => "EFBIG",
        ENOSPC => "ENOSPC",
        ESPIPE => "ESPIPE",
        EROFS => "EROFS",
        EMLINK => "EMLINK",
        EPIPE => "EPIPE",
        EDOM => "EDOM",
        ERANGE => "ERANGE",
        EDEADLK => "EDEADLK",
        ENAMETOOLONG => "ENAMETOOLONG",
        ENOLCK => "ENOLCK",
        ENOSYS => "ENOSYS",
        ENOTEMPTY => "ENOTEMPTY",
        ELOOP => "ELOOP",
        ENODATA => "ENODATA",
        EOVERFLOW => "EOVERFLOW",
        EOPNOTSUPP => "ENOTSUP",
        ETIMEDOUT => "ETIMEDOUT",
        EHWPOISON => "EHWPOISON",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_classes_match_the_spec_table() {
        let cases: Vec<(Error, &str, ErrorClass)> = vec![
            (
                Error::ZeroSize { what: "size" },
                "ERR_OUT_OF_RANGE",
                ErrorClass::RangeError,
            ),
            (
                Error::OutOfRange {
                    what: "x",
                    reason: "r".into(),
                },
                "ERR_OUT_OF_RANGE",
                ErrorClass::RangeError,
            ),
            (
                Error::InvalidArgument {
                    what: "name",
                    reason: "r".into(),
                },
                "ERR_INVALID_ARG_VALUE",
                ErrorClass::TypeError,
            ),
            (
                Error::Unaligned {
                    what: "offset",
                    value: 1,
                },
                "ERR_MMAP_UNALIGNED",
                ErrorClass::RangeError,
            ),
            (
                Error::OutOfBounds {
                    offset: 1,
                    size: 2,
                    limit: 2,
                },
                "ERR_MMAP_OUT_OF_BOUNDS",
                ErrorClass::RangeError,
            ),
            (
                Error::Access {
                    offset: 0,
                    size: 1,
                    needed: Protection::WRITE,
                },
                "ERR_MMAP_ACCESS",
                ErrorClass::Error,
            ),
            (
                Error::BeyondEof {
                    needed: 2,
                    file_size: 1,
                },
                "ERR_MMAP_BEYOND_EOF",
                ErrorClass::RangeError,
            ),
            (
                Error::Unsupported { operation: "x" },
                "ERR_MMAP_UNSUPPORTED",
                ErrorClass::Error,
            ),
            (Error::Closed, "ERR_MMAP_CLOSED", ErrorClass::Error),
            (
                Error::Busy { operation: "close" },
                "ERR_MMAP_BUSY",
                ErrorClass::Error,
            ),
            (
                Error::Syscall {
                    syscall: "mmap",
                    errno: libc::ENOMEM,
                },
                "ENOMEM",
                ErrorClass::Error,
            ),
        ];
        for (err, code, class) in cases {
            assert_eq!(err.code(), code, "{err:?}");
            assert_eq!(err.class(), class, "{err:?}");
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn syscall_errors_read_like_node() {
        let e = Error::Syscall {
            syscall: "mmap",
            errno: libc::EBADF,
        };
        assert_eq!(e.to_string(), "EBADF: bad file descriptor, mmap");
        assert_eq!(e.syscall(), Some((-libc::EBADF, "mmap")));
        assert_eq!(Error::Closed.syscall(), None);
        assert_eq!(errno_name(libc::EOPNOTSUPP), "ENOTSUP");
        assert_eq!(errno_name(100_000), "UNKNOWN");
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
