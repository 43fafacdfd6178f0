//! Throws a core [`Error`] as the JS error the SPEC names: class, `code`, and for
//! failed syscalls `errno` (negative) and `syscall`.

use std::ffi::CString;
use std::ptr;

use mapped_region::{Error, ErrorClass};
use napi::{sys, Env, Status};

/// Converts a core result, throwing the JS error on failure.
pub fn js<T>(env: &Env, result: mapped_region::Result<T>) -> napi::Result<T> {
    result.map_err(|e| throw(env, &e))
}

/// Throws `e` and returns the marker napi-rs uses for "exception already pending".
pub fn throw(env: &Env, e: &Error) -> napi::Error {
    let err = create(env, e);
    // SAFETY: `err` is a live value of this env's current scope.
    unsafe { sys::napi_throw(env.raw(), err) };
    napi::Error::from_status(Status::PendingException)
}

/// The error as a napi-rs error that carries the JS object itself, for
/// rejecting a promise with the same shape a synchronous call throws.
pub fn rejection(env: &Env, e: &Error) -> napi::Error {
    let err = create(env, e);
    // SAFETY: `err` is a live value of this env's current scope.
    napi::Error::from(unsafe { napi::bindgen_prelude::Unknown::from_raw_unchecked(env.raw(), err) })
}

/// Builds the JS error object for `e`: class, `code`, and for failed syscalls
/// `errno` (negative) and `syscall`.
fn create(env: &Env, e: &Error) -> sys::napi_value {
    let raw = env.raw();
    let code = CString::new(e.code()).unwrap_or_default();
    let msg = CString::new(e.to_string()).unwrap_or_default();
    // SAFETY: `raw` is the live env of this call; every napi_value created here is
    // used within the same handle scope, and all strings are NUL-terminated.
    unsafe {
        let mut js_code = ptr::null_mut();
        let mut js_msg = ptr::null_mut();
        let mut err = ptr::null_mut();
        sys::napi_create_string_utf8(
            raw,
            code.as_ptr(),
            code.as_bytes().len() as isize,
            &mut js_code,
        );
        sys::napi_create_string_utf8(
            raw,
            msg.as_ptr(),
            msg.as_bytes().len() as isize,
            &mut js_msg,
        );
        match e.class() {
            ErrorClass::Error => sys::napi_create_error(raw, js_code, js_msg, &mut err),
            ErrorClass::TypeError => sys::napi_create_type_error(raw, js_code, js_msg, &mut err),
            ErrorClass::RangeError => sys::napi_create_range_error(raw, js_code, js_msg, &mut err),
        };
        if let Some((errno, syscall)) = e.syscall() {
            let mut js_errno = ptr::null_mut();
            let mut js_syscall = ptr::null_mut();
            let syscall = CString::new(syscall).unwrap_or_default();
            sys::napi_create_int32(raw, errno, &mut js_errno);
            sys::napi_create_string_utf8(
                raw,
                syscall.as_ptr(),
                syscall.as_bytes().len() as isize,
                &mut js_syscall,
            );
            sys::napi_set_named_property(raw, err, c"errno".as_ptr(), js_errno);
            sys::napi_set_named_property(raw, err, c"syscall".as_ptr(), js_syscall);
        }
        if let Some(copied) = e.bytes_copied() {
            let mut js_copied = ptr::null_mut();
            sys::napi_create_double(raw, copied as f64, &mut js_copied);
            sys::napi_set_named_property(raw, err, c"bytesCopied".as_ptr(), js_copied);
        }
        err
    }
}
