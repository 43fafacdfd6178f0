//! The one table from failures to JavaScript errors: class, `code`, message,
//! and for failed system calls `errno` (negative) and `syscall`. The codes are
//! defined here once, as [`ErrorCode`]; the facade's `ts/errors.ts` uses the
//! same type, generated into `index.d.ts`.

use std::ptr;

use mapped_region::{page_size, Error};
use napi::sys;
use napi_derive::napi;

/// Every stable `code` the package throws, besides errno names (`'EBADF'`…)
/// for failed system calls. Each variant's name is its code (its `Debug`
/// text, and the string napi-rs writes into the generated union type).
#[napi(string_enum)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// An argument of the wrong type (`TypeError`).
    ERR_INVALID_ARG_TYPE,
    /// An argument of the right type but an unusable value (`TypeError`).
    ERR_INVALID_ARG_VALUE,
    /// A number outside what the operation takes (`RangeError`).
    ERR_OUT_OF_RANGE,
    /// An offset that must be page aligned is not (`RangeError`).
    ERR_MMAP_UNALIGNED,
    /// A range outside the region (`RangeError`).
    ERR_MMAP_OUT_OF_BOUNDS,
    /// The range is not mapped with the access asked for (`Error`).
    ERR_MMAP_ACCESS,
    /// A mapping past the end of its file or memfd (`RangeError`).
    ERR_MMAP_BEYOND_EOF,
    /// The region is closed (`Error`).
    ERR_MMAP_CLOSED,
    /// The operation does not exist for this kind of region (`Error`).
    ERR_MMAP_UNSUPPORTED,
    /// An asynchronous operation still uses the range (`Error`).
    ERR_MMAP_BUSY,
    /// The runtime forbids external buffers, so `view()` and `sharedView()` cannot work (`Error`).
    ERR_MMAP_NO_EXTERNAL,
    /// Two guest regions overlap (`RangeError`, thrown by the facade).
    ERR_GUEST_OVERLAP,
    /// A guest address in no region (`RangeError`, thrown by the facade).
    ERR_GUEST_ADDRESS,
    /// No prebuilt binary loads on this platform (`Error`, thrown by the facade's loader).
    ERR_MMAP_NO_BINARY,
    /// A share handle whose region is gone: closed or collected in every thread (`Error`).
    ERR_MMAP_STALE_HANDLE,
    /// Not a share handle this process handed out: forged, altered, or of another kind (`TypeError`).
    ERR_MMAP_INVALID_HANDLE,
    /// A restore served by a pager (`lazy: 'pager'`) could not fill some pages from its source:
    /// they hold zeros (`Error`, the rejection of `GuestMemory.restored`, with `pages`).
    ERR_RESTORE_INCOMPLETE,
}

/// Why a binding call failed.
#[derive(Debug)]
pub enum Failure {
    /// The core refused or a system call failed.
    Core(Error),
    /// An argument that is not of the type the entry point takes.
    ArgType {
        /// The argument.
        what: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// External buffers are not allowed in this runtime (or by the test switch).
    NoExternal,
    /// The runtime lacks an N-API function an operation needs.
    NoRuntimeSupport {
        /// The operation.
        operation: &'static str,
        /// The function, and the runtimes that have it.
        needs: &'static str,
    },
    /// A JavaScript exception is already pending (thrown by Node itself).
    Pending,
    /// A change over a live view of another object (another thread's, which
    /// only that thread can detach).
    ForeignViews {
        /// The operation refused.
        operation: &'static str,
    },
    /// A share handle whose region was closed or collected everywhere.
    StaleHandle,
    /// A share handle this process did not hand out (why).
    BadHandle(&'static str),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Core(e)
    }
}

/// What a binding call returns.
pub type Result<T> = std::result::Result<T, Failure>;

/// The JavaScript class of an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Error,
    TypeError,
    RangeError,
}

