//! The entry points the facade calls per operation, registered with raw
//! N-API: one mechanism for every call on a region. A napi-rs `#[napi]`
//! function costs more per call than the callback itself (argument
//! marshalling, class borrow bookkeeping), which shows next to a one-page
//! `msync`. Each entry is declared once in [`entries!`]: its arguments' Rust
//! types give both the conversion and the TypeScript type, and
//! [`typings`] writes the declarations `scripts/typings.mjs` appends to the
//! generated `index.d.ts`. Nothing here decides a rule: each entry reads its
//! arguments, converts them (`convert`) and calls the core, through
//! `registry` for the object's region and `change` for the change protocol.

use std::ffi::c_void;
#[cfg(feature = "codegen")]
use std::fmt::Write;
use std::ptr;

use napi::bindgen_prelude::{AsyncTask, ToNapiValue};
use napi::sys;

use mapped_region::rules::{check_bounds, check_eof, check_seals};
use mapped_region::{
    file_load_length, file_size, AnyRegion, Atomic, GuestBacking, MappingOptions, MemSlice,
    MemSliceMut, MemoryMapping, MemoryMappingArena,
};

use crate::convert::{self, index};
use crate::errors::{throw, Failure, Result};
use crate::records::{GuestRegionInfo, MappingInfo};
use crate::tasks::{self, FileIoTask, RangeTask};
use crate::{change, registry, share};

