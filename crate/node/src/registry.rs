//! This thread's objects that own a region: a numeric handle per object
//! (what the facade passes), the object's [`Region`] (its [`Keep`], where
//! the region lies, its owner id, its views), closing and the turn after it,
//! and what the thread's end leaves (the env's cleanup hook). An unknown or
//! stale handle reads as a closed region.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mapped_region::{AnyRegion, Error, Span};

use crate::errors::{Failure, Result};
use crate::state::Keep;
use crate::views::{self, Views};

/// One object's native state, reached from JavaScript through its handle.
/// Operations lock [`Region::keep`] and take `State::live`.
pub struct Region {
    /// The region and its state.
    pub keep: Arc<Keep>,
    /// Where it lies (start and size), read once when the object was made.
    pub span: Span,
    /// Which owning object this is (unique in the process): recorded views
    /// are told apart by it.
    pub owner: u64,
    /// Whether this object was closed (others may still own the region).
    closed: Cell<bool>,
    /// Only touched on the JS thread.
    pub views: RefCell<Views>,
}

impl Region {
    /// A zero-copy view of `[offset, offset + length)` (see `Views::create`).
    ///
    /// # Safety
    /// `env` must be the live env of the current call, on this thread.
    pub unsafe fn view(
        &self,
        env: napi::sys::napi_env,
        offset: f64,
        length: f64,
    ) -> Result<napi::sys::napi_value> {
        let mut views = self.views.borrow_mut();
        // SAFETY: guaranteed by the caller.
        unsafe {
            views.create(
                env,
                &self.keep,
                self.span.addr(),
                self.owner,
                offset,
                length,
            )
        }
    }

    /// A typed-access window around `offset` (see `views::create_window`).
    ///
    /// # Safety
    /// `env` must be the live env of the current call, on this thread.
    pub unsafe fn window(
        &self,
        env: napi::sys::napi_env,
        offset: f64,
    ) -> Result<napi::sys::napi_value> {
        // SAFETY: guaranteed by the caller.
        unsafe { views::create_window(env, &self.keep, self.span.addr(), &self.views, offset) }
    }
}

impl Drop for Region {
    /// The owning object was collected without `close()` (or its thread
    /// ended): it owns the region no more. Its views, still alive, keep the
    /// memory (and their records).
    fn drop(&mut self) {
        if !self.closed.get() {
            self.keep.lock().owner_gone();
        }
        // Its views may outlive it in this thread: the thread's teardown
        // settles what they leave (see `env_gone`).
        teardown::orphaned(&self.keep, self.owner);
    }
}

/// A fresh owner id.
fn next_owner() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Handles: a thread-local table of regions. A handle is `generation << 32 |
/// index` as an `f64` (exact below 2^53), so a stale handle never reaches a
/// region that reused its slot; an unknown handle reads as a closed region.
mod table {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::Region;

    const MAX_GENERATION: u64 = 1 << 20;

    struct Slot {
        generation: u64,
        region: Option<Rc<Region>>,
    }

    #[derive(Default)]
    struct Table {
        slots: Vec<Slot>,
        free: Vec<usize>,
    }

    thread_local! {
        static TABLE: RefCell<Table> = RefCell::new(Table::default());
    }

    pub(super) fn insert(region: Region) -> f64 {
        TABLE.with_borrow_mut(|t| {
            let index = match t.free.pop() {
                Some(i) => i,
                None => {
                    t.slots.push(Slot {
                        generation: 0,
                        region: None,
                    });
                    t.slots.len() - 1
                }
            };
            let slot = &mut t.slots[index];
            slot.generation = (slot.generation + 1) % MAX_GENERATION;
            slot.region = Some(Rc::new(region));
            ((slot.generation << 32) | index as u64) as f64
        })
    }

    fn decode(handle: f64) -> Option<(u64, usize)> {
        let h = crate::convert::int_in(handle, 0.0, ((1u64 << 53) - 1) as f64)? as u64;
        Some((h >> 32, (h & 0xffff_ffff) as usize))
    }

    /// The region behind `handle`, cloned out so that no borrow of the table
    /// is held while it is used (a finalizer may remove entries meanwhile).
    pub(super) fn get(handle: f64) -> Option<Rc<Region>> {
        let (generation, index) = decode(handle)?;
        TABLE.with_borrow(|t| {
            let slot = t.slots.get(index)?;
            (slot.generation == generation)
                .then(|| slot.region.clone())
                .flatten()
        })
    }

