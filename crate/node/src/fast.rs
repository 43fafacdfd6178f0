//! Hot-path entry points registered with raw N-API. A napi-rs `#[napi]`
//! function costs about 130 ns a call with three number arguments; the same
//! call through a plain N-API callback costs about 55 ns, which matters next to
//! a 280 ns `msync`. Each callback only unpacks its arguments and calls the same
//! Rust function the rest of the binding uses; validation stays there.

use std::ffi::CStr;
use std::ptr;

use napi::{sys, Env, Status};

use crate::{args, region};

/// Reads up to `N` arguments; missing ones are `undefined`-like nulls.
///
/// # Safety
/// `env` and `info` must be those of the current callback.
unsafe fn args<const N: usize>(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> [sys::napi_value; N] {
    let mut argc = N;
    let mut argv = [ptr::null_mut(); N];
    // SAFETY: argv has room for `argc` values.
    unsafe {
        sys::napi_get_cb_info(
            env,
            info,
            &mut argc,
            argv.as_mut_ptr(),
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    argv
}

/// A number argument; anything else reads as NaN, which the native validation
/// rejects with `ERR_OUT_OF_RANGE`.
///
/// # Safety
/// `value` must be null or a value of the current callback's scope.
unsafe fn num(env: sys::napi_env, value: sys::napi_value) -> f64 {
    let mut out = f64::NAN;
    if !value.is_null() {
        // SAFETY: a live value; on a non-number the call fails and leaves NaN.
        unsafe { sys::napi_get_value_double(env, value, &mut out) };
    }
    out
}

/// The bytes of a typed array argument, or a thrown `ERR_INVALID_ARG_TYPE`.
///
/// # Safety
/// `value` must be null or a value of the current callback's scope; the slice
/// must not outlive the callback.
unsafe fn bytes<'a>(env: sys::napi_env, value: sys::napi_value) -> Option<&'a mut [u8]> {
    let mut is_typed = false;
    let typed = !value.is_null()
        // SAFETY: a live, non-null value of this callback's scope.
        && unsafe { sys::napi_is_typedarray(env, value, &mut is_typed) } == sys::Status::napi_ok
        && is_typed;
    if !typed {
        let _ = Env::from_raw(env)
            .throw_type_error("expected a Uint8Array", Some("ERR_INVALID_ARG_TYPE"));
        return None;
    }
    let mut kind = 0;
    let mut length = 0usize;
    let mut data = ptr::null_mut();
    // SAFETY: `value` is a typed array; napi reports its element type, length
    // and data pointer (null for a detached or empty buffer).
    unsafe {
        sys::napi_get_typedarray_info(
            env,
            value,
            &mut kind,
            &mut length,
            &mut data,
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    if kind != sys::TypedarrayType::uint8_array {
        let _ = Env::from_raw(env)
            .throw_type_error("expected a Uint8Array", Some("ERR_INVALID_ARG_TYPE"));
        return None;
    }
    if length == 0 || data.is_null() {
        return Some(&mut []);
    }
    // SAFETY: the typed array's memory is `length` bytes at `data` and stays alive
    // for the callback (the argument roots it). It may alias a view of a region;
    // the core copies with memmove for that reason.
    Some(unsafe { std::slice::from_raw_parts_mut(data.cast::<u8>(), length) })
}

/// Turns a result into the callback's return: `undefined`, with the exception
/// already thrown on error.
fn finish(env: sys::napi_env, result: napi::Result<()>) -> sys::napi_value {
    if let Err(e) = result {
        if e.status != Status::PendingException {
            let _ = Env::from_raw(env).throw_error(&e.reason, None);
        }
    }
    ptr::null_mut()
}

/// As [`finish`] for a change: `true` when the arena now holds ranges that the
/// facade must reclaim on the next turn of the event loop, else `undefined`.
fn finish_change(env: sys::napi_env, result: napi::Result<bool>) -> sys::napi_value {
    match result {
        Ok(true) => {
            let mut value = ptr::null_mut();
            // SAFETY: creates a boolean in the current callback's scope.
            unsafe { sys::napi_get_boolean(env, true, &mut value) };
            value
        }
        Ok(false) => ptr::null_mut(),
        Err(e) => finish(env, Err(e)),
    }
}

macro_rules! numeric_entry {
    ($name:ident, $n:literal, |$env:ident, $a:ident| $call:expr) => {
        numeric_entry!($name, $n, finish, |$env, $a| $call);
    };
    ($name:ident, $n:literal, $finish:ident, |$env:ident, $a:ident| $call:expr) => {
        unsafe extern "C" fn $name(
            env: sys::napi_env,
            info: sys::napi_callback_info,
        ) -> sys::napi_value {
            // SAFETY: called by Node with this callback's env and info.
            let argv = unsafe { args::<$n>(env, info) };
            let mut $a = [0f64; $n];
            for (slot, value) in $a.iter_mut().zip(argv) {
                // SAFETY: `value` belongs to this callback's scope.
                *slot = unsafe { num(env, value) };
            }
            let $env = Env::from_raw(env);
            $finish(env, $call)
        }
    };
}

numeric_entry!(msync, 3, |env, a| region::region_msync(
    env, a[0], a[1], a[2]
));
numeric_entry!(madvise, 4, |env, a| {
    // Advices are small non-negative integers; anything else is refused by the core.
    let advice = args::int_in(a[3], i32::MIN.into(), i32::MAX.into()).map_or(-1, |v| v as i32);
    region::region_madvise(env, a[0], a[1], a[2], advice)
});
numeric_entry!(add_fd_mapping, 6, finish_change, |env, a| {
    let prot = args::int_in(a[5], 0.0, u32::MAX.into()).map_or(u32::MAX, |v| v as u32);
    region::region_add_fd_mapping(env, a[0], a[1], a[2], a[3], a[4], prot)
});
numeric_entry!(add_anonymous, 4, finish_change, |env, a| {
    let prot = args::int_in(a[3], 0.0, u32::MAX.into()).map_or(u32::MAX, |v| v as u32);
    region::region_add_anonymous(env, a[0], a[1], a[2], prot)
});
numeric_entry!(remove_mapping, 3, finish_change, |env, a| {
    region::region_remove_mapping(env, a[0], a[1], a[2])
});

unsafe extern "C" fn read_into(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    // SAFETY: called by Node with this callback's env and info; the values are
    // of this callback's scope.
    unsafe {
        let [handle, offset, target] = args::<3>(env, info);
        let Some(target) = bytes(env, target) else {
            return ptr::null_mut();
        };
        finish(
            env,
            region::region_read_into(
                Env::from_raw(env),
                num(env, handle),
                num(env, offset),
                target,
            ),
        )
    }
}

unsafe extern "C" fn write(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    // SAFETY: as in `read_into`.
    unsafe {
        let [handle, offset, source] = args::<3>(env, info);
        let Some(source) = bytes(env, source) else {
            return ptr::null_mut();
        };
        finish(
            env,
            region::region_write(
                Env::from_raw(env),
                num(env, handle),
                num(env, offset),
                source,
            ),
        )
    }
}

type Callback = unsafe extern "C" fn(sys::napi_env, sys::napi_callback_info) -> sys::napi_value;

/// The hot-path functions, as `exports[name]`.
const ENTRIES: [(&CStr, Callback); 7] = [
    (c"regionMsync", msync),
    (c"regionMadvise", madvise),
    (c"regionAddFdMapping", add_fd_mapping),
    (c"regionAddAnonymous", add_anonymous),
    (c"regionRemoveMapping", remove_mapping),
    (c"regionReadInto", read_into),
    (c"regionWrite", write),
];

/// Adds the hot-path functions to the module's exports.
pub fn register(env: &Env, exports: sys::napi_value) -> napi::Result<()> {
    for (name, callback) in ENTRIES {
        let mut function = ptr::null_mut();
        // SAFETY: `name` is NUL-terminated; the function and the property are
        // created on this env during module initialisation.
        let status = unsafe {
            sys::napi_create_function(
                env.raw(),
                name.as_ptr(),
                name.count_bytes() as isize,
                Some(callback),
                ptr::null_mut(),
                &mut function,
            )
        };
        if status != sys::Status::napi_ok {
            return Err(napi::Error::from_reason("napi_create_function failed"));
        }
        // SAFETY: as above.
        let status =
            unsafe { sys::napi_set_named_property(env.raw(), exports, name.as_ptr(), function) };
        if status != sys::Status::napi_ok {
            return Err(napi::Error::from_reason("napi_set_named_property failed"));
        }
    }
    Ok(())
}