/// Reads up to `N` arguments; missing ones are null.
///
/// # Safety
/// `env` and `info` must be those of the current callback.
unsafe fn argv<const N: usize>(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> [sys::napi_value; N] {
    let mut argc = N;
    let mut argv = [ptr::null_mut(); N];
    if N == 0 {
        return argv;
    }
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

/// An argument of an entry point: how it is read, and its TypeScript type.
trait Arg: Sized {
    /// The TypeScript type of the parameter (read by the generator only).
    #[cfg_attr(not(feature = "codegen"), allow(dead_code))]
    const TS: &'static str;
    /// Whether it comes in a scratch slot ([`crate::scratch`]) rather than
    /// through N-API.
    const SLOT: bool = false;
    /// Reads the argument named `what` passed through N-API.
    ///
    /// # Safety
    /// `value` must be null or a value of the current callback's scope on `env`.
    unsafe fn read(env: sys::napi_env, value: sys::napi_value, what: &'static str) -> Result<Self>;
    /// Takes the next argument: the next scratch slot if [`Arg::SLOT`], the
    /// next N-API value otherwise (null, or NaN, past the end).
    ///
    /// # Safety
    /// As for [`Arg::read`], for each value of `values`.
    unsafe fn take(
        env: sys::napi_env,
        (slots, slot): (&[f64], &mut usize),
        (values, next): (&[sys::napi_value], &mut usize),
        what: &'static str,
    ) -> Result<Self> {
        let _ = (slots, slot);
        let value = values.get(*next).copied().unwrap_or(ptr::null_mut());
        *next += 1;
        // SAFETY: guaranteed by the caller.
        unsafe { Self::read(env, value, what) }
    }
}

/// A number, in a scratch slot. The facade's wrappers store anything else as
/// NaN, which every conversion refuses with `ERR_OUT_OF_RANGE` (the facade
/// has checked the type already).
impl Arg for f64 {
    const TS: &'static str = "number";
    const SLOT: bool = true;
    unsafe fn read(env: sys::napi_env, value: sys::napi_value, _: &'static str) -> Result<f64> {
        let mut out = f64::NAN;
        if !value.is_null() {
            // SAFETY: a live value; on a non-number the call fails and leaves NaN.
            unsafe { sys::napi_get_value_double(env, value, &mut out) };
        }
        Ok(out)
    }
    unsafe fn take(
        _: sys::napi_env,
        (slots, slot): (&[f64], &mut usize),
        _: (&[sys::napi_value], &mut usize),
        _: &'static str,
    ) -> Result<f64> {
        let value = slots.get(*slot).copied().unwrap_or(f64::NAN);
        *slot += 1;
        Ok(value)
    }
}

/// An optional number: `undefined` (or a missing argument) is `None`;
/// anything else reads as an [`f64`] does.
impl Arg for Option<f64> {
    const TS: &'static str = "number | undefined";
    unsafe fn read(env: sys::napi_env, value: sys::napi_value, what: &'static str) -> Result<Self> {
        if value.is_null() {
            return Ok(None);
        }
        let mut kind = sys::ValueType::napi_undefined;
        // SAFETY: a live value of this callback's scope.
        unsafe { sys::napi_typeof(env, value, &mut kind) };
        if kind == sys::ValueType::napi_undefined {
            return Ok(None);
        }
        // SAFETY: as guaranteed by the caller.
        unsafe { f64::read(env, value, what) }.map(Some)
    }
}

/// A boolean.
impl Arg for bool {
    const TS: &'static str = "boolean";
    unsafe fn read(env: sys::napi_env, value: sys::napi_value, what: &'static str) -> Result<bool> {
        let mut out = false;
        // SAFETY: a live value (or null, which the call refuses).
        let status = unsafe { sys::napi_get_value_bool(env, value, &mut out) };
        if status != sys::Status::napi_ok {
            return Err(Failure::ArgType {
                what,
                expected: "of type boolean",
            });
        }
        Ok(out)
    }
}

/// The bytes of a `Uint8Array`, valid for the callback (the argument roots
/// them). They may be a view of a region, changed by anyone at any time, so
/// they reach the core as a [`MemSliceMut`], never as a Rust reference.
struct Bytes {
    data: *mut u8,
    len: usize,
}

impl Bytes {
    fn slice(&self) -> MemSliceMut<'_> {
        // SAFETY: `data` and `len` describe the typed array's memory (null only
        // when empty or detached), mapped read-write and alive for the callback
        // this value lives in (it is never returned from it).
        unsafe { MemSliceMut::new(self.data, self.len) }
    }
}

impl Arg for Bytes {
    const TS: &'static str = "Uint8Array";
    unsafe fn read(
        env: sys::napi_env,
        value: sys::napi_value,
        what: &'static str,
    ) -> Result<Bytes> {
        let not_bytes = Failure::ArgType {
            what,
            expected: "a Uint8Array",
        };
        if value.is_null() {
            return Err(not_bytes);
        }
        // SAFETY: a live value of this callback's scope.
        match unsafe { typed_array(env, value) } {
            Some((sys::TypedarrayType::uint8_array, len, data)) => Ok(Bytes { data, len }),
            _ => Err(not_bytes),
        }
    }
}

/// The element type, length (in elements) and data pointer of a typed array
/// (null for a detached or empty one); `None` for anything else.
///
/// # Safety
/// `value` must be a live value of the current callback's scope on `env`.
unsafe fn typed_array(
    env: sys::napi_env,
    value: sys::napi_value,
) -> Option<(sys::napi_typedarray_type, usize, *mut u8)> {
    let mut kind = -1;
    let mut len = 0usize;
    let mut data = ptr::null_mut();
    // For anything but a typed array the call fails (napi_invalid_arg) and
    // writes nothing.
    // SAFETY: a live value of this callback's scope; the outputs are ours.
    let status = unsafe {
        sys::napi_get_typedarray_info(
            env,
            value,
            &mut kind,
            &mut len,
            &mut data,
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    (status == sys::Status::napi_ok).then_some((kind, len, data.cast()))
}

/// The numbers of a `Float64Array`, copied: its memory may be a view of a
/// region, so it is read as bytes through a [`MemSlice`], never as `&[f64]`.
impl Arg for Vec<f64> {
    const TS: &'static str = "Float64Array";
    unsafe fn read(env: sys::napi_env, value: sys::napi_value, what: &'static str) -> Result<Self> {
        let not_numbers = Failure::ArgType {
            what,
            expected: "a Float64Array",
        };
        if value.is_null() {
            return Err(not_numbers);
        }
        // SAFETY: a live value of this callback's scope.
        let Some((sys::TypedarrayType::float64_array, len, data)) =
            (unsafe { typed_array(env, value) })
        else {
            return Err(not_numbers);
        };
        // SAFETY: `data` holds `len` numbers (null only when empty or
        // detached), readable for this callback, which the copy does not outlive.
        let bytes = unsafe { MemSlice::new(data, len * 8) }.to_vec();
        Ok(bytes
            .chunks_exact(8)
            .map(|b| f64::from_ne_bytes(b.try_into().unwrap_or_default()))
            .collect())
    }
}

/// A BigInt as (negative, magnitude's low 64 bits, lossless).
struct Big(bool, u64, bool);

impl Arg for Big {
    const TS: &'static str = "bigint";
    unsafe fn read(env: sys::napi_env, value: sys::napi_value, what: &'static str) -> Result<Big> {
        let mut sign = 0;
        let mut words = [0u64; 1];
        let mut count = 1usize;
        // SAFETY: room for one word; napi reports how many the value needs.
        let status = unsafe {
            sys::napi_get_value_bigint_words(env, value, &mut sign, &mut count, words.as_mut_ptr())
        };
        if status != sys::Status::napi_ok {
            return Err(Failure::ArgType {
                what,
                expected: "of type bigint",
            });
        }
        Ok(Big(
            sign != 0 && (count > 1 || words[0] != 0),
            words[0],
            count <= 1,
        ))
    }
}

/// The JavaScript object that owns a new region: when it is collected, the
/// region's handle is released.
struct Owner(sys::napi_value);

impl Arg for Owner {
    const TS: &'static str = "object";
    unsafe fn read(_: sys::napi_env, value: sys::napi_value, what: &'static str) -> Result<Owner> {
        if value.is_null() {
            return Err(Failure::ArgType {
                what,
                expected: "an object",
            });
        }
        Ok(Owner(value))
    }
}

/// What an entry point returns, and its TypeScript type.
trait Ret {
    /// The TypeScript return type (read by the generator only).
    #[cfg_attr(not(feature = "codegen"), allow(dead_code))]
    const TS: &'static str;
    /// The JavaScript value (null for `undefined`).
    ///
    /// # Safety
    /// `env` must be the live env of the current callback.
    unsafe fn write(self, env: sys::napi_env) -> sys::napi_value;
}

impl Ret for () {
    const TS: &'static str = "void";
    unsafe fn write(self, _: sys::napi_env) -> sys::napi_value {
        ptr::null_mut()
    }
}

impl Ret for f64 {
    const TS: &'static str = "number";
    unsafe fn write(self, env: sys::napi_env) -> sys::napi_value {
        let mut value = ptr::null_mut();
        // SAFETY: creates a number in the current callback's scope.
        unsafe { sys::napi_create_double(env, self, &mut value) };
        value
    }
}

impl Ret for bool {
    const TS: &'static str = "boolean";
    unsafe fn write(self, env: sys::napi_env) -> sys::napi_value {
        let mut value = ptr::null_mut();
        // SAFETY: gets a boolean in the current callback's scope.
        unsafe { sys::napi_get_boolean(env, self, &mut value) };
        value
    }
}

/// Whether a change left ranges held: `true`, or `undefined` (the common
/// case, with nothing to create).
struct Held(bool);

impl Ret for Held {
    const TS: &'static str = "true | undefined";
    unsafe fn write(self, env: sys::napi_env) -> sys::napi_value {
        if self.0 {
            // SAFETY: as for `bool`.
            unsafe { true.write(env) }
        } else {
            ptr::null_mut()
        }
    }
}

/// An array of `items` (values of the current callback's scope).
///
/// # Safety
/// `env` must be the live env of the current callback.
unsafe fn tuple(env: sys::napi_env, items: &[sys::napi_value]) -> sys::napi_value {
    let mut out = ptr::null_mut();
    // SAFETY: an array of this callback's scope, with room for the items.
    unsafe {
        sys::napi_create_array_with_length(env, items.len(), &mut out);
        for (i, &item) in items.iter().enumerate() {
            sys::napi_set_element(env, out, i as u32, item);
        }
    }
    out
}

/// What `regionShare` returns: `[id, token, isArena]`.
struct Share(share::ShareHandle);

impl Ret for Share {
    const TS: &'static str = "[id: number, token: number, arena: boolean]";
    unsafe fn write(self, env: sys::napi_env) -> sys::napi_value {
        // SAFETY: guaranteed by the caller.
        unsafe {
            let items = [
                (self.0.id as f64).write(env),
                (self.0.token as f64).write(env),
                self.0.arena.write(env),
            ];
            tuple(env, &items)
        }
    }
}

/// The operation of `regionAtomic32`/`regionAtomic64`: 0 load, 1 store, 2
/// compare-exchange (anything else is a load: the facade passes constants).
fn atomic_op<T>(op: f64, value: T, expected: T) -> Atomic<T> {
    match op as u8 {
        1 => Atomic::Store(value),
        2 => Atomic::CompareExchange(expected, value),
        _ => Atomic::Load,
    }
}

/// An address, as a BigInt.
struct Address(u64);

impl Ret for Address {
    const TS: &'static str = "bigint";
    unsafe fn write(self, env: sys::napi_env) -> sys::napi_value {
        let mut value = ptr::null_mut();
        // SAFETY: creates a BigInt in the current callback's scope.
        unsafe { sys::napi_create_bigint_uint64(env, self.0, &mut value) };
        value
    }
}

/// Return types whose value the callback made itself: each is returned as it is.
macro_rules! made {
    ($($(#[$doc:meta])* $name:ident: $ts:literal;)*) => {$(
        $(#[$doc])*
        struct $name(sys::napi_value);

        impl Ret for $name {
            const TS: &'static str = $ts;
            unsafe fn write(self, _: sys::napi_env) -> sys::napi_value {
                self.0
            }
        }
    )*};
}

made! {
    /// A `Buffer` made by the callback.
    Buffer: "Buffer";
    /// A `SharedArrayBuffer` made by the callback.
    SharedBuffer: "SharedArrayBuffer";
    /// The answer of `regionWindow`, made by the callback.
    WindowAnswer: "[start: number, length: number, window: Buffer | undefined] | undefined";
    /// The answer of `guestWindow`, made by the callback.
    GuestWindowAnswer: "[start: number, length: number, window: Buffer | undefined, regionStart: number, regionEnd: number] | undefined";
}

/// Return values napi-rs converts: a task started on the thread pool (its
/// promise) and the records of a layout. A conversion that fails throws.
macro_rules! converted {
    ($($ty:ty: $ts:literal;)*) => {$(
        impl Ret for $ty {
            const TS: &'static str = $ts;
            unsafe fn write(self, env: sys::napi_env) -> sys::napi_value {
                // SAFETY: `env` is the live env of the current callback.
                match unsafe { <$ty as ToNapiValue>::to_napi_value(env, self) } {
                    Ok(value) => value,
                    Err(e) => {
                        // SAFETY: as above.
                        unsafe { napi::JsError::from(e).throw_into(env) };
                        ptr::null_mut()
                    }
                }
            }
        }
    )*};
}

converted! {
    AsyncTask<RangeTask>: "Promise<void>";
    AsyncTask<FileIoTask>: "Promise<number>";
    Vec<MappingInfo>: "MappingInfo[]";
    Vec<GuestRegionInfo>: "GuestRegionInfo[]";
}

/// 64-bit words, returned in a new `BigUint64Array` (a copy).
impl Ret for Vec<u64> {
    const TS: &'static str = "BigUint64Array";
    unsafe fn write(self, env: sys::napi_env) -> sys::napi_value {
        let bytes = self.len() * 8;
        let mut data = ptr::null_mut();
        let mut buffer = ptr::null_mut();
        let mut array = ptr::null_mut();
        // SAFETY: `env` is the live env of the current callback; Node
        // allocates `bytes` bytes at `data`, which nothing else holds yet.
        unsafe {
            if sys::napi_create_arraybuffer(env, bytes, &mut data, &mut buffer)
                != sys::Status::napi_ok
            {
                return ptr::null_mut();
            }
            ptr::copy_nonoverlapping(self.as_ptr().cast::<u8>(), data.cast::<u8>(), bytes);
            sys::napi_create_typedarray(
                env,
                sys::TypedarrayType::biguint64_array,
                self.len(),
                buffer,
                0,
                &mut array,
            );
        }
        array
    }
}

/// What `guestAddRegion` returns: the region's slot, and whether the arena
/// holds ranges to reclaim.
struct Slot(u32, bool);

impl Ret for Slot {
    const TS: &'static str = "[slot: number, held: boolean]";
    unsafe fn write(self, env: sys::napi_env) -> sys::napi_value {
        // SAFETY: guaranteed by the caller.
        unsafe { tuple(env, &[f64::from(self.0).write(env), self.1.write(env)]) }
    }
}

/// A new `Buffer` with a copy of `length` bytes of `region` at `offset`
/// (a range the caller checked: nothing is allocated for one refused).
///
/// # Safety
/// `env` must be the live env of the current callback.
unsafe fn read_copy(
    env: sys::napi_env,
    region: &AnyRegion,
    offset: usize,
    length: usize,
) -> Result<Buffer> {
    let mut data = ptr::null_mut();
    let mut buffer = ptr::null_mut();
    // SAFETY: `env` is this callback's; Node allocates `length` bytes.
    let status = unsafe { sys::napi_create_buffer(env, length, &mut data, &mut buffer) };
    if status != sys::Status::napi_ok {
        return Err(Failure::Pending);
    }
    let bytes = Bytes {
        data: data.cast(),
        len: length,
    };
    region.read_into(offset, bytes.slice())?;
    Ok(Buffer(buffer))
}

/// Turns a result into the callback's return value, throwing on failure.
///
/// # Safety
/// `env` must be the live env of the current callback.
unsafe fn finish<R: Ret>(env: sys::napi_env, result: Result<R>) -> sys::napi_value {
    match result {
        // SAFETY: guaranteed by the caller.
        Ok(value) => unsafe { value.write(env) },
        Err(failure) => {
            // SAFETY: guaranteed by the caller.
            unsafe { throw(env, &failure) };
            ptr::null_mut()
        }
    }
}

/// Finalizer of a region's owner: releases its handle.
unsafe extern "C" fn finalize_owner(_env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
    // `data` carries the handle, an integer below 2^53.
    registry::release(data as usize as f64);
}

/// Registers `region` and ties its handle to `owner`'s lifetime.
///
/// # Safety
/// `env` must be the live env of the current callback.
unsafe fn adopt(env: sys::napi_env, owner: Owner, region: Result<AnyRegion>) -> Result<f64> {
    let handle = registry::insert(env, region?);
    // SAFETY: guaranteed by the caller.
    unsafe { own(env, owner, handle) }
}

/// Ties `handle` (just registered) to `owner`'s lifetime.
///
/// # Safety
/// `env` must be the live env of the current callback.
unsafe fn own(env: sys::napi_env, owner: Owner, handle: f64) -> Result<f64> {
    // SAFETY: `owner.0` is a live value of this callback; the finalizer gets
    // the handle as its data and runs once, when the owner is collected.
    let status = unsafe {
        sys::napi_add_finalizer(
            env,
            owner.0,
            handle as u64 as usize as *mut c_void,
            Some(finalize_owner),
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    if status != sys::Status::napi_ok {
        registry::release(handle);
        return Err(Failure::ArgType {
            what: "owner",
            expected: "an object",
        });
    }
    Ok(handle)
}

/// A registered entry point.
struct Entry {
    /// The export's name, NUL-terminated.
    name: &'static str,
    callback: unsafe extern "C" fn(sys::napi_env, sys::napi_callback_info) -> sys::napi_value,
    /// What the generator writes (only in its build): the doc comment, each
    /// parameter (its name, its TypeScript type, and whether it comes in a
    /// scratch slot) and the TypeScript return type.
    #[cfg(feature = "codegen")]
    docs: &'static [&'static str],
    #[cfg(feature = "codegen")]
    args: &'static [(&'static str, &'static str, bool)],
    #[cfg(feature = "codegen")]
    ret: &'static str,
}

/// Declares the entry points: `name(arg: Type, ...) -> Ret = |env| body;`.
/// Each becomes a raw N-API callback that reads its arguments in order (the
/// first failure throws), evaluates `body` (a `Result<Ret>`) and returns or
/// throws; and an [`Entry`] with its TypeScript signature.
macro_rules! entries {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty = |$env:ident| $body:expr;
    )*) => {
        $(
            #[allow(non_snake_case)]
            unsafe extern "C" fn $name(
                env: sys::napi_env,
                info: sys::napi_callback_info,
            ) -> sys::napi_value {
                // Numbers in scratch slots, the rest through N-API.
                const SLOTS: usize = 0 $(+ <$ty as Arg>::SLOT as usize)*;
                const N: usize = 0 $(+ (!<$ty as Arg>::SLOT) as usize)*;
                // The slots first, before anything can call into JavaScript.
                let _slots = crate::scratch::take::<SLOTS>(env);
                // SAFETY: called by Node with this callback's env and info.
                let _values = unsafe { argv::<N>(env, info) };
                let run = || -> Result<$ret> {
                    let (mut _slot, mut _next) = (0, 0);
                    $(
                        // SAFETY: each value belongs to this callback's scope.
                        #[allow(unused_mut)]
                        let mut $arg = unsafe {
                            <$ty as Arg>::take(
                                env,
                                (&_slots, &mut _slot),
                                (&_values, &mut _next),
                                stringify!($arg),
                            )
                        }?;
                    )*
                    let $env = env;
                    $body
                };
                let result = run();
                // SAFETY: `env` is this callback's.
                unsafe { finish(env, result) }
            }
        )*

        const ENTRIES: &[Entry] = &[$(
            Entry {
                name: concat!(stringify!($name), "\0"),
                callback: $name,
                #[cfg(feature = "codegen")]
                docs: &[$($doc),*],
                #[cfg(feature = "codegen")]
                args: &[$((stringify!($arg), <$ty as Arg>::TS, <$ty as Arg>::SLOT)),*],
                #[cfg(feature = "codegen")]
                ret: <$ret as Ret>::TS,
            },
        )*];
    };
}

entries! {
    /// A `PROT_NONE` reservation of `size` bytes starting at a multiple of
    /// `align`, owned by `owner`; returns its handle.
    regionReserve(owner: Owner, size: f64, align: f64) -> f64 = |env| {
        let arena = (|| Ok(MemoryMappingArena::reserve(index("size", size)?, index("align", align)?)?))();
        // SAFETY: `env` is this callback's.
        unsafe { adopt(env, owner, arena.map(AnyRegion::Arena)) }
    };
    /// Anonymous memory owned by `owner`; returns its handle.
    regionAnonymous(owner: Owner, size: f64, protection: f64, populate: bool, shared: bool) -> f64 = |env| {
        let mapping = (|| {
            let options = MappingOptions {
                protection: convert::protection(protection)?,
                populate,
                shared,
                ..MappingOptions::anonymous()
            };
            Ok(MemoryMapping::anonymous(index("size", size)?, options)?)
        })();
        // SAFETY: as above.
        unsafe { adopt(env, owner, mapping.map(AnyRegion::Mapping)) }
    };
    /// A mapping of `fd` owned by `owner`; returns its handle.
    regionFromFd(
        owner: Owner,
        fd: f64,
        size: f64,
        offset: f64,
        protection: f64,
        populate: bool,
        shared: bool,
        checkEof: bool,
    ) -> f64 = |env| {
        let mapping = (|| {
            let fd = convert::fd(fd)?;
            let size = index("size", size)?;
            let options = MappingOptions {
                protection: convert::protection(protection)?,
                populate,
                shared,
                offset: index("offset", offset)? as u64,
                check_eof: checkEof,
            };
            // SAFETY: the borrow ends with this call.
            Ok(MemoryMapping::from_fd(unsafe { convert::borrow_fd(fd) }, size, options)?)
        })();
        // SAFETY: as above.
        unsafe { adopt(env, owner, mapping.map(AnyRegion::Mapping)) }
    };
    /// The start address (`ERR_MMAP_CLOSED` once closed).
    regionAddress(handle: f64) -> Address = |_env| {
        let region = registry::get(handle)?;
        region.keep.lock().live()?;
        Ok(Address(region.span.addr() as u64))
    };
    /// The size in bytes (whole pages for an arena).
    regionSize(handle: f64) -> f64 = |_env| registry::size(handle);
    /// Whether the region is closed.
    regionClosed(handle: f64) -> bool = |_env| Ok(registry::closed(handle));
    /// Detaches every view and unmaps (once nothing uses the memory). `true`
    /// when the facade must call `regionReclaim` on the next turn of the event loop.
    regionClose(handle: f64) -> Held = |_env| Ok(Held(registry::close(handle)));
    /// Gives held ranges what their changes asked for; releases a deferred close.
    regionReclaim(handle: f64) -> () = |_env| {
        registry::reclaim(handle);
        Ok(())
    };
    /// `msync(MS_SYNC)`.
    regionMsync(handle: f64, offset: f64, size: f64) -> () = |_env| {
        registry::with_open(handle, |span| {
            let range = span.page_range(index("offset", offset)?, index("size", size)?)?;
            // SAFETY: an open object keeps its region mapped (`with_open`).
            Ok(unsafe { range.msync() }?)
        })
    };
    /// `madvise` with the Linux advice number.
    regionMadvise(handle: f64, offset: f64, size: f64, advice: f64) -> () = |_env| {
        registry::with_open(handle, |span| {
            let range = span.page_range(index("offset", offset)?, index("size", size)?)?;
            let advice = convert::advice(advice)?;
            // SAFETY: as for msync.
            Ok(unsafe { range.madvise(advice) }?)
        })
    };
    /// `mlock` (`mlock2(MLOCK_ONFAULT)` with `onFault`).
    regionMlock(handle: f64, offset: f64, size: f64, onFault: bool) -> () = |_env| {
        registry::with_open(handle, |span| {
            let range = span.page_range(index("offset", offset)?, index("size", size)?)?;
            // SAFETY: as for msync.
            Ok(unsafe { range.mlock(onFault) }?)
        })
    };
    /// `munlock`.
    regionMunlock(handle: f64, offset: f64, size: f64) -> () = |_env| {
        registry::with_open(handle, |span| {
            let range = span.page_range(index("offset", offset)?, index("size", size)?)?;
            // SAFETY: as for msync.
            Ok(unsafe { range.munlock() }?)
        })
    };
    /// An fd overlay (`MAP_SHARED`, or `MAP_PRIVATE` without `shared`). `true`
    /// when the arena now holds ranges to reclaim.
    regionAddFdMapping(handle: f64, offset: f64, size: f64, fd: f64, fdOffset: f64, protection: f64, shared: bool) -> Held = |_env| {
        change::change(handle, "addFdMapping", |arena| {
            let (offset, size, fd_offset) = (index("offset", offset)?, index("size", size)?, index("fdOffset", fdOffset)?);
            let (fd, prot) = (convert::fd(fd)?, convert::protection(protection)?);
            // SAFETY: the borrow ends with this call (the change is applied in it).
            let fd = unsafe { convert::borrow_fd(fd) };
            Ok(arena.plan_fd_overlay(offset, size, fd, fd_offset as u64, prot, shared)?)
        })
        .map(Held)
    };
    /// An fd overlay whose `fdOffset` is a BigInt beyond 2^53.
    regionAddFdMappingBig(handle: f64, offset: f64, size: f64, fd: f64, fdOffset: Big, protection: f64, shared: bool) -> Held = |_env| {
        change::change(handle, "addFdMapping", |arena| {
            let Big(negative, value, lossless) = fdOffset;
            let (offset, size) = (index("offset", offset)?, index("size", size)?);
            let fd_offset = convert::big_offset("fdOffset", negative, value, lossless)?;
            let (fd, prot) = (convert::fd(fd)?, convert::protection(protection)?);
            // SAFETY: as above.
            let fd = unsafe { convert::borrow_fd(fd) };
            Ok(arena.plan_fd_overlay(offset, size, fd, fd_offset, prot, shared)?)
        })
        .map(Held)
    };
    /// An overlay of the `SharedMemory` registered as `source` (its private
    /// descriptor; no `fstat` when the core knows its size: see
    /// `MemoryMappingArena::plan_shm_overlay`).
    regionAddShmMapping(handle: f64, offset: f64, size: f64, source: f64, fdOffset: f64, protection: f64, shared: bool) -> Held = |_env| {
        // Looked up first: the change borrows it, and is applied before it goes.
        let shm = crate::shm::source(source);
        change::change(handle, "addFdMapping", |arena| {
            let (offset, size) = (index("offset", offset)?, index("size", size)?);
            let shm = shm.as_deref().map_err(|_| Failure::Core(mapped_region::Error::Closed))?;
            let (fd_offset, prot) = (index("fdOffset", fdOffset)?, convert::protection(protection)?);
            Ok(arena.plan_shm_overlay(offset, size, shm, fd_offset as u64, prot, shared)?)
        })
        .map(Held)
    };
    /// A private anonymous overlay.
    regionAddAnonymous(handle: f64, offset: f64, size: f64, protection: f64) -> Held = |_env| {
        change::change(handle, "addAnonymous", |arena| {
            let (offset, size) = (index("offset", offset)?, index("size", size)?);
            Ok(arena.plan_anonymous(offset, size, convert::protection(protection)?)?)
        })
        .map(Held)
    };
    /// Changes the protection of a mapped range in place (`mprotect`).
    regionProtect(handle: f64, offset: f64, size: f64, protection: f64) -> Held = |_env| {
        change::change(handle, "protect", |arena| {
            let (offset, size) = (index("offset", offset)?, index("size", size)?);
            Ok(arena.plan_protect(offset, size, convert::protection(protection)?)?)
        })
        .map(Held)
    };
    /// Replaces the range by reserved `PROT_NONE` space.
    regionRemoveMapping(handle: f64, offset: f64, size: f64) -> Held = |_env| {
        change::change(handle, "removeMapping", |arena| {
            Ok(arena.plan_removal(index("offset", offset)?, index("size", size)?)?)
        })
        .map(Held)
    };
    /// Discards the pages of the range (offset and size page aligned; needs
    /// `WRITE`): `MADV_REMOVE` over shared memory and files, `MADV_DONTNEED`
    /// over private memory (the core's `discard`).
    regionDiscard(handle: f64, offset: f64, size: f64) -> () = |_env| {
        let region = registry::get(handle)?;
        let mut state = region.keep.lock();
        let (offset, size) = (index("offset", offset)?, index("size", size)?);
        let discarded = state.live()?.discard(offset, size);
        // Discarded shared memory is no write the kernel's tracking sees: a
        // guest memory it tracks marks it (all of it: a failure may have discarded part).
        if discarded.is_ok() || matches!(discarded, Err(mapped_region::Error::Syscall { .. })) {
            state.dirty_changed(offset, offset.saturating_add(size));
        }
        Ok(discarded?)
    };
    /// Copies `target.length` bytes at `offset` into `target`.
    regionReadInto(handle: f64, offset: f64, target: Bytes) -> () = |_env| {
        let region = registry::get(handle)?;
        let state = region.keep.lock();
        Ok(state.live()?.read_into(index("offset", offset)?, target.slice())?)
    };
    /// Copies `source` to `offset`.
    regionWrite(handle: f64, offset: f64, source: Bytes) -> () = |_env| {
        let region = registry::get(handle)?;
        let state = region.keep.lock();
        Ok(state.live()?.write_from(index("offset", offset)?, source.slice())?)
    };
    /// Reads `fd` from `fileOffset` into `offset` (`pread`, no intermediate
    /// buffer): `length` bytes, or without it the rest of the file. Returns
    /// the bytes loaded (fewer where the file ends).
    regionLoadFile(handle: f64, offset: f64, fd: f64, fileOffset: f64, length: Option<f64>) -> f64 = |_env| {
        let region = registry::get(handle)?;
        let state = region.keep.lock();
        let r = state.live()?;
        let (offset, file_offset, fd) = (index("offset", offset)?, index("fileOffset", fileOffset)? as u64, convert::fd(fd)?);
        let length = length.map(|l| index("length", l)).transpose()?;
        // SAFETY: the borrow ends with this call.
        let fd = unsafe { convert::borrow_fd(fd) };
        let length = file_load_length(fd, file_offset, length)?;
        Ok(r.load(offset, length, fd, file_offset)? as f64)
    };
    /// How many bytes loading `fd` from `fileOffset` reads without a length:
    /// the rest of the file (the core's rule).
    fileLoadLength(fd: f64, fileOffset: f64) -> f64 = |_env| {
        let (fd, file_offset) = (convert::fd(fd)?, index("fileOffset", fileOffset)? as u64);
        // SAFETY: the borrow ends with this call.
        let fd = unsafe { convert::borrow_fd(fd) };
        Ok(file_load_length(fd, file_offset, None)? as f64)
    };
    /// Refuses a mapping of `size` bytes of `fd` from `fdOffset` that reaches
    /// past the end of the file (the core's end-of-file rule; a file of
    /// unknown size passes). For checking a whole snapshot manifest before
    /// anything is mapped.
    fileCheckEof(fd: f64, fdOffset: f64, size: f64) -> () = |_env| {
        let (fd, fd_offset, size) = (convert::fd(fd)?, index("fdOffset", fdOffset)? as u64, index("size", size)?);
        // SAFETY: the borrow ends with this call.
        let fd = unsafe { convert::borrow_fd(fd) };
        // No size to check against (a device): the overlay decides.
        match file_size(fd)? {
            Some(file_size) => Ok(check_eof(fd_offset, size, file_size)?),
            None => Ok(()),
        }
    };
    /// Checks one protection argument (the rule every `protection` passes)
    /// and returns it: what `Protection.of` combines.
    checkProtection(protection: f64) -> f64 = |_env| Ok(f64::from(convert::protection(protection)?.bits()));
    /// Checks one seal argument (the core's seal rule, as `addSeals` applies
    /// it) and returns it: what `Seal.of` combines.
    checkSeals(seals: f64) -> f64 = |_env| {
        let seals = convert::seals(seals)?;
        check_seals(seals)?;
        Ok(f64::from(seals))
    };
    /// A new `Buffer` with a copy of `length` bytes at `offset`.
    regionRead(handle: f64, offset: f64, length: f64) -> Buffer = |env| {
        let region = registry::get(handle)?;
        let state = region.keep.lock();
        let r = state.live()?;
        let (offset, length) = (index("offset", offset)?, index("length", length)?);
        // A length the region cannot hold is refused before anything is allocated.
        check_bounds(offset, length, region.span.size())?;
        // SAFETY: `env` is this callback's.
        unsafe { read_copy(env, r, offset, length) }
    };
    /// A zero-copy `Buffer` over the range, detached when the memory under it changes.
    regionView(handle: f64, offset: f64, length: f64) -> Buffer = |env| {
        // SAFETY: `env` is this callback's, on the region's thread.
        unsafe { registry::get(handle)?.view(env, offset, length) }.map(Buffer)
    };
    /// The facade's window for typed access around `offset`:
    /// `[start, length, buffer]`, `[start, length, undefined]` where memory
    /// may not be touched directly, or `undefined` in a hole.
    regionWindow(handle: f64, offset: f64) -> WindowAnswer = |env| {
        // SAFETY: `env` is this callback's, on the region's thread.
        unsafe { registry::get(handle)?.window(env, offset) }.map(WindowAnswer)
    };
    /// Refuses an atomic access of `width` bytes at `offset` that may not be
    /// made (bounds, natural alignment, memory that may be touched directly).
    regionAtomicCheck(handle: f64, offset: f64, width: f64) -> () = |_env| {
        let region = registry::get(handle)?;
        let state = region.keep.lock();
        let width = if width == 8.0 { 8 } else { 4 };
        Ok(state.live()?.check_atomic(index("offset", offset)?, width)?)
    };
    /// A `SharedArrayBuffer` over the range (where the runtime can make one), pinning
    /// it until collected: changes over it are `ERR_MMAP_BUSY` meanwhile.
    regionSharedView(handle: f64, offset: f64, length: f64) -> SharedBuffer = |env| {
        // SAFETY: `env` is this callback's, on the region's thread.
        unsafe { crate::shared::create(env, handle, offset, length) }.map(SharedBuffer)
    };
    /// Shares the region with other threads: `[id, token, isArena]` for
    /// `regionAttach`. From now on views are recorded and no window is handed out.
    regionShare(handle: f64) -> Share = |_env| Ok(Share(share::share(handle)?));
    /// A new handle, owned by `owner`, over the region shared as `id`/`token`
    /// (in any thread); `arena` must match its kind.
    regionAttach(owner: Owner, id: f64, token: f64, arena: bool) -> f64 = |env| {
        let handle = share::attach(env, id, token, arena)?;
        // SAFETY: `env` is this callback's.
        unsafe { own(env, owner, handle) }
    };
    /// A checked atomic 4-byte operation at `offset` (for memory without a
    /// window): `op` 0 load, 1 store `value`, 2 compare `expected` and
    /// exchange for `value`; returns the value loaded (or stored).
    regionAtomic32(handle: f64, offset: f64, op: f64, value: f64, expected: f64) -> f64 = |_env| {
        let region = registry::get(handle)?;
        let state = region.keep.lock();
        let (value, expected) = (convert::u32_value("value", value)?, convert::u32_value("expected", expected)?);
        Ok(state.live()?.atomic::<u32>(index("offset", offset)?, atomic_op(op, value, expected))? as f64)
    };
    /// As `regionAtomic32`, for 8 bytes (values as BigInts).
    regionAtomic64(handle: f64, offset: f64, op: f64, value: Big, expected: Big) -> Address = |_env| {
        let region = registry::get(handle)?;
        let state = region.keep.lock();
        let (value, expected) = (convert::u64_value("value", value.0, value.1, value.2)?, convert::u64_value("expected", expected.0, expected.1, expected.2)?);
        Ok(Address(state.live()?.atomic::<u64>(index("offset", offset)?, atomic_op(op, value, expected))?))
    };
    /// Adds a guest region at `guestAddress` to the arena and its guest
    /// table, under the arena's lock (refused where it overlaps one, before
    /// anything is mapped; with `dontDump`, `MADV_DONTDUMP` on it, and
    /// unmapped again if that fails): `kind` 0 anonymous memory, 1 `fd` from
    /// `fdOffset` (`MAP_SHARED` or, without `shared`, private), 2 the
    /// `SharedMemory` registered as `fd`. Returns its KVM slot, and `true`
    /// when the arena now holds ranges to reclaim.
    guestAddRegion(handle: f64, guestAddress: f64, size: f64, protection: f64, kind: f64, fd: f64, fdOffset: Big, shared: bool, dontDump: bool) -> Slot = |_env| {
        let (start, size, prot) = (index("guestAddress", guestAddress)?, index("size", size)?, convert::protection(protection)?);
        let backing = match kind as u8 {
            0 => GuestBacking::Anonymous,
            1 => GuestBacking::Fd,
            _ => GuestBacking::SharedMemory,
        };
        // Looked up first: the change borrows it, and is applied before it goes.
        let shm = (backing == GuestBacking::SharedMemory).then(|| crate::shm::source(fd));
        let add = change::GuestAdd { start, size, protection: prot, backing, dont_dump: dontDump };
        let (slot, held) = change::guest_add(handle, add, |arena| {
            let Big(negative, value, lossless) = fdOffset;
            Ok(match (backing, &shm) {
                (GuestBacking::Anonymous, _) => arena.plan_anonymous(start, size, prot)?,
                (_, Some(shm)) => {
                    let shm = shm.as_deref().map_err(|_| Failure::Core(mapped_region::Error::Closed))?;
                    let fd_offset = convert::big_offset("fdOffset", negative, value, lossless)?;
                    arena.plan_shm_overlay(start, size, shm, fd_offset, prot, shared)?
                }
                (_, None) => {
                    let (fd, fd_offset) = (convert::fd(fd)?, convert::big_offset("fdOffset", negative, value, lossless)?);
                    // SAFETY: the borrow ends with this call (the change is applied in it).
                    let fd = unsafe { convert::borrow_fd(fd) };
                    arena.plan_fd_overlay(start, size, fd, fd_offset, prot, shared)?
                }
            })
        })?;
        Ok(Slot(slot, held))
    };
    /// Removes the guest region that starts at `guestAddress` from the arena
    /// and its guest table. `true` when the arena now holds ranges to reclaim.
    guestRemoveRegion(handle: f64, guestAddress: f64) -> Held = |_env| {
        change::guest_remove(handle, index("guestAddress", guestAddress)?).map(Held)
    };
    /// Changes the protection of the guest region that starts at `guestAddress`.
    guestProtect(handle: f64, guestAddress: f64, protection: f64) -> Held = |_env| {
        let (start, prot) = (index("guestAddress", guestAddress)?, convert::protection(protection)?);
        change::guest_protect(handle, start, prot).map(Held)
    };
    /// Refuses a guest range that guest regions do not cover without a gap.
    guestCovered(handle: f64, guestAddress: f64, length: f64) -> () = |_env| {
        let region = registry::get(handle)?;
        let state = region.keep.lock();
        state.guest_range(index("guestAddress", guestAddress)?, index("length", length)?)?;
        Ok(())
    };
    /// The host address of `guestAddress` (`ERR_GUEST_ADDRESS` in no region).
    guestTranslate(handle: f64, guestAddress: f64) -> Address = |_env| {
        let region = registry::get(handle)?;
        let state = region.keep.lock();
        let address = index("guestAddress", guestAddress)?;
        state.guest_range(address, 0)?;
        Ok(Address((region.span.addr() + address) as u64))
    };
    /// A new `Buffer` with a copy of `length` guest bytes at `guestAddress`.
    guestRead(handle: f64, guestAddress: f64, length: f64) -> Buffer = |env| {
        let region = registry::get(handle)?;
        let state = region.keep.lock();
        let (address, length) = (index("guestAddress", guestAddress)?, index("length", length)?);
        let r = state.guest_range(address, length)?;
        // SAFETY: `env` is this callback's.
        unsafe { read_copy(env, r, address, length) }
    };
    /// Copies `target.length` guest bytes at `guestAddress` into `target`.
    guestReadInto(handle: f64, guestAddress: f64, target: Bytes) -> () = |_env| {
        let region = registry::get(handle)?;
        let state = region.keep.lock();
        let address = index("guestAddress", guestAddress)?;
        Ok(state.guest_range(address, target.len)?.read_into(address, target.slice())?)
    };
    /// Copies `source` to `guestAddress`.
    guestWrite(handle: f64, guestAddress: f64, source: Bytes) -> () = |_env| {
        let region = registry::get(handle)?;
        let state = region.keep.lock();
        let address = index("guestAddress", guestAddress)?;
        Ok(state.guest_range(address, source.len)?.write_from(address, source.slice().as_const())?)
    };
    /// `regionDiscard` of `[guestAddress, guestAddress + size)`, which
    /// regions that follow each other without a gap must cover.
    guestDiscard(handle: f64, guestAddress: f64, size: f64) -> () = |_env| {
        let region = registry::get(handle)?;
        let mut state = region.keep.lock();
        let (address, size) = (index("guestAddress", guestAddress)?, index("size", size)?);
        let discarded = state.guest_range(address, size)?.discard(address, size);
        if discarded.is_ok() || matches!(discarded, Err(mapped_region::Error::Syscall { .. })) {
            state.dirty_changed(address, address.saturating_add(size));
        }
        Ok(discarded?)
    };
    /// Reads `length` bytes of `fd` from `fileOffset` into guest memory at
    /// `guestAddress` (`pread`); returns the bytes loaded.
    guestLoadFile(handle: f64, guestAddress: f64, fd: f64, fileOffset: f64, length: f64) -> f64 = |_env| {
        let region = registry::get(handle)?;
        let state = region.keep.lock();
        let (address, length) = (index("guestAddress", guestAddress)?, index("length", length)?);
        let r = state.guest_range(address, length)?;
        let (file_offset, fd) = (index("fileOffset", fileOffset)? as u64, convert::fd(fd)?);
        // SAFETY: the borrow ends with this call.
        let fd = unsafe { convert::borrow_fd(fd) };
        Ok(r.load(address, length, fd, file_offset)? as f64)
    };
    /// `regionWindow` around `guestAddress`, with the bounds of the guest
    /// region there appended; `undefined` in no region or a hole.
    guestWindow(handle: f64, guestAddress: f64) -> GuestWindowAnswer = |env| {
        let bounds = {
            let region = registry::get(handle)?;
            let state = region.keep.lock();
            state.live()?;
            let table = state.guest();
            table.index_of(index("guestAddress", guestAddress)?).map(|i| table.regions()[i])
        };
        let Some(r) = bounds else {
            return Ok(GuestWindowAnswer(ptr::null_mut()));
        };
        // SAFETY: `env` is this callback's, on the region's thread.
        let answer = unsafe { registry::get(handle)?.window(env, guestAddress) }?;
        if !answer.is_null() {
            // SAFETY: the array `create_window` made in this callback's scope.
            unsafe {
                sys::napi_set_element(env, answer, 3, (r.start as f64).write(env));
                sys::napi_set_element(env, answer, 4, (r.end() as f64).write(env));
            }
        }
        Ok(GuestWindowAnswer(answer))
    };
    /// Refuses an atomic access of `width` bytes at `guestAddress` outside
    /// the guest regions, or one that may not be made (as `regionAtomicCheck`).
    guestAtomicCheck(handle: f64, guestAddress: f64, width: f64) -> () = |_env| {
        let region = registry::get(handle)?;
        let state = region.keep.lock();
        let width = if width == 8.0 { 8 } else { 4 };
        let address = index("guestAddress", guestAddress)?;
        Ok(state.guest_range(address, width)?.check_atomic(address, width)?)
    };
    /// `msync(MS_SYNC)` of the pages of `[offset, offset + size)` on the libuv thread pool.
    regionMsyncAsync(handle: f64, offset: f64, size: f64) -> AsyncTask<RangeTask> = |_env| {
        tasks::msync(handle, offset, size)
    };
    /// `MADV_POPULATE_READ`/`_WRITE` of the pages of `[offset, offset + size)`
    /// on the libuv thread pool.
    regionPopulateAsync(handle: f64, offset: f64, size: f64, write: bool) -> AsyncTask<RangeTask> = |_env| {
        tasks::populate(handle, offset, size, write)
    };
    /// Reads `fd` from `fileOffset` into `offset` on the libuv thread pool:
    /// `length` bytes, or without it the rest of the file; resolves to the
    /// bytes loaded.
    regionLoadFileAsync(handle: f64, offset: f64, fd: f64, fileOffset: f64, length: Option<f64>) -> AsyncTask<FileIoTask> = |_env| {
        tasks::load_file(handle, offset, fd, fileOffset, length)
    };
    /// A batch of file I/O on the libuv thread pool: `runs` is flat triples
    /// (offset in the region, length, file offset). With `dump`, each run is
    /// written to the file, which is then grown to at least `fileLen`;
    /// otherwise each is read from the file, which must hold every byte of
    /// every run. Resolves to the bytes moved.
    regionFileIoAsync(handle: f64, fd: f64, dump: bool, runs: Vec<f64>, fileLen: f64) -> AsyncTask<FileIoTask> = |_env| {
        tasks::file_io(handle, fd, dump, &runs, fileLen)
    };
    /// The layout of an arena.
    regionMappings(handle: f64) -> Vec<MappingInfo> = |_env| {
        let region = registry::get(handle)?;
        let state = region.keep.lock();
        let arena = state.live()?.arena("mappings")?;
        Ok(arena.mappings().map(MappingInfo::from).collect())
    };
    /// The regions of a guest memory's table, sorted by guest address.
    guestRegions(handle: f64) -> Vec<GuestRegionInfo> = |_env| {
        Ok(change::guest_regions(handle)?.into_iter().map(GuestRegionInfo::from).collect())
    };
    /// Tracks the writes to the guest regions with the kernel (userfaultfd
    /// write-protect and `PAGEMAP_SCAN`), now and as regions come; refused
    /// with the reason where the kernel or the process cannot.
    guestTrackDirty(handle: f64) -> () = |_env| registry::get(handle)?.keep.lock().track_dirty();
    /// Starts the pager of a restore (`lazy: 'pager'`): fills the guest
    /// ranges of `runs` (`guestAddress, size, fileOffset` triples, fresh
    /// memory) from the file `fd` (duplicated: it may be closed after the
    /// call), on faults and in the background, with a thread of its own;
    /// `first` (`guestAddress, pages` pairs) is filled first, and `record`
    /// records the pages first faulted on.
    guestPagerStart(handle: f64, fd: f64, runs: Vec<f64>, record: bool, first: Vec<f64>) -> () = |_env| {
        let mut triples = Vec::with_capacity(runs.len() / 3);
        for t in runs.chunks(3) {
            let [address, size, offset] = t else {
                return Err(mapped_region::Error::InvalidArgument {
                    what: "runs",
                    reason: "must hold guestAddress, size, fileOffset triples".into(),
                }
                .into());
            };
            triples.push((index("guestAddress", *address)?, index("size", *size)?, index("fileOffset", *offset)? as u64));
        }
        let mut options = mapped_region::PagerOptions { first: Vec::with_capacity(first.len() / 2), record };
        for pair in first.chunks_exact(2) {
            options.first.push((index("first", pair[0])? as u64, index("first", pair[1])?));
        }
        let fd = convert::fd(fd)?;
        // SAFETY: the borrow ends with this call (the pager keeps a duplicate).
        let fd = unsafe { convert::borrow_fd(fd) };
        registry::get(handle)?.keep.lock().pager_start(fd, &triples, options)
    };
    /// What the pager saw of the faults (see `State::pager_record`).
    guestPagerRecord(handle: f64) -> Vec<u64> = |_env| registry::get(handle)?.keep.lock().pager_record();
    /// The pager's status (see `State::pager_status`).
    guestPagerStatus(handle: f64) -> Vec<u64> = |_env| registry::get(handle)?.keep.lock().pager_status();
    /// Whether the kernel tracks the guest regions' writes.
    guestDirtyKernel(handle: f64) -> bool = |_env| Ok(registry::get(handle)?.keep.lock().dirty_kernel());
    /// Marks `[address, address + length)` (inside the guest regions)
    /// changed, for the next take (kernel tracking).
    guestMarkDirty(handle: f64, address: f64, length: f64) -> () = |_env| {
        let (address, length) = (index("address", address)?, index("length", length)?);
        registry::get(handle)?.keep.lock().dirty_mark(address, length)
    };
    /// Takes the pages of every guest region written or marked since the
    /// last take, and starts anew (kernel tracking): for each region, in
    /// guest address order, its guest address, its size, then its bitmap
    /// (`KVM_GET_DIRTY_LOG`'s layout, a word per 64 pages).
    guestTakeDirty(handle: f64) -> Vec<u64> = |_env| registry::get(handle)?.keep.lock().dirty_take();
    /// Asynchronous operations still pending.
    regionPending(handle: f64) -> f64 = |_env| Ok(registry::pending(handle));
    /// Kernel mappings an arena occupies.
    regionKernelMappings(handle: f64) -> f64 = |_env| {
        let region = registry::get(handle)?;
        let state = region.keep.lock();
        Ok(state.live()?.arena("kernelMappingCount")?.kernel_mapping_count() as f64)
    };
}

/// The TypeScript declarations of the entry points as the addon exports them
/// (only the arguments that come through N-API), and of the scratch slots,
/// for `index.d.ts`.
#[cfg(feature = "codegen")]
pub fn typings() -> String {
    let mut out = String::from(
        "\n/** The thread's scratch slots: the entry points' number arguments, stored by ts/calls.ts. */\nexport declare const scratch: ArrayBuffer\n",
    );
    for e in ENTRIES {
        let slots: Vec<&str> = e.args.iter().filter(|a| a.2).map(|a| a.0).collect();
        let note = (!slots.is_empty()).then(|| format!(" Scratch slots: {}.", slots.join(", ")));
        doc_comment(&mut out, e.docs, note.as_deref());
        let args: Vec<String> = e
            .args
            .iter()
            .filter(|a| !a.2)
            .map(|(n, t, _)| format!("{n}: {t}"))
            .collect();
        let _ = writeln!(
            out,
            "export declare function {}({}): {}",
            e.name.trim_end_matches('\0'),
            args.join(", "),
            e.ret
        );
    }
    out
}

/// An entry point's doc comment (its `///` lines, then `note`), after a blank line.
#[cfg(feature = "codegen")]
fn doc_comment(out: &mut String, docs: &[&str], note: Option<&str>) {
    out.push_str("\n/**\n");
    for line in docs.iter().copied().chain(note) {
        let _ = writeln!(out, " *{line}");
    }
    out.push_str(" */\n");
}

/// `ts/calls.ts`: for each entry point, a function with its full signature
/// that stores the number arguments in the scratch slots, in order (anything
/// but a number as NaN, without calling into it), and calls the entry point
/// with the others.
#[cfg(feature = "codegen")]
pub fn calls() -> String {
    let mut out = String::from(concat!(
        "// Generated from crate/node/src/entries.rs by scripts/typings.mjs: never edited by hand.\n",
        "// Each entry point takes its number arguments in the thread's scratch slots (see\n",
        "// crate/node/src/scratch.rs) and the others through N-API: each function here stores\n",
        "// the numbers, in order, then calls it.\n",
        "import type * as Binding from '../index.js'\n",
        "import { native } from './native.js'\n\n",
        "// Taken off the exports, so that no other code reaches the slots through them.\n",
        "const scratch: unknown = native.scratch\n",
        "Reflect.deleteProperty(native, 'scratch')\n",
        "if (!(scratch instanceof ArrayBuffer)) throw new Error('mapped-region: the scratch slots were taken before the package loaded')\n",
        "const slots = new Float64Array(scratch)\n",
        "/** A number as it is; anything else as NaN (refused natively), never converted. */\n",
        "const n = (value: unknown): number => (typeof value === 'number' ? value : Number.NaN)\n",
        "const raw: typeof Binding = native\n",
    ));
    for e in ENTRIES {
        let name = e.name.trim_end_matches('\0');
        let _ = writeln!(out, "const {name}Raw = raw.{name}");
    }
    for e in ENTRIES {
        let name = e.name.trim_end_matches('\0');
        doc_comment(&mut out, e.docs, None);
        let params: Vec<String> = e.args.iter().map(|(n, t, _)| format!("{n}: {t}")).collect();
        // The return type is the entry point's, as index.d.ts declares it.
        let _ = writeln!(out, "export function {name}({}) {{", params.join(", "));
        for (i, (arg, _, _)) in e.args.iter().filter(|a| a.2).enumerate() {
            let _ = writeln!(out, "  slots[{i}] = n({arg})");
        }
        let passed: Vec<&str> = e.args.iter().filter(|a| !a.2).map(|a| a.0).collect();
        let _ = writeln!(out, "  return {name}Raw({})", passed.join(", "));
        out.push_str("}\n");
    }
    out
}

/// Adds the entry points to the module's exports.
///
/// # Safety
/// `env` and `exports` must be those of the module's initialisation.
pub unsafe fn register(env: sys::napi_env, exports: sys::napi_value) -> napi::Result<()> {
    // SAFETY: the env of this module's initialisation, on its thread.
    let scratch = unsafe { crate::scratch::attach(env) }?;
    // SAFETY: as above.
    let status =
        unsafe { sys::napi_set_named_property(env, exports, c"scratch".as_ptr(), scratch) };
    if status != sys::Status::napi_ok {
        return Err(napi::Error::from_reason("napi_set_named_property failed"));
    }
    for e in ENTRIES {
        let mut function = ptr::null_mut();
        // SAFETY: `e.name` is NUL-terminated; the function and the property
        // are created on this env during module initialisation.
        let status = unsafe {
            sys::napi_create_function(
                env,
                e.name.as_ptr().cast(),
                (e.name.len() - 1) as isize,
                Some(e.callback),
                ptr::null_mut(),
                &mut function,
            )
        };
        if status != sys::Status::napi_ok {
            return Err(napi::Error::from_reason("napi_create_function failed"));
        }
        // SAFETY: as above.
        let status =
            unsafe { sys::napi_set_named_property(env, exports, e.name.as_ptr().cast(), function) };
        if status != sys::Status::napi_ok {
            return Err(napi::Error::from_reason("napi_set_named_property failed"));
        }
    }
    Ok(())
}
