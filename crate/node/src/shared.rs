//! Shared views: `SharedArrayBuffer`s over a region's memory
//! (`node_api_create_external_sharedarraybuffer`: recent Node 22, 24 and 26,
//! looked up at run time so that the addon still loads elsewhere). They can be
//! posted to workers and used with `Atomics.wait`/`notify`, and they can never
//! be detached. So each one *pins* its range, as a pending asynchronous
//! operation does: changes over it are refused with `ERR_MMAP_BUSY`, and a
//! `close()` leaves the memory mapped, until the runtime collects the buffer
//! (in whichever thread drops the last reference) and its finalizer drops the
//! pin. Only memory that cannot vanish (anonymous, a memfd sealed against
//! shrinking) mapped `READ | WRITE` is handed out, so touching it never faults.

use std::ffi::c_void;
use std::ptr;
use std::sync::OnceLock;

use mapped_region::Error;
use napi::sys;

use crate::convert;
use crate::errors::{Failure, Result};
use crate::tasks::{lease, Lease};

/// `node_api_create_external_sharedarraybuffer`'s signature.
type CreateExternalSab = unsafe extern "C" fn(
    sys::napi_env,
    *mut c_void,
    usize,
    Option<unsafe extern "C" fn(*mut c_void, *mut c_void)>,
    *mut c_void,
    *mut sys::napi_value,
) -> sys::napi_status;

/// The runtime's `node_api_create_external_sharedarraybuffer`, where it has one.
fn create_external_sab() -> Option<CreateExternalSab> {
    static FOUND: OnceLock<Option<CreateExternalSab>> = OnceLock::new();
    *FOUND.get_or_init(|| {
        // SAFETY: dlsym with RTLD_DEFAULT only looks a name up in the loaded
        // objects (node's own exports among them); the name is NUL-terminated.
        let symbol = unsafe {
            libc::dlsym(
                libc::RTLD_DEFAULT,
                c"node_api_create_external_sharedarraybuffer".as_ptr(),
            )
        };
        // SAFETY: node declares the function with exactly this signature
        // (js_native_api.h, in the releases that have it).
        (!symbol.is_null())
            .then(|| unsafe { std::mem::transmute::<*mut c_void, CreateExternalSab>(symbol) })
    })
}

/// Finalizer of a shared view, called on any thread once the buffer is
/// collected everywhere: drops its pin (and unmaps if the region was closed
/// and nothing else holds it).
unsafe extern "C" fn finalize_pin(_data: *mut c_void, hint: *mut c_void) {
    // SAFETY: `hint` is the `Box<Lease>` leaked in `create`; the runtime calls
    // this finalizer once per buffer.
    drop(unsafe { Box::from_raw(hint.cast::<Lease>()) });
}

/// A `SharedArrayBuffer` over `[offset, offset + length)` of the region behind
/// `handle`, pinning the range until it is collected.
///
/// # Safety
/// `env` must be the live env of the current call, on the region's thread.
pub unsafe fn create(
    env: sys::napi_env,
    handle: f64,
    offset: f64,
    length: f64,
) -> Result<sys::napi_value> {
    // A runtime that forbids external buffers forbids external shared ones.
    if crate::views::external_refused() {
        return Err(Failure::NoExternal);
    }
    let make = create_external_sab().ok_or(Failure::NoRuntimeSupport {
        operation: "sharedView",
        needs: "node_api_create_external_sharedarraybuffer (recent Node 22, 24 and 26 releases; not Node 20)",
    })?;
    let (offset, length) = (
        convert::index("offset", offset)?,
        convert::index("length", length)?,
    );
    let (pin, addr) = lease(handle, |r| {
        r.check_pinnable(offset, length)?;
        Ok((
            r.region().as_ptr() as usize + offset,
            offset,
            offset + length,
        ))
    })?;
    let hint = Box::into_raw(Box::new(pin));
    let mut buffer = ptr::null_mut();
    // SAFETY: the range is inside the region, mapped READ | WRITE, memory that
    // cannot fault (checked above), and pinned by `hint` until the finalizer
    // runs: no change can replace it and close() leaves it mapped.
    let status = crate::views::external_status(|| unsafe {
        make(
            env,
            addr as *mut c_void,
            length,
            Some(finalize_pin),
            hint.cast(),
            &mut buffer,
        )
    });
    if status != sys::Status::napi_ok {
        // SAFETY: the runtime refused, so it took no ownership of `hint` and
        // the finalizer will not run for it.
        drop(unsafe { Box::from_raw(hint) });
        let mut pending = ptr::null_mut();
        // SAFETY: clearing whatever exception the runtime left on this env.
        unsafe { sys::napi_get_and_clear_last_exception(env, &mut pending) };
        if status == sys::Status::napi_no_external_buffers_allowed {
            return Err(Failure::NoExternal);
        }
        return Err(Error::Syscall {
            syscall: "node_api_create_external_sharedarraybuffer",
            errno: libc::ENOMEM,
        }
        .into());
    }
    Ok(buffer)
}
