//! Regions as JavaScript sees them: a numeric handle per region, the state
//! behind it (open, closed, deferred, pending operations), closing, and the
//! protocol of a change. Memory logic stays in the core; what lives here is
//! what only the binding knows: JavaScript objects that own a region, views
//! that point into it, promises that use it.
//!
//! Ownership: the region lives in a [`Keep`] shared through an `Arc` by the
//! handle, every view's finalizer and every pending asynchronous operation,
//! so memory never goes away under any of them. A change first asks the core
//! which range it touches ([`Change::range`]), refuses it if an asynchronous
//! operation uses the range, detaches the views there, then applies it.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard};

use mapped_region::{AnyRegion, Change, Error, MemoryMappingArena};

use crate::errors::{Failure, Result};
use crate::views::Views;

/// A range an asynchronous operation is working on.
pub struct Pending {
    /// Which operation.
    pub id: u64,
    /// Start of the range (bytes from the region's start).
    pub start: usize,
    /// End of the range.
    pub end: usize,
}

/// The state of a region, behind its [`Keep`]'s lock.
pub struct State {
    /// The region; dropping it unmaps. Taken by `close()`, or by the last
    /// pending operation to settle after a `close()`.
    region: Option<AnyRegion>,
    /// Whether `close()` was called: the one place this is recorded.
    closed: bool,
    /// Closed while views were alive: a built-in may still hold a pointer
    /// into the memory, so it is released only by [`reclaim`] (on the next
    /// turn of the event loop).
    deferred: bool,
    /// The asynchronous operations in flight.
    pub pending: Vec<Pending>,
    /// The id of the next one.
    pub next_id: u64,
}

impl State {
    /// The region, unless it was closed.
    pub fn live(&self) -> Result<&AnyRegion> {
        match (&self.region, self.closed) {
            (Some(region), false) => Ok(region),
            _ => Err(Error::Closed.into()),
        }
    }

    fn live_mut(&mut self) -> Result<&mut AnyRegion> {
        match (&mut self.region, self.closed) {
            (Some(region), false) => Ok(region),
            _ => Err(Error::Closed.into()),
        }
    }

    /// Releases the region once closed and no operation is pending.
    pub fn take_if_done(&mut self) -> Option<AnyRegion> {
        if self.closed && !self.deferred && self.pending.is_empty() {
            self.region.take()
        } else {
            None
        }
    }

    /// Refuses a change to `[start, end)` while an asynchronous operation uses it.
    fn check_not_busy(&self, start: usize, end: usize, operation: &'static str) -> Result<()> {
        if self.pending.iter().any(|p| p.start < end && p.end > start) {
            return Err(Error::Busy { operation }.into());
        }
        Ok(())
    }
}

/// The region, owned jointly by its handle, its live views and its pending
/// asynchronous operations.
pub struct Keep {
    state: Mutex<State>,
}

