//! `NativeRegion`: the binding class behind the facade's `MemoryMapping` and
//! `MemoryMappingArena`, including zero-copy views and their lifetime.
//!
//! Ownership: the mapping lives in a [`Keep`] shared through an `Arc` by the
//! region object and by every view's finalizer, so a view never outlives the
//! memory under it even if the region object is collected first. `close()`,
//! `removeMapping` and overlays detach the affected views before the kernel
//! changes the memory.

use std::ffi::c_void;
use std::ptr;
use std::sync::{Arc, Mutex, MutexGuard};

use mapped_region::{
    Backing, Error, MappedRegion, MappingOptions, MemoryMapping, MemoryMappingArena, Protection,
};
use napi::bindgen_prelude::{BigInt, Uint8ArraySlice, Unknown};
use napi::{sys, Env};
use napi_derive::napi;

use crate::args;
use crate::errors::{js, throw};

/// The two kinds of region.
enum Kind {
    Mapping(MemoryMapping),
    Arena(MemoryMappingArena),
}

impl Kind {
    fn region(&self) -> &dyn MappedRegion {
        match self {
            Kind::Mapping(m) => m,
            Kind::Arena(a) => a,
        }
    }

    /// Checks that `[offset, offset + len)` is mapped with `needed`.
    fn check_access(
        &self,
        offset: usize,
        len: usize,
        needed: Protection,
    ) -> mapped_region::Result<()> {
        match self {
            Kind::Mapping(m) => {
                mapped_region::check_bounds(offset, len, m.size())?;
                m.check_access(offset, len, needed)
            }
            Kind::Arena(a) => a.check_access(offset, len, needed).map(|_| ()),
        }
    }
}

/// The mapping, owned jointly by the region object and its live views. `None`
/// once closed: dropping the `Kind` unmaps it.
struct Keep {
    kind: Mutex<Option<Kind>>,
}

/// A live view: its range and a weak reference to its `ArrayBuffer`.
struct ViewEntry {
    start: usize,
    end: usize,
    buffer: sys::napi_ref,
}

#[napi]
pub struct NativeRegion {
    keep: Arc<Keep>,
    addr: usize,
    size: usize,
    env: sys::napi_env,
    views: Vec<ViewEntry>,
    /// Live views after the last pruning of collected ones.
    views_after_prune: usize,
}

/// What `mappings()` returns for each entry.
#[napi(object)]
pub struct NativeMappingInfo {
    pub offset: f64,
    pub size: f64,
    pub kind: String,
    pub fd: Option<i32>,
    pub fd_offset: Option<f64>,
    pub protection: u32,
}

