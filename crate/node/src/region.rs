//! `NativeRegion`: the binding class behind the facade's `MemoryMapping` and
//! `MemoryMappingArena`, including zero-copy views, asynchronous operations and
//! their lifetimes.
//!
//! Ownership: the mapping lives in a [`Keep`] shared through an `Arc` by the
//! region object, every view's finalizer and every pending asynchronous
//! operation, so memory never goes away under any of them. `close()`,
//! `removeMapping` and overlays detach the affected views before the kernel
//! changes the memory; changes over a range an asynchronous operation is using
//! are refused with `ERR_MMAP_BUSY`; `close()` with operations pending unmaps
//! when the last of them settles.

use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::ptr;
use std::sync::{Arc, Mutex, MutexGuard};

use mapped_region::{
    Backing, Change, Error, MappedRegion, MappingOptions, MemoryMapping, MemoryMappingArena,
};
use napi::bindgen_prelude::{AsyncTask, BigInt, Unknown};
use napi::{sys, Env, Task};
use napi_derive::napi;

use crate::args;
use crate::errors::{js, rejection, throw};

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

    /// Checks that `[offset, offset + len)` may be touched directly by a view.
    fn check_view(&self, offset: usize, len: usize) -> mapped_region::Result<()> {
        match self {
            Kind::Mapping(m) => m.check_direct(offset, len),
            Kind::Arena(a) => a.check_direct(offset, len),
        }
    }
}

/// A range an asynchronous operation is working on.
struct Pending {
    id: u64,
    start: usize,
    end: usize,
}

struct State {
    /// The mapping; dropping it unmaps. Taken by `close()`, or by the last
    /// pending operation to settle after a `close()`.
    kind: Option<Kind>,
    closed: bool,
    /// Closed while views were alive: a built-in may still hold a pointer
    /// into the memory, so it is released only by `region_reclaim` (on the
    /// next turn of the event loop).
    deferred: bool,
    pending: Vec<Pending>,
    next_id: u64,
}

impl State {
    /// The mapping, unless the region was closed.
    fn live(&self) -> mapped_region::Result<&Kind> {
        match (&self.kind, self.closed) {
            (Some(kind), false) => Ok(kind),
            _ => Err(Error::Closed),
        }
    }

    /// Releases the mapping once closed and no operation is pending.
    fn take_if_done(&mut self) -> Option<Kind> {
        if self.closed && !self.deferred && self.pending.is_empty() {
            self.kind.take()
        } else {
            None
        }
    }
}

/// Refuses a change to `[start, end)` while an asynchronous operation uses it.
fn check_not_busy(
    pending: &[Pending],
    start: usize,
    end: usize,
    operation: &'static str,
) -> mapped_region::Result<()> {
    if pending.iter().any(|p| p.start < end && p.end > start) {
        return Err(Error::Busy { operation });
    }
    Ok(())
}

/// The mapping, owned jointly by the region object, its live views and its
/// pending asynchronous operations.
struct Keep {
    state: Mutex<State>,
}

impl Keep {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic aborts the process (panic = "abort"), so poisoning cannot be
        // observed in release builds; recover the guard in debug builds.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A live view: its range and a weak reference to its `ArrayBuffer`.
struct ViewEntry {
    start: usize,
    end: usize,
    buffer: sys::napi_ref,
}

/// The views of a region, detached on every change under them.
struct Views {
    env: sys::napi_env,
    entries: Vec<ViewEntry>,
    /// Live views after the last pruning of collected ones.
    after_prune: usize,
}

impl Views {
    /// Detaches and forgets every view overlapping `[start, end)`. Returns the
    /// span of those still alive: code that took their pointers before (a
    /// built-in that called back into JavaScript) may still write anywhere in
    /// them, also outside `[start, end)`.
    fn detach(&mut self, start: usize, end: usize) -> Option<(usize, usize)> {
        if self.entries.is_empty() {
            return None;
        }
        let env = self.env;
        let mut alive: Option<(usize, usize)> = None;
        self.entries.retain(|v| {
            if v.end <= start || v.start >= end {
                return true;
            }
            // SAFETY: `v.buffer` is a live reference created in `view` on this env.
            if unsafe { detach_and_delete(env, v.buffer) } {
                alive =
                    Some(alive.map_or((v.start, v.end), |(s, e)| (s.min(v.start), e.max(v.end))));
            }
            false
        });
        alive
    }

