//! The thread's scratch slots: how the entry points receive their number
//! arguments.
//!
//! Reading a number through N-API (`napi_get_value_double`) makes checks per
//! argument that cost more than a cheap operation's own work (what they cost
//! is in bench/RESULTS.md's changes table). So the facade passes numbers
//! another way: its
//! wrappers (`ts/calls.ts`, generated from [`entries!`](crate::entries)) store
//! each number argument, in order, in a slot of a `Float64Array` over this
//! memory, then call the entry point, which copies the slots out before it
//! does anything else (so nothing it calls can change them under it). Other
//! arguments (byte arrays, objects, booleans, BigInts) still come through
//! N-API.
//!
//! The memory belongs to the thread: every env on it (there is normally one)
//! shares it, which is sound because JavaScript on one thread makes one call
//! at a time, and each call stores its slots right before it is made. It is
//! allocated by the first env of the thread that loads the module and freed
//! when the last one is torn down. What JavaScript can do to its
//! `ArrayBuffer` (detach it, even) never frees it: the buffer is external,
//! and its finalizer leaves the memory alone.

use std::cell::Cell;
use std::ffi::c_void;
use std::ptr;

use napi::sys;

/// The number of slots: more than any entry point takes.
pub const SLOTS: usize = 16;

type Memory = [f64; SLOTS];

thread_local! {
    /// The thread's slots (null before the first env loads the module and
    /// after the last is torn down).
    static MEMORY: Cell<*mut Memory> = const { Cell::new(ptr::null_mut()) };
    /// The envs of this thread that loaded the module and are not torn down.
    static USERS: Cell<usize> = const { Cell::new(0) };
}

/// The first `N` slots, copied out; all NaN (which every conversion refuses)
/// if the thread has none.
#[inline]
pub fn take<const N: usize>() -> [f64; N] {
    const { assert!(N <= SLOTS) };
    let mut out = [f64::NAN; N];
    let memory = MEMORY.with(Cell::get);
    if !memory.is_null() {
        // SAFETY: `memory` is this thread's live allocation of `SLOTS` f64s
        // (freed only once no env of the thread is left to call in), and no
        // JavaScript runs while this call copies from it.
        unsafe { ptr::copy_nonoverlapping(memory.cast::<f64>(), out.as_mut_ptr(), N) };
    }
    out
}

/// The `ArrayBuffer` over the thread's slots for `env` (allocating them for
/// the thread's first env), released when `env` is torn down.
///
/// # Safety
/// `env` must be the live env of the module's initialisation, on this thread.
pub unsafe fn attach(env: sys::napi_env) -> napi::Result<sys::napi_value> {
    let memory = MEMORY.with(|m| {
        if m.get().is_null() {
            m.set(Box::into_raw(Box::new([0.0; SLOTS])));
        }
        m.get()
    });
    USERS.with(|u| u.set(u.get() + 1));
    // A distinct argument per registration: Node refuses the same hook and
    // argument twice on one env (the module may be initialised twice there).
    let token = Box::into_raw(Box::new(0u8));
    // SAFETY: a live env; `release` runs once, on this thread, at teardown.
    let status = unsafe { sys::napi_add_env_cleanup_hook(env, Some(release), token.cast()) };
    if status != sys::Status::napi_ok {
        // SAFETY: the hook was not registered: undo what it would have done.
        unsafe { release(token.cast()) };
        return Err(napi::Error::from_reason("napi_add_env_cleanup_hook failed"));
    }
    let mut buffer = ptr::null_mut();
    // SAFETY: `memory` stays allocated while `env` lives (the hook frees it
    // at the earliest once `env` is torn down); the finalizer frees nothing.
    let status = unsafe {
        sys::napi_create_external_arraybuffer(
            env,
            memory.cast(),
            size_of::<Memory>(),
            Some(keep_memory),
            ptr::null_mut(),
            &mut buffer,
        )
    };
    if status != sys::Status::napi_ok {
        return Err(napi::Error::from_reason(
            "mapped-region needs external ArrayBuffers (napi_create_external_arraybuffer), which this runtime refuses",
        ));
    }
    Ok(buffer)
}

/// The scratch buffer was collected: the memory is the thread's, not its.
unsafe extern "C" fn keep_memory(_env: sys::napi_env, _data: *mut c_void, _hint: *mut c_void) {}

/// An env of this thread was torn down: the last one frees the slots.
unsafe extern "C" fn release(token: *mut c_void) {
    // SAFETY: `token` is the `Box<u8>` made in `attach` for this hook.
    drop(unsafe { Box::from_raw(token.cast::<u8>()) });
    let left = USERS.with(|u| {
        let left = u.get().saturating_sub(1);
        u.set(left);
        left
    });
    if left == 0 {
        let memory = MEMORY.with(|m| m.replace(ptr::null_mut()));
        if !memory.is_null() {
            // SAFETY: allocated by `attach` with `Box::into_raw`, and no env of
            // this thread is left to store into it or call an entry point.
            drop(unsafe { Box::from_raw(memory) });
        }
    }
}