impl NativeRegion {
    fn new(env: &Env, kind: Kind) -> NativeRegion {
        let region = kind.region();
        let (addr, size) = (region.as_ptr() as usize, region.size());
        NativeRegion {
            keep: Arc::new(Keep {
                kind: Mutex::new(Some(kind)),
            }),
            addr,
            size,
            env: env.raw(),
            views: Vec::new(),
            views_after_prune: 0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Kind>> {
        self.keep.kind.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Detaches and forgets every view overlapping `[start, end)`.
    fn detach_views(&mut self, start: usize, end: usize) {
        let env = self.env;
        self.views.retain(|v| {
            if v.end <= start || v.start >= end {
                return true;
            }
            // SAFETY: `v.buffer` is a live reference created in `view` on this env.
            unsafe { detach_and_delete(env, v.buffer) };
            false
        });
    }

    /// Forgets views whose buffers were collected, when the list has doubled.
    fn prune_views(&mut self) {
        if self.views.len() < 2 * self.views_after_prune + 16 {
            return;
        }
        let env = self.env;
        self.views.retain(|v| {
            // SAFETY: `v.buffer` is a live reference created on this env.
            let alive = unsafe { !reference_value(env, v.buffer).is_null() };
            if !alive {
                // SAFETY: the reference is ours and deleted exactly once.
                unsafe { sys::napi_delete_reference(env, v.buffer) };
            }
            alive
        });
        self.views_after_prune = self.views.len();
    }
}

/// The value behind a weak reference, or null once collected.
///
/// # Safety
/// `reference` must be a live reference created on `env`.
unsafe fn reference_value(env: sys::napi_env, reference: sys::napi_ref) -> sys::napi_value {
    let mut value = ptr::null_mut();
    // SAFETY: guaranteed by the caller.
    unsafe { sys::napi_get_reference_value(env, reference, &mut value) };
    value
}

/// Detaches the `ArrayBuffer` behind `reference` if it is still alive, then
/// deletes the reference.
///
/// # Safety
/// `reference` must be a live reference to an `ArrayBuffer` created on `env`,
/// and must not be used afterwards.
unsafe fn detach_and_delete(env: sys::napi_env, reference: sys::napi_ref) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        let value = reference_value(env, reference);
        if !value.is_null() {
            sys::napi_detach_arraybuffer(env, value);
        }
        sys::napi_delete_reference(env, reference);
    }
}

/// Finalizer of a view: releases its share of the mapping.
unsafe extern "C" fn finalize_view(_env: sys::napi_env, _data: *mut c_void, hint: *mut c_void) {
    // SAFETY: `hint` is the `Box<Arc<Keep>>` leaked in `view`; the runtime calls
    // this finalizer exactly once per buffer.
    drop(unsafe { Box::from_raw(hint.cast::<Arc<Keep>>()) });
}

fn closed<T>(env: &Env) -> napi::Result<T> {
    Err(throw(env, &Error::Closed))
}

#[napi]
impl NativeRegion {
    /// Anonymous memory (`MemoryMapping.anonymous`).
    #[napi(factory)]
    pub fn anonymous(
        env: Env,
        size: f64,
        protection: u32,
        populate: bool,
        shared: bool,
    ) -> napi::Result<Self> {
        let size = js(&env, args::index("size", size))?;
        let protection = js(&env, args::protection(protection))?;
        let options = MappingOptions {
            protection,
            populate,
            shared,
            ..MappingOptions::anonymous()
        };
        let mapping = js(&env, MemoryMapping::anonymous(size, options))?;
        Ok(NativeRegion::new(&env, Kind::Mapping(mapping)))
    }

    /// A mapping of an fd (`MemoryMapping.fromFd`).
    #[napi(factory)]
    #[allow(clippy::too_many_arguments)]
    pub fn from_fd(
        env: Env,
        fd: f64,
        size: f64,
        offset: f64,
        protection: u32,
        populate: bool,
        shared: bool,
        check_eof: bool,
    ) -> napi::Result<Self> {
        let fd = js(&env, args::fd(fd))?;
        let size = js(&env, args::index("size", size))?;
        let offset = js(&env, args::index("offset", offset))? as u64;
        let protection = js(&env, args::protection(protection))?;
        let options = MappingOptions {
            protection,
            populate,
            shared,
            offset,
            check_eof,
        };
        let mapping = js(&env, MemoryMapping::from_fd(&RawFdRef(fd), size, options))?;
        Ok(NativeRegion::new(&env, Kind::Mapping(mapping)))
    }

    /// A `PROT_NONE` reservation (`MemoryMappingArena.reserve`).
    #[napi(factory)]
    pub fn reserve(env: Env, size: f64) -> napi::Result<Self> {
        let size = js(&env, args::index("size", size))?;
        let arena = js(&env, MemoryMappingArena::new(size))?;
        Ok(NativeRegion::new(&env, Kind::Arena(arena)))
    }

    /// The start address.
    #[napi(getter)]
    pub fn address(&self) -> BigInt {
        BigInt::from(self.addr as u64)
    }

    /// The size in bytes (page-rounded for arenas).
    #[napi(getter)]
    pub fn size(&self) -> f64 {
        self.size as f64
    }