    /// Runs `f` on the region behind `handle` inside the table's borrow: no
    /// clone, no count. `f` must not reach the table (it makes no N-API call
    /// that could run a finalizer).
    #[inline]
    pub(super) fn with<T>(handle: f64, f: impl FnOnce(Option<&Region>) -> T) -> T {
        let Some((generation, index)) = decode(handle) else {
            return f(None);
        };
        TABLE.with_borrow(|t| {
            let region = t
                .slots
                .get(index)
                .filter(|slot| slot.generation == generation)
                .and_then(|slot| slot.region.as_deref());
            f(region)
        })
    }

    /// Takes every region out of the table (the env is torn down).
    pub(super) fn drain() -> Vec<Rc<Region>> {
        TABLE.with_borrow_mut(|t| {
            t.free.clear();
            t.slots.drain(..).filter_map(|slot| slot.region).collect()
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
            let region = slot.region.take();
            t.free.push(index);
            region
        });
        // Dropped outside the borrow: dropping views deletes napi references.
        drop(removed);
    }
}

/// The region behind `handle`, or `ERR_MMAP_CLOSED` (also once this object
/// was closed, whoever else owns the region).
pub fn get(handle: f64) -> Result<Rc<Region>> {
    table::get(handle)
        .filter(|r| !r.closed.get())
        .ok_or(Failure::Core(Error::Closed))
}

/// Runs `f` with the span of the region behind `handle`, without its lock,
/// for a kernel call that needs the memory mapped and nothing else (`msync`,
/// `madvise`, `mlock`): `ERR_MMAP_CLOSED` once this object was closed.
///
/// Why no lock is needed: an object that is open counts as one of the
/// region's owners ([`State::owners`]), and the region is unmapped only once
/// every owner has closed or been collected — this object only by its own
/// thread, which is running this call. So while `f` runs the region stays
/// mapped, whatever other threads do; what they change inside it (overlays,
/// removals) is the kernel's to order, and stays inside the reservation.
/// `f` must not reach the handle table.
#[inline]
pub fn with_open<T>(handle: f64, f: impl FnOnce(Span) -> Result<T>) -> Result<T> {
    table::with(handle, |region| match region {
        Some(r) if !r.closed.get() => f(r.span),
        _ => Err(Failure::Core(Error::Closed)),
    })
}

/// The size of the region behind `handle`, also once this object is closed.
pub fn size(handle: f64) -> Result<f64> {
    table::get(handle)
        .map(|r| r.span.size() as f64)
        .ok_or(Failure::Core(Error::Closed))
}

/// Registers a new region; returns its handle. The caller ties the handle to
/// a JavaScript object whose finalizer calls [`release`].
pub fn insert(env: napi::sys::napi_env, region: AnyRegion) -> f64 {
    let span = Span::of(region.region());
    register(env, Keep::new(region), span)
}

/// Registers a new object of this thread over `keep` (which counts it as an
/// owner already), lying at `span`; returns its handle.
pub fn register(env: napi::sys::napi_env, keep: Arc<Keep>, span: Span) -> f64 {
    teardown::watch(env);
    table::insert(Region {
        keep,
        span,
        owner: next_owner(),
        closed: Cell::new(false),
        views: RefCell::new(Views::new(env)),
    })
}

/// The owning JavaScript object was collected: forget the handle (views and
/// pending operations may still keep the memory).
pub fn release(handle: f64) {
    table::remove(handle);
}

/// Whether the object behind `handle` is closed (an unknown handle is).
pub fn closed(handle: f64) -> bool {
    table::get(handle).is_none_or(|r| r.closed.get() || r.keep.lock().live().is_err())
}

/// Number of asynchronous operations still pending (0 for an unknown handle).
pub fn pending(handle: f64) -> f64 {
    table::get(handle).map_or(0.0, |r| r.keep.lock().pending() as f64)
}