    /// Forgets views whose buffers were collected, once the list has doubled.
    fn prune(&mut self) {
        if self.entries.len() < 2 * self.after_prune + 16 {
            return;
        }
        let env = self.env;
        self.entries.retain(|v| {
            // SAFETY: `v.buffer` is a live reference created on this env.
            let alive = unsafe { !reference_value(env, v.buffer).is_null() };
            if !alive {
                // SAFETY: the reference is ours and deleted exactly once.
                unsafe { sys::napi_delete_reference(env, v.buffer) };
            }
            alive
        });
        self.after_prune = self.entries.len();
    }
}

impl Drop for Views {
    fn drop(&mut self) {
        // The region object was collected: its views may still be alive and keep
        // the mapping (through their own `Arc<Keep>`); only the weak references
        // go away here.
        for v in self.entries.drain(..) {
            // SAFETY: each reference was created on `self.env` and is deleted once.
            unsafe { sys::napi_delete_reference(self.env, v.buffer) };
        }
    }
}

/// One region's native state. Reached from JS through a numeric handle (see
/// [`registry`]) rather than through napi-rs class methods: those cost about
/// 300 ns a call in borrow bookkeeping, more than `msync` of a clean page.
struct Inner {
    keep: Arc<Keep>,
    addr: usize,
    size: usize,
    /// Mirrors `State::closed` for the lock-free paths (`msync`, `madvise`).
    closed: Cell<bool>,
    /// Only touched on the JS thread.
    views: RefCell<Views>,
}

/// The lifetime anchor of a region: when the JS object is collected, its
/// `Drop` releases the handle (and with it the region, unless views or pending
/// operations still hold the mapping).
#[napi]
pub struct NativeRegion {
    handle: f64,
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
/// deletes the reference. Returns whether it was alive.
///
/// # Safety
/// `reference` must be a live reference to an `ArrayBuffer` created on `env`,
/// and must not be used afterwards.
unsafe fn detach_and_delete(env: sys::napi_env, reference: sys::napi_ref) -> bool {
    // SAFETY: guaranteed by the caller.
    unsafe {
        let value = reference_value(env, reference);
        if !value.is_null() {
            sys::napi_detach_arraybuffer(env, value);
        }
        sys::napi_delete_reference(env, reference);
        !value.is_null()
    }
}

/// Finalizer of a view: releases its share of the mapping.
unsafe extern "C" fn finalize_view(_env: sys::napi_env, _data: *mut c_void, hint: *mut c_void) {
    // SAFETY: `hint` is the `Box<Arc<Keep>>` leaked in `view`; the runtime calls
    // this finalizer exactly once per buffer.
    drop(unsafe { Box::from_raw(hint.cast::<Arc<Keep>>()) });
}

/// Handles: a thread-local table of regions. A handle is `generation << 32 |
/// index` as an `f64` (exact below 2^53), so a stale handle never reaches a
/// region that reused its slot; an unknown handle reads as a closed region.
mod registry {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::Inner;

    const MAX_GENERATION: u64 = 1 << 20;

    struct Slot {
        generation: u64,
        inner: Option<Rc<Inner>>,
    }

    #[derive(Default)]
    struct Table {
        slots: Vec<Slot>,
        free: Vec<usize>,
    }

    thread_local! {
        static TABLE: RefCell<Table> = RefCell::new(Table::default());
    }

    pub(super) fn insert(inner: Inner) -> f64 {
        TABLE.with_borrow_mut(|t| {
            let index = match t.free.pop() {
                Some(i) => i,
                None => {
                    t.slots.push(Slot {
                        generation: 0,
                        inner: None,
                    });
                    t.slots.len() - 1
                }
            };
            let slot = &mut t.slots[index];
            slot.generation = (slot.generation + 1) % MAX_GENERATION;
            slot.inner = Some(Rc::new(inner));
            ((slot.generation << 32) | index as u64) as f64
        })
    }

    fn decode(handle: f64) -> Option<(u64, usize)> {
        let h = crate::args::int_in(handle, 0.0, ((1u64 << 53) - 1) as f64)? as u64;
        Some((h >> 32, (h & 0xffff_ffff) as usize))
    }

    /// The region behind `handle`, cloned out so that no borrow of the table is
    /// held while it is used (a finalizer may remove entries meanwhile).
    pub(super) fn get(handle: f64) -> Option<Rc<Inner>> {
        let (generation, index) = decode(handle)?;
        TABLE.with_borrow(|t| {
            let slot = t.slots.get(index)?;
            (slot.generation == generation)
                .then(|| slot.inner.clone())
                .flatten()
        })
    }