    /// Whether the region is an arena.
    #[napi(getter)]
    pub fn is_arena(&self) -> bool {
        matches!(*self.lock(), Some(Kind::Arena(_)))
    }

    /// `addFdMapping` with a number `fdOffset`.
    #[napi]
    pub fn add_fd_mapping(
        &mut self,
        env: Env,
        offset: f64,
        size: f64,
        fd: f64,
        fd_offset: f64,
        protection: u32,
    ) -> napi::Result<()> {
        let fd_offset = js(&env, args::index("fdOffset", fd_offset))? as u64;
        self.overlay_fd(&env, offset, size, fd, fd_offset, protection)
    }

    /// `addFdMapping` with a BigInt `fdOffset` beyond 2^53.
    #[napi]
    pub fn add_fd_mapping_big(
        &mut self,
        env: Env,
        offset: f64,
        size: f64,
        fd: f64,
        fd_offset: BigInt,
        protection: u32,
    ) -> napi::Result<()> {
        let (sign, value, lossless) = fd_offset.get_u64();
        let fd_offset = js(&env, args::big_offset(sign, value, lossless))?;
        self.overlay_fd(&env, offset, size, fd, fd_offset, protection)
    }

    /// `addAnonymous` (arenas only).
    #[napi]
    pub fn add_anonymous(
        &mut self,
        env: Env,
        offset: f64,
        size: f64,
        protection: u32,
    ) -> napi::Result<()> {
        let offset = js(&env, args::index("offset", offset))?;
        let size = js(&env, args::index("size", size))?;
        let protection = js(&env, args::protection(protection))?;
        let keep = Arc::clone(&self.keep);
        let mut guard = keep.kind.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_mut() {
            None => closed(&env),
            Some(Kind::Mapping(_)) => Err(throw(
                &env,
                &Error::Unsupported {
                    operation: "addAnonymous",
                },
            )),
            Some(Kind::Arena(a)) => js(
                &env,
                a.add_anonymous_hooked(offset, size, protection, &mut |s, e| {
                    self.detach_views(s, e)
                }),
            ),
        }
    }

    /// `removeMapping` (arenas only; `ERR_MMAP_UNSUPPORTED` for a mapping).
    #[napi]
    pub fn remove_mapping(&mut self, env: Env, offset: f64, size: f64) -> napi::Result<()> {
        let offset = js(&env, args::index("offset", offset))?;
        let size = js(&env, args::index("size", size))?;
        let keep = Arc::clone(&self.keep);
        let mut guard = keep.kind.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_mut() {
            None => closed(&env),
            Some(Kind::Mapping(m)) => js(&env, m.remove_mapping(offset, size)),
            Some(Kind::Arena(a)) => js(
                &env,
                a.remove_mapping_hooked(offset, size, &mut |s, e| self.detach_views(s, e)),
            ),
        }
    }

    /// `msync(MS_SYNC)`.
    #[napi]
    pub fn msync(&self, env: Env, offset: f64, size: f64) -> napi::Result<()> {
        let offset = js(&env, args::index("offset", offset))?;
        let size = js(&env, args::index("size", size))?;
        match self.lock().as_ref() {
            None => closed(&env),
            Some(kind) => js(&env, kind.region().msync(offset, size)),
        }
    }

    /// `madvise(advice)` with the raw Linux advice number.
    #[napi]
    pub fn madvise(&self, env: Env, offset: f64, size: f64, advice: i32) -> napi::Result<()> {
        let offset = js(&env, args::index("offset", offset))?;
        let size = js(&env, args::index("size", size))?;
        match self.lock().as_ref() {
            None => closed(&env),
            Some(kind) => js(&env, kind.region().madvise(offset, size, advice)),
        }
    }