/// Closes the object behind `handle`: detaches its views; if it was the last
/// object owning the region, unmaps — at once, or when the last pending
/// asynchronous operation settles (and the last recorded view of another
/// thread is gone). If one of its views was still alive, a built-in may hold
/// its pointer (and be calling back into the JavaScript that closes the
/// region): the memory is then released (and, for a shared region, that
/// view's record dropped) by [`reclaim`], which the facade calls on the next
/// turn of the event loop; returns `true` then. Idempotent; unknown handles
/// are ignored.
pub fn close(handle: f64) -> bool {
    let Some(region) = table::get(handle) else {
        return false;
    };
    if region.closed.replace(true) {
        return false;
    }
    let (alive, detached) = region.views.borrow_mut().detach(0, usize::MAX);
    let (released, defer) = region
        .keep
        .lock()
        .close_owner(region.owner, alive.is_some(), detached);
    drop(released);
    defer
}

/// Gives held ranges of an arena what their changes asked for, and releases
/// a region whose `close()` was deferred. Called by the facade on the turn of
/// the event loop after such a change (no synchronous frame can hold a view's
/// pointer then). Never fails: whatever it cannot restore is already
/// consistent (see `MemoryMappingArena::reclaim`).
pub fn reclaim(handle: f64) {
    let Some(region) = table::get(handle) else {
        return;
    };
    // Once closed, its views (detached by close()) can no longer be in use.
    let released = region
        .keep
        .lock()
        .reclaim(region.owner, region.closed.get());
    drop(released);
}

/// What a thread's env leaves behind when it is torn down (a worker ending,
/// terminated or calling `process.exit()`; the main thread at exit). Node
/// runs the env's cleanup hooks then, but not necessarily the finalizers of
/// its objects and views, nor the next turn of its event loop that
/// [`reclaim`] waits for. None of them matters any more: no JavaScript of
/// this env runs again, so none of its views can be touched and no built-in
/// of it holds a pointer. So the hook does for each region what those would
/// have done: this env's objects stop owning it, their views' records and
/// deferred closes go, ranges held for their views are given what their
/// changes asked for, and a region whose last owner was here is closed and
/// unmapped (once no other thread's view or pending operation needs it).
mod teardown {
    use std::cell::{Cell, RefCell};
    use std::ffi::c_void;
    use std::sync::{Arc, Weak};

    use napi::sys;

    use super::{table, Keep};

    thread_local! {
        /// Whether this thread's env has the hook.
        static WATCHED: Cell<bool> = const { Cell::new(false) };
        /// Regions whose object in this thread was collected (its views may
        /// live on), with that object's owner id.
        static ORPHANS: RefCell<Vec<(Weak<Keep>, u64)>> = const { RefCell::new(Vec::new()) };
        /// Set while the hook runs: objects dropped then are settled by it.
        static TEARING_DOWN: Cell<bool> = const { Cell::new(false) };
    }

    /// Adds the teardown hook to `env`, once per thread (a worker has one env).
    pub(super) fn watch(env: sys::napi_env) {
        if WATCHED.with(|w| w.replace(true)) {
            return;
        }
        // SAFETY: a live env of this thread; the hook runs once, on this
        // thread, when the env is torn down.
        let status =
            unsafe { sys::napi_add_env_cleanup_hook(env, Some(env_gone), std::ptr::null_mut()) };
        if status != sys::Status::napi_ok {
            // Without the hook, regions are still released by finalizers
            // when the runtime runs them; try again with the next region.
            WATCHED.with(|w| w.set(false));
        }
    }

    /// An object of this thread was collected while the env lives.
    pub(super) fn orphaned(keep: &Arc<Keep>, owner: u64) {
        if TEARING_DOWN.with(Cell::get) {
            return;
        }
        ORPHANS.with_borrow_mut(|o| {
            o.retain(|(k, _)| k.strong_count() > 0);
            o.push((Arc::downgrade(keep), owner));
        });
    }

    /// The env's cleanup hook.
    unsafe extern "C" fn env_gone(_arg: *mut c_void) {
        TEARING_DOWN.with(|t| t.set(true));
        let regions = table::drain();
        for region in &regions {
            let released = {
                let mut state = region.keep.lock();
                if !region.closed.replace(true) {
                    state.owner_gone();
                }
                state.env_gone(region.owner)
            };
            drop(released);
        }
        // Dropped while the env can still delete their references.
        drop(regions);
        for (keep, owner) in ORPHANS.with_borrow_mut(std::mem::take) {
            if let Some(keep) = keep.upgrade() {
                let released = keep.lock().env_gone(owner);
                drop(released);
            }
        }
        WATCHED.with(|w| w.set(false));
        TEARING_DOWN.with(|t| t.set(false));
    }
}
