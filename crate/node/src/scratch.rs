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
//!
//! Where the runtime forbids external buffers (V8's sandbox: Electron ≥ 21;
//! or the test switch, see [`crate::views::external_refused`]), each env's
//! slots are instead an ordinary `ArrayBuffer` the runtime owns
//! (`napi_create_arraybuffer`), held by a strong reference so that it is
//! never collected while the env lives. Its memory is the runtime's: a
//! detach (`transfer()`, `structuredClone(…, { transfer })`, by code that got
//! hold of it) frees it at once. So no pointer to it is kept: every call
//! fetches the buffer from its reference and its data pointer and length
//! from `napi_get_arraybuffer_info`, and copies the slots out only if it is
//! still attached and whole. Nothing can detach it between that check and
//! the copy (no JavaScript runs in between, and a non-shared `ArrayBuffer`
//! is reachable from this thread only); a detached one reads as all NaN,
//! which every conversion refuses. The same wrappers (`ts/calls.ts`) serve
//! both forms: they only see a `Float64Array` over an `ArrayBuffer`.

use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::ptr;

use napi::sys;

/// The number of slots: more than any entry point takes.
pub const SLOTS: usize = 16;

type Memory = [f64; SLOTS];

thread_local! {
    /// The thread's slots (null before the first env loads the module and
    /// after the last is torn down; always null without external buffers).
    static MEMORY: Cell<*mut Memory> = const { Cell::new(ptr::null_mut()) };
    /// The envs of this thread that loaded the module and are not torn down.
    static USERS: Cell<usize> = const { Cell::new(0) };
    /// Without external buffers: each env of this thread and the strong
    /// reference to its slots' `ArrayBuffer` (removed at its teardown).
    static OWNED: RefCell<Vec<(sys::napi_env, sys::napi_ref)>> = const { RefCell::new(Vec::new()) };
}

/// The first `N` slots of the callback's `env`, copied out; all NaN (which
/// every conversion refuses) if it has none, or if they were detached.
#[inline]
pub fn take<const N: usize>(env: sys::napi_env) -> [f64; N] {
    const { assert!(N <= SLOTS) };
    let mut out = [f64::NAN; N];
    let memory = MEMORY.with(Cell::get);
    if !memory.is_null() {
        // One 8-byte load per slot, as JavaScript stored them: a wider load
        // across two of its stores cannot be forwarded from the store buffer
        // and waits for them to retire (the volatile read keeps the compiler
        // from merging the loads).
        for (i, slot) in out.iter_mut().enumerate() {
            // SAFETY: `memory` is this thread's live allocation of `SLOTS`
            // f64s (freed only once no env of the thread is left to call in),
            // `i < N <= SLOTS`, and no JavaScript runs while this call reads it.
            *slot = unsafe { ptr::read_volatile(memory.cast::<f64>().add(i)) };
        }
    } else if N > 0 {
        take_owned(env, &mut out);
    }
    out
}

/// [`take`] without external buffers: the slots of `env`'s own
/// `ArrayBuffer`, looked up afresh (see the module's documentation).
#[inline(never)]
fn take_owned(env: sys::napi_env, out: &mut [f64]) {
    let reference = OWNED.with(|o| o.borrow().iter().find(|(e, _)| *e == env).map(|&(_, r)| r));
    let Some(reference) = reference else {
        return;
    };
    let mut buffer = ptr::null_mut();
    // SAFETY: `reference` was created on `env`, the live env of the current
    // callback (its entry leaves `OWNED` when `env` is torn down).
    let status = unsafe { sys::napi_get_reference_value(env, reference, &mut buffer) };
    if status != sys::Status::napi_ok || buffer.is_null() {
        return;
    }
    let (mut data, mut length) = (ptr::null_mut(), 0usize);
    // SAFETY: `buffer` is an `ArrayBuffer` in the current callback's scope.
    let status = unsafe { sys::napi_get_arraybuffer_info(env, buffer, &mut data, &mut length) };
    if status != sys::Status::napi_ok || data.is_null() || length < size_of::<Memory>() {
        // Detached (or not what `attach` made): no slots.
        return;
    }
    // `data` is the backing store of an attached, non-resizable `ArrayBuffer`
    // of at least `SLOTS` f64s, read just now; only a detach or its collection
    // could free it, and neither can happen before this copy ends (no
    // JavaScript runs, the strong reference holds it, and no other thread can
    // reach a non-shared `ArrayBuffer`). Copied as bytes: no alignment assumed.
    // SAFETY: as just said.
    unsafe {
        ptr::copy_nonoverlapping(
            data.cast::<u8>(),
            out.as_mut_ptr().cast::<u8>(),
            size_of_val(out),
        )
    };
}