    /// Copies `target.length` bytes from `offset` into `target`.
    #[napi]
    pub fn read_into(
        &self,
        env: Env,
        offset: f64,
        mut target: Uint8ArraySlice,
    ) -> napi::Result<()> {
        let offset = js(&env, args::index("offset", offset))?;
        // SAFETY: the facade passes a fresh Buffer that no other Rust reference
        // aliases; if a caller passes a view of this region instead, the core
        // copies with memmove, which tolerates the overlap.
        let target = unsafe { target.as_mut() };
        match self.lock().as_ref() {
            None => closed(&env),
            Some(Kind::Mapping(m)) => js(&env, m.read_into(offset, target)),
            Some(Kind::Arena(a)) => js(&env, a.read_into(offset, target)),
        }
    }

    /// Copies `source` to `offset`.
    #[napi]
    pub fn write(&self, env: Env, offset: f64, source: Uint8ArraySlice) -> napi::Result<()> {
        let offset = js(&env, args::index("offset", offset))?;
        match self.lock().as_ref() {
            None => closed(&env),
            Some(Kind::Mapping(m)) => js(&env, m.write_from(offset, &source)),
            Some(Kind::Arena(a)) => js(&env, a.write_from(offset, &source)),
        }
    }

    /// A zero-copy `Buffer` over `[offset, offset + length)`, which must be
    /// mapped `READ | WRITE`. Detached when the memory under it changes.
    #[napi(ts_return_type = "Buffer")]
    pub fn view<'env>(
        &mut self,
        env: &'env Env,
        offset: f64,
        length: f64,
    ) -> napi::Result<Unknown<'env>> {
        let offset = js(env, args::index("offset", offset))?;
        let length = js(env, args::index("length", length))?;
        match self.lock().as_ref() {
            None => return closed(env),
            Some(kind) => js(
                env,
                kind.check_access(offset, length, Protection::READ_WRITE),
            )?,
        }
        self.prune_views();
        let raw = env.raw();
        let hint = Box::into_raw(Box::new(Arc::clone(&self.keep)));
        let mut buffer = ptr::null_mut();
        // SAFETY: `[addr + offset, addr + offset + length)` is inside the region
        // and mapped read-write (checked above). The memory stays mapped while the
        // buffer lives: `hint` keeps the mapping alive until `finalize_view`, and
        // every change to the range detaches the buffer first. A zero length
        // gets a dangling but non-null pointer, which V8 never dereferences.
        let status = unsafe {
            sys::napi_create_external_buffer(
                raw,
                length,
                (self.addr + offset) as *mut c_void,
                Some(finalize_view),
                hint.cast(),
                &mut buffer,
            )
        };
        if status != sys::Status::napi_ok {
            if status == sys::Status::napi_no_external_buffers_allowed {
                // SAFETY: the runtime refused before taking ownership of `hint`,
                // so the finalizer will never run for it.
                drop(unsafe { Box::from_raw(hint) });
                return Err(throw_code(
                    env,
                    "ERR_MMAP_NO_EXTERNAL",
                    "this runtime forbids external buffers; view() never hands out a copy",
                ));
            }
            // Otherwise Node already ran the finalizer (and thus freed `hint`);
            // a failure here means the length exceeds buffer.constants.MAX_LENGTH.
            let mut pending = ptr::null_mut();
            // SAFETY: clearing the exception Node left pending on this env.
            unsafe { sys::napi_get_and_clear_last_exception(raw, &mut pending) };
            return Err(throw(
                env,
                &Error::OutOfRange {
                    what: "length",
                    reason: format!("{length} is longer than a Buffer can be"),
                },
            ));
        }
        let mut array_buffer = ptr::null_mut();
        let mut reference = ptr::null_mut();
        // SAFETY: `buffer` is the Uint8Array just created; the weak reference is
        // taken on its ArrayBuffer so that every typed array over it is covered.
        unsafe {
            sys::napi_get_typedarray_info(
                raw,
                buffer,
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
                &mut array_buffer,
                ptr::null_mut(),
            );
            sys::napi_create_reference(raw, array_buffer, 0, &mut reference);
        }
        self.views.push(ViewEntry {
            start: offset,
            end: offset + length,
            buffer: reference,
        });
        // SAFETY: `buffer` is a live value of this env's current scope.
        Ok(unsafe { Unknown::from_raw_unchecked(raw, buffer) })
    }

    /// Number of views that have not been detached or collected (for tests).
    #[napi]
    pub fn live_views(&self) -> u32 {
        self.views
            .iter()
            // SAFETY: each reference is live and belongs to this env.
            .filter(|v| unsafe { !reference_value(self.env, v.buffer).is_null() })
            .count() as u32
    }

    /// The layout (arenas), or the one mapping.
    #[napi]
    pub fn mappings(&self, env: Env) -> napi::Result<Vec<NativeMappingInfo>> {
        match self.lock().as_ref() {
            None => closed(&env),
            Some(Kind::Mapping(_)) => Err(throw(
                &env,
                &Error::Unsupported {
                    operation: "mappings",
                },
            )),
            Some(Kind::Arena(a)) => Ok(a
                .mappings()
                .map(|m| {
                    let (kind, fd, fd_offset) = match m.backing {
                        Backing::Anonymous => ("anonymous", None, None),
                        Backing::Fd { fd, fd_offset } => ("fd", Some(fd), Some(fd_offset as f64)),
                    };
                    NativeMappingInfo {
                        offset: m.offset as f64,
                        size: m.size as f64,
                        kind: kind.to_string(),
                        fd,
                        fd_offset,
                        protection: m.protection.bits(),
                    }
                })
                .collect()),
        }
    }

    /// Detaches every view, then unmaps. Idempotent.
    #[napi]
    pub fn close(&mut self) {
        self.detach_views(0, usize::MAX);
        let taken = self.lock().take();
        drop(taken);
    }

    /// Whether `close()` was called.
    #[napi(getter)]
    pub fn closed(&self) -> bool {
        self.lock().is_none()
    }
}