    pub(super) fn remove(handle: f64) {
        let Some((generation, index)) = decode(handle) else {
            return;
        };
        let removed = TABLE.with_borrow_mut(|t| {
            let slot = t.slots.get_mut(index)?;
            if slot.generation != generation {
                return None;
            }
            let inner = slot.inner.take();
            t.free.push(index);
            inner
        });
        // Dropped outside the borrow: dropping views deletes napi references.
        drop(removed);
    }
}

impl NativeRegion {
    fn new(env: &Env, kind: Kind) -> NativeRegion {
        let region = kind.region();
        let (addr, size) = (region.as_ptr() as usize, region.size());
        let handle = registry::insert(Inner {
            keep: Arc::new(Keep {
                state: Mutex::new(State {
                    kind: Some(kind),
                    closed: false,
                    deferred: false,
                    pending: Vec::new(),
                    next_id: 0,
                }),
            }),
            addr,
            size,
            closed: Cell::new(false),
            views: RefCell::new(Views {
                env: env.raw(),
                entries: Vec::new(),
                after_prune: 0,
            }),
        });
        NativeRegion { handle }
    }
}

impl Drop for NativeRegion {
    fn drop(&mut self) {
        registry::remove(self.handle);
    }
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

    /// The handle the `region*` functions take. Valid while this object lives.
    #[napi(getter)]
    pub fn handle(&self) -> f64 {
        self.handle
    }
}

/// The region behind `handle`, or `ERR_MMAP_CLOSED`.
fn region(env: &Env, handle: f64) -> napi::Result<std::rc::Rc<Inner>> {
    registry::get(handle).ok_or_else(|| throw(env, &Error::Closed))
}

impl Inner {
    /// Runs a change to the arena's layout: `plan` asks the arena to validate
    /// it and say which range it replaces; a range an asynchronous operation is
    /// using refuses it (nothing applied, nothing changed); otherwise the views
    /// over the range are detached and the change applied, telling the arena
    /// whether one of them was alive (so that it holds the range). Returns
    /// whether the arena now holds ranges until `region_reclaim`.
    fn change(
        &self,
        env: &Env,
        operation: &'static str,
        plan: impl FnOnce(&MemoryMappingArena) -> mapped_region::Result<Change>,
    ) -> napi::Result<bool> {
        let mut state = self.keep.lock();
        let State {
            kind,
            closed,
            pending,
            ..
        } = &mut *state;
        let mut views = self.views.borrow_mut();
        let result = match (kind.as_mut(), *closed) {
            (Some(Kind::Arena(arena)), false) => plan(arena).and_then(|change| {
                let (start, end) = change.range();
                check_not_busy(pending, start, end, operation)?;
                let in_use = views.detach(start, end);
                if let Some((view_start, view_end)) = in_use {
                    arena.hold_in_use(view_start, view_end);
                }
                arena.apply(change, in_use.is_some())?;
                Ok(arena.has_held())
            }),
            (Some(Kind::Mapping(_)), false) => Err(Error::Unsupported { operation }),
            _ => Err(Error::Closed),
        };
        drop(views);
        drop(state);
        js(env, result)
    }

    /// The start address and page length of a range that starts a kernel call.
    ///
    /// Memory there stays mapped for as long as the caller runs on the JS
    /// thread without returning to JavaScript: every unmap (close, removal,
    /// overlay, the last view's finalizer) also happens on this thread.
    fn open_range(&self, offset: f64, size: f64) -> mapped_region::Result<(*mut u8, usize)> {
        let offset = args::index("offset", offset)?;
        let size = args::index("size", size)?;
        if self.closed.get() {
            return Err(Error::Closed);
        }
        let len = mapped_region::check_syscall_range(offset, size, self.size)?;
        Ok(((self.addr + offset) as *mut u8, len))
    }