impl Keep {
    /// The state. A panic aborts the process (`panic = "abort"`), so a
    /// poisoned lock cannot be observed in release builds.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One region's native state, reached from JavaScript through its handle.
/// Operations lock [`Region::keep`] and take [`State::live`].
pub struct Region {
    /// The region and its state.
    pub keep: Arc<Keep>,
    /// Its start address.
    pub addr: usize,
    /// Its size in bytes.
    pub size: usize,
    /// Only touched on the JS thread.
    pub views: RefCell<Views>,
}

/// Handles: a thread-local table of regions. A handle is `generation << 32 |
/// index` as an `f64` (exact below 2^53), so a stale handle never reaches a
/// region that reused its slot; an unknown handle reads as a closed region.
mod registry {
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

/// The region behind `handle`, or `ERR_MMAP_CLOSED`.
pub fn get(handle: f64) -> Result<Rc<Region>> {
    registry::get(handle).ok_or(Failure::Core(Error::Closed))
}

/// Registers a new region; returns its handle. The caller ties the handle to
/// a JavaScript object whose finalizer calls [`release`].
pub fn insert(env: napi::sys::napi_env, region: AnyRegion) -> f64 {
    let r = region.region();
    let (addr, size) = (r.as_ptr() as usize, r.size());
    registry::insert(Region {
        keep: Arc::new(Keep {
            state: Mutex::new(State {
                region: Some(region),
                closed: false,
                deferred: false,
                pending: Vec::new(),
                next_id: 0,
            }),
        }),
        addr,
        size,
        views: RefCell::new(Views::new(env)),
    })
}

/// The owning JavaScript object was collected: forget the handle (views and
/// pending operations may still keep the memory).
pub fn release(handle: f64) {
    registry::remove(handle);
}

/// Runs a change to the arena behind `handle`. A plain mapping refuses it
/// first ([`AnyRegion::arena`]), before its arguments are looked at; then
/// `plan` converts them and asks the core to validate the change and say
/// which range it replaces; a range an asynchronous operation uses refuses it
/// (nothing applied, nothing changed); otherwise the views over the range are
/// detached and the change applied, telling the core whether one of them was
/// alive (so that it holds the range). Returns whether the arena now holds
/// ranges until [`reclaim`].
pub fn change<'fd>(
    handle: f64,
    operation: &'static str,
    plan: impl FnOnce(&MemoryMappingArena) -> Result<Change<'fd>>,
) -> Result<bool> {
    let region = get(handle)?;
    let mut state = region.keep.lock();
    let change = plan(state.live()?.arena(operation)?)?;
    let (start, end) = change.range();
    state.check_not_busy(start, end, operation)?;
    let in_use = if change.detaches_views() {
        region.views.borrow_mut().detach(start, end)
    } else {
        None
    };
    let arena = state.live_mut()?.arena_mut(operation)?;
    if let Some((view_start, view_end)) = in_use {
        arena.hold_in_use(view_start, view_end);
    }
    arena.apply(change, in_use.is_some())?;
    Ok(arena.has_held())
}

/// Whether the region is closed (an unknown handle is).
pub fn closed(handle: f64) -> bool {
    registry::get(handle).is_none_or(|r| r.keep.lock().live().is_err())
}

/// Number of asynchronous operations still pending (0 for an unknown handle).
pub fn pending(handle: f64) -> f64 {
    registry::get(handle).map_or(0.0, |r| r.keep.lock().pending.len() as f64)
}

/// Detaches every view, then unmaps — at once, or when the last pending
/// asynchronous operation settles. If a view was still alive, a built-in may
/// hold its pointer (and be calling back into the JavaScript that closes the
/// region): the memory is then released by [`reclaim`], which the facade
/// calls on the next turn of the event loop; returns `true` then.
/// Idempotent; unknown handles are ignored.
pub fn close(handle: f64) -> bool {
    let Some(region) = registry::get(handle) else {
        return false;
    };
    let alive = region.views.borrow_mut().detach(0, usize::MAX).is_some();
    let (released, defer) = {
        let mut state = region.keep.lock();
        let first = !state.closed;
        // An arena that holds ranges has pointers possibly in use there too.
        let held = matches!(&state.region, Some(AnyRegion::Arena(a)) if a.has_held());
        let defer = first && (alive || held);
        state.closed = true;
        state.deferred |= defer;
        (state.take_if_done(), defer)
    };
    drop(released);
    defer
}

/// Gives held ranges of an arena what their changes asked for, and releases
/// a region whose `close()` was deferred. Called by the facade on the turn of
/// the event loop after such a change (no synchronous frame can hold a view's
/// pointer then). Never fails: whatever it cannot restore is already
/// consistent (see `MemoryMappingArena::reclaim`).
pub fn reclaim(handle: f64) {
    let Some(region) = registry::get(handle) else {
        return;
    };
    let released = {
        let mut state = region.keep.lock();
        if let Some(AnyRegion::Arena(arena)) = state.region.as_mut() {
            let _ = arena.reclaim();
        }
        state.deferred = false;
        state.take_if_done()
    };
    drop(released);
}