impl NativeRegion {
    fn overlay_fd(
        &mut self,
        env: &Env,
        offset: f64,
        size: f64,
        fd: f64,
        fd_offset: u64,
        protection: u32,
    ) -> napi::Result<()> {
        let offset = js(env, args::index("offset", offset))?;
        let size = js(env, args::index("size", size))?;
        let fd = js(env, args::fd(fd))?;
        let protection = js(env, args::protection(protection))?;
        let keep = Arc::clone(&self.keep);
        let mut guard = keep.kind.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_mut() {
            None => closed(env),
            Some(Kind::Mapping(m)) => js(
                env,
                m.add_fd_mapping(offset, size, &RawFdRef(fd), fd_offset, protection),
            ),
            Some(Kind::Arena(a)) => js(
                env,
                a.add_fd_mapping_hooked(offset, size, fd, fd_offset, protection, &mut |s, e| {
                    self.detach_views(s, e)
                }),
            ),
        }
    }
}

impl Drop for NativeRegion {
    fn drop(&mut self) {
        // The region object was collected: its views may still be alive and keep
        // the mapping (through their own `Arc<Keep>`); only the weak references
        // go away here.
        for v in self.views.drain(..) {
            // SAFETY: each reference was created on `self.env` and is deleted once.
            unsafe { sys::napi_delete_reference(self.env, v.buffer) };
        }
    }
}

/// An fd number the core can borrow.
pub struct RawFdRef(pub i32);

impl std::os::fd::AsRawFd for RawFdRef {
    fn as_raw_fd(&self) -> i32 {
        self.0
    }
}

/// Throws a plain `Error` with `code`.
fn throw_code(env: &Env, code: &str, message: &str) -> napi::Error {
    let _ = env.throw_error(message, Some(code));
    napi::Error::from_status(napi::Status::PendingException)
}