/// The `ArrayBuffer` of the slots for `env`: over the thread's memory
/// (allocating it for the thread's first env, released when the last env is
/// torn down); or, where the runtime forbids external buffers, an ordinary
/// one of `env`'s own.
///
/// # Safety
/// `env` must be the live env of the module's initialisation, on this thread.
pub unsafe fn attach(env: sys::napi_env) -> napi::Result<sys::napi_value> {
    if !crate::views::external_refused() {
        let fresh = MEMORY.with(|m| m.get().is_null());
        let memory = MEMORY.with(|m| {
            if m.get().is_null() {
                m.set(Box::into_raw(Box::new([0.0; SLOTS])));
            }
            m.get()
        });
        let mut buffer = ptr::null_mut();
        // SAFETY: `memory` stays allocated while `env` lives (the hook below
        // frees it at the earliest once `env` is torn down); the finalizer
        // frees nothing.
        let status = crate::views::external_status(|| unsafe {
            sys::napi_create_external_arraybuffer(
                env,
                memory.cast(),
                size_of::<Memory>(),
                Some(keep_memory),
                ptr::null_mut(),
                &mut buffer,
            )
        });
        if status == sys::Status::napi_ok {
            USERS.with(|u| u.set(u.get() + 1));
            // A distinct argument per registration: Node refuses the same hook
            // and argument twice on one env (the module may be initialised
            // twice there).
            let token = Box::into_raw(Box::new(0u8));
            // SAFETY: a live env; `release` runs once, on this thread, at teardown.
            let status =
                unsafe { sys::napi_add_env_cleanup_hook(env, Some(release), token.cast()) };
            if status != sys::Status::napi_ok {
                // SAFETY: the hook was not registered: undo what it would have
                // done (the buffer made above is never handed out).
                unsafe { release(token.cast()) };
                return Err(napi::Error::from_reason("napi_add_env_cleanup_hook failed"));
            }
            return Ok(buffer);
        }
        if fresh {
            let memory = MEMORY.with(|m| m.replace(ptr::null_mut()));
            // SAFETY: allocated just above with `Box::into_raw`; the runtime
            // refused the buffer, so nothing refers to it.
            drop(unsafe { Box::from_raw(memory) });
        }
        if status != sys::Status::napi_no_external_buffers_allowed {
            return Err(napi::Error::from_reason(
                "napi_create_external_arraybuffer failed",
            ));
        }
    }
    if !MEMORY.with(Cell::get).is_null() {
        // Another env of this thread has external slots, which `take` reads.
        return Err(napi::Error::from_reason(
            "mapped-region: external buffers refused on a thread that already had them",
        ));
    }
    // SAFETY: as this function's.
    unsafe { attach_owned(env) }
}

/// [`attach`] without external buffers: an ordinary `ArrayBuffer`, held by a
/// strong reference until `env` is torn down.
///
/// # Safety
/// As [`attach`].
unsafe fn attach_owned(env: sys::napi_env) -> napi::Result<sys::napi_value> {
    let (mut data, mut buffer) = (ptr::null_mut(), ptr::null_mut());
    // SAFETY: a live env; the runtime allocates (and zeroes) the memory.
    let status =
        unsafe { sys::napi_create_arraybuffer(env, size_of::<Memory>(), &mut data, &mut buffer) };
    if status != sys::Status::napi_ok {
        return Err(napi::Error::from_reason("napi_create_arraybuffer failed"));
    }
    let mut reference = ptr::null_mut();
    // SAFETY: a live env and a value of its current scope. The reference is
    // the env's: the runtime frees it when the env is torn down.
    let status = unsafe { sys::napi_create_reference(env, buffer, 1, &mut reference) };
    if status != sys::Status::napi_ok {
        return Err(napi::Error::from_reason("napi_create_reference failed"));
    }
    let token = Box::into_raw(Box::new(env));
    // SAFETY: a live env; `forget` runs once, on this thread, at teardown.
    let status = unsafe { sys::napi_add_env_cleanup_hook(env, Some(forget), token.cast()) };
    if status != sys::Status::napi_ok {
        // SAFETY: the hook was not registered: the token is ours again.
        drop(unsafe { Box::from_raw(token) });
        return Err(napi::Error::from_reason("napi_add_env_cleanup_hook failed"));
    }
    OWNED.with(|o| o.borrow_mut().push((env, reference)));
    Ok(buffer)
}

/// An env of this thread without external buffers was torn down: its slots
/// are no longer looked up (the runtime frees the reference with the env).
unsafe extern "C" fn forget(token: *mut c_void) {
    // SAFETY: `token` is the `Box<napi_env>` made in `attach_owned` for this hook.
    let env = *unsafe { Box::from_raw(token.cast::<sys::napi_env>()) };
    OWNED.with(|o| o.borrow_mut().retain(|&(e, _)| e != env));
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