    /// Registers an asynchronous operation over `[offset, offset + size)`.
    fn start_async(&self, offset: f64, size: f64) -> mapped_region::Result<AsyncRange> {
        let offset = args::index("offset", offset)?;
        let size = args::index("size", size)?;
        let mut state = self.keep.lock();
        let len = mapped_region::check_syscall_range(offset, size, state.live()?.region().size())?;
        let id = state.next_id;
        state.next_id += 1;
        state.pending.push(Pending {
            id,
            start: offset,
            end: offset + len,
        });
        Ok(AsyncRange {
            keep: Arc::clone(&self.keep),
            id,
            addr: self.addr + offset,
            len,
        })
    }
}

/// The start address.
#[napi]
pub fn region_address(env: Env, handle: f64) -> napi::Result<BigInt> {
    Ok(BigInt::from(region(&env, handle)?.addr as u64))
}

/// The size in bytes (page-rounded for arenas).
#[napi]
pub fn region_size(env: Env, handle: f64) -> napi::Result<f64> {
    Ok(region(&env, handle)?.size as f64)
}

/// `addFdMapping` with a number `fdOffset`.
pub fn region_add_fd_mapping(
    env: Env,
    handle: f64,
    offset: f64,
    size: f64,
    fd: f64,
    fd_offset: f64,
    protection: u32,
) -> napi::Result<bool> {
    let fd_offset = js(&env, args::index("fdOffset", fd_offset))? as u64;
    overlay_fd(&env, handle, offset, size, fd, fd_offset, protection)
}

/// `addFdMapping` with a BigInt `fdOffset` beyond 2^53.
#[napi]
pub fn region_add_fd_mapping_big(
    env: Env,
    handle: f64,
    offset: f64,
    size: f64,
    fd: f64,
    fd_offset: BigInt,
    protection: u32,
) -> napi::Result<bool> {
    let (sign, value, lossless) = fd_offset.get_u64();
    let fd_offset = js(&env, args::big_offset(sign, value, lossless))?;
    overlay_fd(&env, handle, offset, size, fd, fd_offset, protection)
}

fn overlay_fd(
    env: &Env,
    handle: f64,
    offset: f64,
    size: f64,
    fd: f64,
    fd_offset: u64,
    protection: u32,
) -> napi::Result<bool> {
    let offset = js(env, args::index("offset", offset))?;
    let size = js(env, args::index("size", size))?;
    let fd = js(env, args::fd(fd))?;
    let protection = js(env, args::protection(protection))?;
    region(env, handle)?.change(env, "addFdMapping", |arena| {
        arena.plan_fd_mapping(offset, size, fd, fd_offset, protection)
    })
}

/// `addAnonymous` (arenas only).
pub fn region_add_anonymous(
    env: Env,
    handle: f64,
    offset: f64,
    size: f64,
    protection: u32,
) -> napi::Result<bool> {
    let offset = js(&env, args::index("offset", offset))?;
    let size = js(&env, args::index("size", size))?;
    let protection = js(&env, args::protection(protection))?;
    region(&env, handle)?.change(&env, "addAnonymous", |arena| {
        arena.plan_anonymous(offset, size, protection)
    })
}

/// `removeMapping` (arenas only; `ERR_MMAP_UNSUPPORTED` for a mapping).
pub fn region_remove_mapping(env: Env, handle: f64, offset: f64, size: f64) -> napi::Result<bool> {
    let offset = js(&env, args::index("offset", offset))?;
    let size = js(&env, args::index("size", size))?;
    region(&env, handle)?.change(&env, "removeMapping", |arena| {
        arena.plan_removal(offset, size)
    })
}

/// `msync(MS_SYNC)`.
pub fn region_msync(env: Env, handle: f64, offset: f64, size: f64) -> napi::Result<()> {
    let inner = region(&env, handle)?;
    let result = inner.open_range(offset, size).and_then(|(addr, len)| {
        if len == 0 {
            return Ok(());
        }
        // SAFETY: `open_range` validated the range inside the open region, which
        // nothing can unmap while this call runs (see `Inner::open_range`).
        unsafe { mapped_region::msync_range(addr, len) }
    });
    js(&env, result)
}

/// `madvise(advice)` with the raw Linux advice number.
pub fn region_madvise(
    env: Env,
    handle: f64,
    offset: f64,
    size: f64,
    advice: i32,
) -> napi::Result<()> {
    let inner = region(&env, handle)?;
    let result = inner.open_range(offset, size).and_then(|(addr, len)| {
        // A zero length still goes through `madvise_range`, which refuses
        // dangerous advices first; the kernel treats len 0 as a no-op.
        // SAFETY: as in `region_msync`; `madvise_range` refuses advices that
        // would make the memory fault.
        unsafe { mapped_region::madvise_range(addr, len, advice) }
    });
    js(&env, result)
}

/// `msync(MS_SYNC)` on the libuv thread pool.
#[napi(ts_return_type = "Promise<void>")]
pub fn region_msync_async(
    env: Env,
    handle: f64,
    offset: f64,
    size: f64,
) -> napi::Result<AsyncTask<RangeTask>> {
    let range = js(&env, region(&env, handle)?.start_async(offset, size))?;
    Ok(AsyncTask::new(RangeTask {
        range,
        op: RangeOp::Msync,
        error: None,
    }))
}

/// `MADV_POPULATE_READ`/`_WRITE` on the libuv thread pool.
#[napi(ts_return_type = "Promise<void>")]
pub fn region_populate_async(
    env: Env,
    handle: f64,
    offset: f64,
    size: f64,
    write: bool,
) -> napi::Result<AsyncTask<RangeTask>> {
    let range = js(&env, region(&env, handle)?.start_async(offset, size))?;
    Ok(AsyncTask::new(RangeTask {
        range,
        op: RangeOp::Populate { write },
        error: None,
    }))
}

/// Number of asynchronous operations still pending (0 for an unknown handle).
#[napi]
pub fn region_pending(handle: f64) -> u32 {
    registry::get(handle).map_or(0, |inner| inner.keep.lock().pending.len() as u32)
}

/// Copies `target.length` bytes from `offset` into `target`.
pub fn region_read_into(env: Env, handle: f64, offset: f64, target: &mut [u8]) -> napi::Result<()> {
    let offset = js(&env, args::index("offset", offset))?;
    let inner = region(&env, handle)?;
    let state = inner.keep.lock();
    let result = state.live().and_then(|kind| match kind {
        Kind::Mapping(m) => m.read_into(offset, target),
        Kind::Arena(a) => a.read_into(offset, target),
    });
    js(&env, result)
}

/// Copies `source` to `offset`.
pub fn region_write(env: Env, handle: f64, offset: f64, source: &[u8]) -> napi::Result<()> {
    let offset = js(&env, args::index("offset", offset))?;
    let inner = region(&env, handle)?;
    let state = inner.keep.lock();
    let result = state.live().and_then(|kind| match kind {
        Kind::Mapping(m) => m.write_from(offset, source),
        Kind::Arena(a) => a.write_from(offset, source),
    });
    js(&env, result)
}

/// A zero-copy `Buffer` over `[offset, offset + length)`, which must be mapped
/// `READ | WRITE`. Detached when the memory under it changes.
#[napi(ts_return_type = "Buffer")]
pub fn region_view(env: &Env, handle: f64, offset: f64, length: f64) -> napi::Result<Unknown<'_>> {
    let offset = js(env, args::index("offset", offset))?;
    let length = js(env, args::index("length", length))?;
    let inner = region(env, handle)?;
    {
        let state = inner.keep.lock();
        js(
            env,
            state
                .live()
                .and_then(|kind| kind.check_view(offset, length)),
        )?;
    }
    let mut views = inner.views.borrow_mut();
    views.prune();
    let raw = env.raw();
    let hint = Box::into_raw(Box::new(Arc::clone(&inner.keep)));
    let mut buffer = ptr::null_mut();
    // The memory stays mapped while the buffer lives: `hint` keeps the mapping
    // alive until `finalize_view`, and every change to the range detaches it first.
    // SAFETY: the range is inside the region and mapped read-write (checked above).
    let status = unsafe {
        sys::napi_create_external_buffer(
            raw,
            length,
            (inner.addr + offset) as *mut c_void,
            Some(finalize_view),
            hint.cast(),
            &mut buffer,
        )
    };
    if status != sys::Status::napi_ok {
        if status == sys::Status::napi_no_external_buffers_allowed {
            // SAFETY: the runtime refused before taking ownership of `hint`, so
            // the finalizer will never run for it.
            drop(unsafe { Box::from_raw(hint) });
            return Err(throw_code(
                env,
                "ERR_MMAP_NO_EXTERNAL",
                "this runtime forbids external buffers; view() never hands out a copy",
            ));
        }
        // Otherwise Node already ran the finalizer (and thus freed `hint`); a
        // failure here means the length exceeds buffer.constants.MAX_LENGTH.
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
    // SAFETY: `buffer` is the Uint8Array just created; the weak reference is taken
    // on its ArrayBuffer so that every typed array over it is covered.
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
    views.entries.push(ViewEntry {
        start: offset,
        end: offset + length,
        buffer: reference,
    });
    // SAFETY: `buffer` is a live value of this env's current scope.
    Ok(unsafe { Unknown::from_raw_unchecked(raw, buffer) })
}

/// The layout of an arena.
#[napi]
pub fn region_mappings(env: Env, handle: f64) -> napi::Result<Vec<NativeMappingInfo>> {
    let inner = region(&env, handle)?;
    let state = inner.keep.lock();
    let arena = match state.live() {
        Err(e) => return Err(throw(&env, &e)),
        Ok(Kind::Mapping(_)) => {
            return Err(throw(
                &env,
                &Error::Unsupported {
                    operation: "mappings",
                },
            ))
        }
        Ok(Kind::Arena(a)) => a,
    };
    Ok(arena
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
        .collect())
}

/// Detaches every view, then unmaps — at once, or when the last pending
/// asynchronous operation settles. If a view was still alive, a built-in may
/// hold its pointer (and be calling back into the JavaScript that closes the
/// region): the memory is then released by [`region_reclaim`], which the
/// facade calls on the next turn of the event loop; returns `true` then.
/// Idempotent; unknown handles are ignored.
#[napi]
pub fn region_close(handle: f64) -> bool {
    let Some(inner) = registry::get(handle) else {
        return false;
    };
    let alive = inner.views.borrow_mut().detach(0, usize::MAX).is_some();
    inner.closed.set(true);
    let (released, defer) = {
        let mut state = inner.keep.lock();
        let first = !state.closed;
        // An arena that holds ranges has pointers possibly in use there too.
        let held = matches!(&state.kind, Some(Kind::Arena(a)) if a.has_held());
        let defer = first && (alive || held);
        state.closed = true;
        state.deferred |= defer;
        (state.take_if_done(), defer)
    };
    drop(released);
    defer
}

/// Gives held ranges of an arena what their changes asked for, and releases a
/// region whose `close()` was deferred. Called by the facade on the turn of
/// the event loop after such a change (no synchronous frame can hold a view's
/// pointer then). Never throws: it runs from `setImmediate`, and whatever it
/// cannot restore is already consistent (see `MemoryMappingArena::reclaim`).
#[napi]
pub fn region_reclaim(handle: f64) {
    let Some(inner) = registry::get(handle) else {
        return;
    };
    let released = {
        let mut state = inner.keep.lock();
        if let Some(Kind::Arena(arena)) = state.kind.as_mut() {
            let _ = arena.reclaim();
        }
        state.deferred = false;
        state.take_if_done()
    };
    drop(released);
}

/// Kernel mappings an arena occupies (overlays and reserved holes); 1 for a mapping.
#[napi]
pub fn region_kernel_mappings(env: Env, handle: f64) -> napi::Result<u32> {
    let inner = region(&env, handle)?;
    let state = inner.keep.lock();
    let count = state.live().map(|kind| match kind {
        Kind::Mapping(_) => 1,
        Kind::Arena(a) => a.kernel_mapping_count() as u32,
    });
    js(&env, count)
}

pub struct AsyncRange {
    keep: Arc<Keep>,
    id: u64,
    addr: usize,
    len: usize,
}

impl Drop for AsyncRange {
    fn drop(&mut self) {
        let released = {
            let mut state = self.keep.lock();
            state.pending.retain(|p| p.id != self.id);
            state.take_if_done()
        };
        // Unmaps outside the lock if the region was closed meanwhile.
        drop(released);
    }
}

pub enum RangeOp {
    Msync,
    Populate { write: bool },
}

/// `msyncAsync`/`populateAsync` on the libuv thread pool.
pub struct RangeTask {
    range: AsyncRange,
    op: RangeOp,
    error: Option<Error>,
}

impl Task for RangeTask {
    type Output = ();
    type JsValue = ();

    fn compute(&mut self) -> napi::Result<()> {
        let addr = self.range.addr as *mut u8;
        let len = self.range.len;
        if len == 0 {
            return Ok(());
        }
        // SAFETY: the range was validated when the task started and is registered
        // as pending: overlays and removals over it are refused, and `close()`
        // leaves it mapped until this task's `AsyncRange` is dropped.
        let result = unsafe {
            match self.op {
                RangeOp::Msync => mapped_region::msync_range(addr, len),
                RangeOp::Populate { write } => mapped_region::populate_range(addr, len, write),
            }
        };
        result.map_err(|e| {
            self.error = Some(e);
            napi::Error::from_status(napi::Status::GenericFailure)
        })
    }

    fn resolve(&mut self, _env: Env, _output: ()) -> napi::Result<()> {
        Ok(())
    }

    fn reject(&mut self, env: Env, err: napi::Error) -> napi::Result<()> {
        match self.error.take() {
            Some(e) => Err(rejection(&env, &e)),
            None => Err(err),
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