/// The `code` of an error: one of ours, or an errno name.
#[derive(Clone, Copy, Debug)]
enum Code {
    Ours(ErrorCode),
    Errno(&'static str),
}

impl Code {
    fn text(self) -> String {
        match self {
            Code::Ours(code) => format!("{code:?}"),
            Code::Errno(name) => name.to_string(),
        }
    }
}

/// The error a failure becomes in JavaScript.
struct Shape {
    class: Class,
    code: Code,
    message: String,
    /// `(errno, syscall)` for failed system calls; `errno` negated, as Node does.
    syscall: Option<(i32, &'static str)>,
    /// For a fault-safe copy that met a bad page: bytes written before it.
    bytes_copied: Option<u64>,
}

fn shape(failure: &Failure) -> Shape {
    use ErrorCode::*;
    let ours = |class, code, message: String| Shape {
        class,
        code: Code::Ours(code),
        message,
        syscall: None,
        bytes_copied: None,
    };
    let e = match failure {
        Failure::Core(e) => e,
        Failure::ArgType { what, expected } => {
            return ours(
                Class::TypeError,
                ERR_INVALID_ARG_TYPE,
                format!("The \"{what}\" argument must be {expected}"),
            )
        }
        Failure::NoExternal => {
            return ours(
                Class::Error,
                ERR_MMAP_NO_EXTERNAL,
                "This runtime forbids external buffers: view() and sharedView() need them (they never hand out a copy)".into(),
            )
        }
        Failure::NoRuntimeSupport { operation, needs } => {
            return ours(
                Class::Error,
                ERR_MMAP_UNSUPPORTED,
                format!("{operation} needs {needs}, which this runtime does not have"),
            )
        }
        Failure::ForeignViews { operation } => {
            return ours(
                Class::Error,
                ERR_MMAP_BUSY,
                format!(
                    "{operation} refused: a view of this memory made by another object (another thread's, or another attached object's) is alive over the range; that thread must drop or detach it first"
                ),
            )
        }
        Failure::StaleHandle => {
            return ours(
                Class::Error,
                ERR_MMAP_STALE_HANDLE,
                "The shared region is gone: it was closed or collected in every thread".into(),
            )
        }
        Failure::BadHandle(why) => {
            return ours(
                Class::TypeError,
                ERR_MMAP_INVALID_HANDLE,
                format!("The \"handle\" argument is not a share handle of this process: {why}"),
            )
        }
        Failure::Pending => unreachable!("a pending exception has no shape"),
    };
    match e {
        Error::ZeroSize { what } => ours(
            Class::RangeError,
            ERR_OUT_OF_RANGE,
            format!("The value of \"{what}\" is out of range. It must be greater than 0. Received 0"),
        ),
        Error::OutOfRange { what, reason } => ours(
            Class::RangeError,
            ERR_OUT_OF_RANGE,
            format!("The value of \"{what}\" is out of range: {reason}"),
        ),
        Error::InvalidArgument { what, reason } => ours(
            Class::TypeError,
            ERR_INVALID_ARG_VALUE,
            format!("The argument \"{what}\" {reason}"),
        ),
        Error::Unaligned { what, value } => ours(
            Class::RangeError,
            ERR_MMAP_UNALIGNED,
            format!(
                "The \"{what}\" argument must be a multiple of the page size ({}). Received {value}",
                page_size()
            ),
        ),
        Error::OutOfBounds {
            offset,
            size,
            limit,
        } => ours(
            Class::RangeError,
            ERR_MMAP_OUT_OF_BOUNDS,
            format!("The range [{offset}, {offset} + {size}) is outside the region of {limit} bytes"),
        ),
        Error::HugeUnaligned {
            what,
            value,
            page_size,
        } => ours(
            Class::RangeError,
            ERR_MMAP_UNALIGNED,
            format!("The \"{what}\" argument must be a multiple of the huge page size ({page_size}). Received {value}"),
        ),
        Error::Misaligned { offset, width } => ours(
            Class::RangeError,
            ERR_MMAP_UNALIGNED,
            format!("An atomic {width}-byte access needs an offset that is a multiple of {width}. Received {offset}"),
        ),
        Error::NotDirect { offset, width } => ours(
            Class::Error,
            ERR_MMAP_ACCESS,
            format!(
                "Direct access (atomics, a shared view) to {width} bytes at {offset} needs memory mapped READ | WRITE that cannot vanish under the mapping (anonymous memory or a memfd sealed against shrinking; not a file someone could truncate, nor a device)"
            ),
        ),
        Error::BeyondEof { needed, file_size } => ours(
            Class::RangeError,
            ERR_MMAP_BEYOND_EOF,
            format!("The mapping needs {needed} bytes of the file, which has only {file_size}"),
        ),
        Error::Unbacked { offset, size } => ours(
            Class::RangeError,
            ERR_MMAP_BEYOND_EOF,
            format!("The range [{offset}, {offset} + {size}) has pages past the end of their file (truncated since it was mapped): a view there would fault"),
        ),
        Error::Access {
            offset,
            size,
            needed,
        } => ours(
            Class::Error,
            ERR_MMAP_ACCESS,
            format!("The range [{offset}, {offset} + {size}) is not entirely mapped with {needed} access"),
        ),
        Error::Unsupported { operation } => ours(
            Class::Error,
            ERR_MMAP_UNSUPPORTED,
            format!("{operation} is not supported by a MemoryMapping; use a MemoryMappingArena"),
        ),
        Error::WriteTracking { reason } => ours(
            Class::Error,
            ERR_MMAP_UNSUPPORTED,
            format!("Kernel write tracking is unavailable: {reason}"),
        ),
        Error::Paging { reason } => ours(
            Class::Error,
            ERR_MMAP_UNSUPPORTED,
            format!("A restore served by a pager (lazy: 'pager') is unavailable: {reason}"),
        ),
        Error::Closed => ours(Class::Error, ERR_MMAP_CLOSED, "The region is closed".into()),
        Error::GuestOverlap { start, other } => ours(
            Class::RangeError,
            ERR_GUEST_OVERLAP,
            format!("Guest region at {start:#x} overlaps the one at {other:#x}"),
        ),
        Error::GuestAddress { address } => ours(
            Class::RangeError,
            ERR_GUEST_ADDRESS,
            format!("Guest address {address:#x} is in no region"),
        ),
        Error::GuestRange {
            address,
            length,
            end,
        } => ours(
            Class::RangeError,
            ERR_GUEST_ADDRESS,
            format!("Guest range [{address:#x}, +{length}) runs past the region ending at {end:#x} into no region"),
        ),
        Error::GuestNoRegion { start } => ours(
            Class::RangeError,
            ERR_GUEST_ADDRESS,
            format!("No guest region starts at {start:#x}"),
        ),
        Error::Busy { operation } => ours(
            Class::Error,
            ERR_MMAP_BUSY,
            format!(
                "{operation} refused: the range is in use (by an asynchronous operation, or held for views detached in this turn of the event loop)"
            ),
        ),
        Error::Syscall { syscall, errno } => Shape {
            class: Class::Error,
            code: Code::Errno(errno_name(*errno)),
            message: format!(
                "{}: {}, {syscall}",
                errno_name(*errno),
                strerror(*errno)
            ),
            syscall: Some((-errno, syscall)),
            bytes_copied: None,
        },
        Error::Fault { syscall, copied } => Shape {
            class: Class::Error,
            code: Code::Errno("EFAULT"),
            message: format!(
                "EFAULT: {}, {syscall} ({copied} bytes copied before the fault)",
                strerror(libc::EFAULT)
            ),
            syscall: Some((-libc::EFAULT, syscall)),
            bytes_copied: Some(*copied),
        },
    }
}

/// The system's text for `errno`, lower-cased as Node writes it
/// ("bad file descriptor").
fn strerror(errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The symbolic name of a Linux errno, as Node's `err.code` spells it.
fn errno_name(errno: i32) -> &'static str {
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

/// Builds the JavaScript error object for `failure` on `env`.
///
/// # Safety
/// `env` must be the live env of the current call, and `failure` not
/// [`Failure::Pending`].
pub unsafe fn create(env: sys::napi_env, failure: &Failure) -> sys::napi_value {
    let s = shape(failure);
    let code = s.code.text();
    // SAFETY: `env` is live (guaranteed by the caller); every value made here
    // belongs to the current handle scope; strings are passed with lengths.
    unsafe {
        let js_code = string(env, &code);
        let js_msg = string(env, &s.message);
        let mut err = ptr::null_mut();
        match s.class {
            Class::Error => sys::napi_create_error(env, js_code, js_msg, &mut err),
            Class::TypeError => sys::napi_create_type_error(env, js_code, js_msg, &mut err),
            Class::RangeError => sys::napi_create_range_error(env, js_code, js_msg, &mut err),
        };
        if let Some((errno, syscall)) = s.syscall {
            let mut js_errno = ptr::null_mut();
            sys::napi_create_int32(env, errno, &mut js_errno);
            sys::napi_set_named_property(env, err, c"errno".as_ptr(), js_errno);
            sys::napi_set_named_property(env, err, c"syscall".as_ptr(), string(env, syscall));
        }
        if let Some(copied) = s.bytes_copied {
            let mut js_copied = ptr::null_mut();
            sys::napi_create_double(env, copied as f64, &mut js_copied);
            sys::napi_set_named_property(env, err, c"bytesCopied".as_ptr(), js_copied);
        }
        err
    }
}

/// A JavaScript string.
///
/// # Safety
/// `env` must be the live env of the current call.
unsafe fn string(env: sys::napi_env, text: &str) -> sys::napi_value {
    let mut value = ptr::null_mut();
    // SAFETY: the bytes and their length describe valid UTF-8 for the call.
    unsafe {
        sys::napi_create_string_utf8(env, text.as_ptr().cast(), text.len() as isize, &mut value)
    };
    value
}

/// Throws `failure` on `env` (nothing for [`Failure::Pending`]: Node's own
/// exception is already there).
///
/// # Safety
/// `env` must be the live env of the current call.
pub unsafe fn throw(env: sys::napi_env, failure: &Failure) {
    if matches!(failure, Failure::Pending) {
        return;
    }
    // SAFETY: guaranteed by the caller; the error is a value of this scope.
    unsafe { sys::napi_throw(env, create(env, failure)) };
}

/// `failure` as a napi-rs error: for the napi-rs mechanisms (classes, async
/// tasks), which throw or reject with it. Throws the JS error now and returns
/// napi-rs's marker for "exception pending".
pub fn to_napi(env: &napi::Env, failure: Failure) -> napi::Error {
    // SAFETY: `env` is the live env of the current napi-rs call.
    unsafe { throw(env.raw(), &failure) };
    napi::Error::from_status(napi::Status::PendingException)
}

/// `failure` as the reason a napi-rs async task rejects its promise with: the
/// same JS error a synchronous call throws.
pub fn rejection(env: &napi::Env, failure: &Failure) -> napi::Error {
    // SAFETY: `env` is the live env of the task's completion callback.
    let err = unsafe { create(env.raw(), failure) };
    // SAFETY: `err` is a live value of this env's current scope.
    napi::Error::from(unsafe { napi::bindgen_prelude::Unknown::from_raw_unchecked(env.raw(), err) })
}
