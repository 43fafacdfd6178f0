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
//!
//! Threads: a [`Keep`] may be owned by objects in several threads
//! ([`share`] and [`attach`]): one region at the same addresses, one layout
//! behind one lock. Each object is closed on its own; the region is closed
//! when the last one is. Views belong to the thread that made them and only
//! it can detach them, so once a region is shared every view of every object
//! is *recorded* in the state, and a change over another object's live view
//! is refused (`ERR_MMAP_BUSY`) instead of replacing memory that view still
//! shows; typed-access windows are no longer handed out (the accesses take
//! the checked copy, atomics the core's checked atomic operations).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use mapped_region::{
    Advice, AnyRegion, Change, Error, GuestBacking, GuestRegion, GuestTable, MemoryMappingArena,
    Protection, Span,
};

use crate::convert;
use crate::errors::{Failure, Result};
use crate::views::Views;

/// A range an asynchronous operation is working on.
struct Pending {
    /// Which operation.
    id: u64,
    /// Start of the range (bytes from the region's start).
    start: usize,
    /// End of the range.
    end: usize,
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
    /// turn of the event loop) of the object that closed it (its owner id).
    deferred: Option<u64>,
    /// The asynchronous operations in flight.
    pending: Vec<Pending>,
    /// The id of the next one.
    next_id: u64,
    /// Objects, in any thread, that own the region and are neither closed
    /// nor collected. The region is closed when the last one closes.
    owners: usize,
    /// Set by the first [`share`]: views are recorded, windows are off.
    shared: bool,
    /// Once shared: every live view of every object, `(start, owner, id)` to
    /// its end. Removed when the view is detached (by its own thread) or
    /// collected (its finalizer).
    records: BTreeMap<(usize, u64, u64), usize>,
    /// The guest regions of an arena a `GuestMemory` is built over (empty
    /// otherwise): one table for every object over the arena, in any thread,
    /// changed only with the arena by the `guest_*` changes below.
    guest: GuestTable,
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

    /// Releases the region once closed, no operation is pending and no view
    /// of another thread's may still show it.
    fn take_if_done(&mut self) -> Option<AnyRegion> {
        if self.closed
            && self.deferred.is_none()
            && self.pending.is_empty()
            && self.records.is_empty()
        {
            self.region.take()
        } else {
            None
        }
    }

    /// The env of the owning object `owner` was torn down and the object no
    /// longer owns the region (the caller counted it out): its views cannot
    /// be touched again, so their records, a close deferred for them and the
    /// ranges held for them go; if no owner is left, the region is closed.
    /// Returns the region if that released it.
    fn env_gone(&mut self, owner: u64) -> Option<AnyRegion> {
        self.records.retain(|&(_, o, _), _| o != owner);
        if self.deferred == Some(owner) {
            self.deferred = None;
        }
        if self.owners == 0 && !self.closed {
            self.closed = true;
        }
        // The turn that would have reclaimed ranges held for its views never
        // comes. (Held ranges are the arena's, not one thread's: this
        // reclaims them all, as any thread's `reclaim` does.)
        if let Some(AnyRegion::Arena(arena)) = self.region.as_mut() {
            let _ = arena.reclaim();
        }
        self.take_if_done()
    }

    /// Registers the byte ranges `[start, end)` of one asynchronous
    /// operation as pending (changes over them are refused, a `close()` waits
    /// for them); returns the operation's id for [`State::settle`].
    pub fn lease(&mut self, ranges: impl IntoIterator<Item = (usize, usize)>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        for (start, end) in ranges {
            self.pending.push(Pending { id, start, end });
        }
        id
    }

    /// The operation `id` settled: its ranges are no longer pending. Returns
    /// the region if a `close()` was waiting for it alone.
    pub fn settle(&mut self, id: u64) -> Option<AnyRegion> {
        self.pending.retain(|p| p.id != id);
        self.take_if_done()
    }

    /// How many ranges asynchronous operations are working on.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The guest regions (see [`State::guest`]).
    pub fn guest(&self) -> &GuestTable {
        &self.guest
    }

    /// The region, if regions of the guest table cover `[address, address +
    /// length)` (`ERR_GUEST_ADDRESS` otherwise): what a guest copy asks first.
    pub fn guest_range(&self, address: usize, length: usize) -> Result<&AnyRegion> {
        let region = self.live()?;
        self.guest.covered(address, length)?;
        Ok(region)
    }

    /// Whether the region was shared: views are recorded and windows are off.
    pub fn shared(&self) -> bool {
        self.shared
    }

    /// Records a view `(start, owner, id)` ending at `end` (only once shared);
    /// returns whether it was recorded.
    pub fn record_view(&mut self, key: (usize, u64, u64), end: usize) -> bool {
        if self.shared {
            self.records.insert(key, end);
        }
        self.shared
    }

    /// Forgets the recorded view `key` (detached or collected).
    pub fn forget_view(&mut self, key: (usize, u64, u64)) {
        self.records.remove(&key);
    }

    /// Refuses a change to `[start, end)` while a live view of another object
    /// (in this thread or another) is over it: only its own thread could
    /// detach it.
    fn check_no_foreign_views(
        &self,
        start: usize,
        end: usize,
        owner: u64,
        operation: &'static str,
    ) -> Result<()> {
        if self.records.is_empty() {
            return Ok(());
        }
        let foreign = self
            .records
            .range(..(end, 0, 0))
            .any(|(&(_, o, _), &e)| o != owner && e > start);
        if foreign {
            return Err(Failure::ForeignViews { operation });
        }
        Ok(())
    }

    /// Refuses a change to `[start, end)` while an asynchronous operation uses it.
    fn check_not_busy(&self, start: usize, end: usize, operation: &'static str) -> Result<()> {
        if self.pending.iter().any(|p| p.start < end && p.end > start) {
            return Err(Error::Busy { operation }.into());
        }
        Ok(())
    }
}

/// The region, owned jointly by its handles (one per owning object, in any
/// thread), its live views and its pending asynchronous operations.
pub struct Keep {
    state: Mutex<State>,
    /// Mirrors [`State::shared`], for view finalizers that need the lock only then.
    recorded: AtomicBool,
    /// Its entry in the share table, once shared.
    share: OnceLock<(u64, u64)>,
}

impl Keep {
    /// The state. A panic aborts the process (`panic = "abort"`), so a
    /// poisoned lock cannot be observed in release builds.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A view `key` was collected: forgets its record (once shared), and
    /// unmaps if it was the last thing keeping a closed region.
    pub fn view_collected(&self, key: (usize, u64, u64)) {
        if !self.recorded.load(Ordering::Acquire) {
            return;
        }
        let released = {
            let mut state = self.lock();
            state.forget_view(key);
            state.take_if_done()
        };
        drop(released);
    }
}

impl Drop for Keep {
    fn drop(&mut self) {
        if let Some((id, _)) = self.share.get() {
            share_table()
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(id);
        }
    }
}

/// One object's native state, reached from JavaScript through its handle.
/// Operations lock [`Region::keep`] and take [`State::live`].
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

impl Drop for Region {
    /// The owning object was collected without `close()` (or its thread
    /// ended): it owns the region no more. Its views, still alive, keep the
    /// memory (and their records).
    fn drop(&mut self) {
        let mut state = self.keep.lock();
        if !self.closed.get() {
            state.owners = state.owners.saturating_sub(1);
        }
        drop(state);
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

/// Shared regions: id to (token, region). An entry goes when its [`Keep`] does.
type ShareTable = Mutex<HashMap<u64, (u64, Weak<Keep>)>>;

fn share_table() -> &'static ShareTable {
    static TABLE: OnceLock<ShareTable> = OnceLock::new();
    TABLE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Share ids handed out so far (ids are 1, 2, …).
static SHARE_IDS: AtomicU64 = AtomicU64::new(1);

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
    registry::get(handle)
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
    registry::with(handle, |region| match region {
        Some(r) if !r.closed.get() => f(r.span),
        _ => Err(Failure::Core(Error::Closed)),
    })
}

/// The size of the region behind `handle`, also once this object is closed.
pub fn size(handle: f64) -> Result<f64> {
    registry::get(handle)
        .map(|r| r.span.size() as f64)
        .ok_or(Failure::Core(Error::Closed))
}

/// Registers a new region; returns its handle. The caller ties the handle to
/// a JavaScript object whose finalizer calls [`release`].
pub fn insert(env: napi::sys::napi_env, region: AnyRegion) -> f64 {
    let span = Span::of(region.region());
    let keep = Arc::new(Keep {
        state: Mutex::new(State {
            region: Some(region),
            closed: false,
            deferred: None,
            pending: Vec::new(),
            next_id: 0,
            owners: 1,
            shared: false,
            records: BTreeMap::new(),
            guest: GuestTable::new(),
        }),
        recorded: AtomicBool::new(false),
        share: OnceLock::new(),
    });
    register(env, keep, span)
}

fn register(env: napi::sys::napi_env, keep: Arc<Keep>, span: Span) -> f64 {
    teardown::watch(env);
    registry::insert(Region {
        keep,
        span,
        owner: next_owner(),
        closed: Cell::new(false),
        views: RefCell::new(Views::new(env)),
    })
}

/// What [`share`] hands out: the share table's id and token, and whether the
/// region is an arena.
pub struct ShareHandle {
    /// The id, an integer below 2^53.
    pub id: u64,
    /// A random number below 2^53 that must come with the id.
    pub token: u64,
    /// Whether the region is an arena (else a plain mapping).
    pub arena: bool,
}

/// A random number below 2^53.
fn random_token() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    let mut token = u64::from_ne_bytes(bytes);
    if n != bytes.len() as isize {
        // No entropy source: still distinct per region, only not unguessable.
        token ^= std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    }
    token & ((1 << 53) - 1)
}

/// Shares the region behind `handle` with other threads: from now on every
/// view of every object is recorded and no typed-access window is handed out
/// (this object's are detached now). Returns the handle [`attach`] takes;
/// the same one every time.
pub fn share(handle: f64) -> Result<ShareHandle> {
    let region = get(handle)?;
    let mut views = region.views.borrow_mut();
    views.detach_windows();
    let mut state = region.keep.lock();
    let arena = matches!(state.live()?, AnyRegion::Arena(_));
    if !state.shared {
        state.shared = true;
        region.keep.recorded.store(true, Ordering::Release);
        // The views this object made before: recorded like every later one.
        for (start, id, end) in views.live() {
            state.records.insert((start, region.owner, id), end);
        }
    }
    drop(state);
    let &(id, token) = region.keep.share.get_or_init(|| {
        let id = SHARE_IDS.fetch_add(1, Ordering::Relaxed);
        let token = random_token();
        share_table()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, (token, Arc::downgrade(&region.keep)));
        (id, token)
    });
    Ok(ShareHandle { id, token, arena })
}

/// A new object's handle over the region [`share`] handed out as `id` and
/// `token`, on this thread's `env`, owning the region until closed or
/// released. `arena` must match the region's kind.
pub fn attach(env: napi::sys::napi_env, id: f64, token: f64, arena: bool) -> Result<f64> {
    let (id, token) = match (
        convert::int_in(id, 1.0, MAX_SAFE),
        convert::int_in(token, 0.0, MAX_SAFE),
    ) {
        (Some(id), Some(token)) => (id as u64, token as u64),
        _ => {
            return Err(Failure::BadHandle(
                "its id or token is not an integer below 2^53",
            ))
        }
    };
    // The entry is copied out: the upgrade (and a drop of the region, which
    // takes the table's lock) happens outside the table's lock.
    let entry = share_table()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&id)
        .cloned();
    let keep = match entry {
        Some((t, _)) if t != token => return Err(Failure::BadHandle("its token does not match")),
        Some((_, weak)) => weak.upgrade(),
        None if id < SHARE_IDS.load(Ordering::Relaxed) => None,
        None => return Err(Failure::BadHandle("no region was shared under its id")),
    };
    let Some(keep) = keep else {
        return Err(Failure::StaleHandle);
    };
    let span = {
        let mut state = keep.lock();
        if state.closed || state.owners == 0 {
            return Err(Failure::StaleHandle);
        }
        let r = state.live()?;
        if matches!(r, AnyRegion::Arena(_)) != arena {
            return Err(Failure::BadHandle(if arena {
                "it is a MemoryMapping's, not an arena's"
            } else {
                "it is an arena's, not a MemoryMapping's"
            }));
        }
        let span = Span::of(r.region());
        state.owners += 1;
        span
    };
    Ok(register(env, keep, span))
}

const MAX_SAFE: f64 = ((1u64 << 53) - 1) as f64;

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
    apply(&region, &mut state, operation, change)
}

/// The protocol of [`change`] from its planned change on, under the lock.
fn apply(
    region: &Region,
    state: &mut State,
    operation: &'static str,
    change: Change<'_>,
) -> Result<bool> {
    let (start, end) = change.range();
    state.check_not_busy(start, end, operation)?;
    let in_use = if change.detaches_views() {
        state.check_no_foreign_views(start, end, region.owner, operation)?;
        let (alive, detached) = region.views.borrow_mut().detach(start, end);
        for (view_start, id) in detached {
            state.forget_view((view_start, region.owner, id));
        }
        alive
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

/// What backs a guest region being added, and how `plan` maps it.
pub struct GuestAdd {
    /// Guest address (offset in the arena).
    pub start: usize,
    /// Size in bytes.
    pub size: usize,
    /// Its protection.
    pub protection: Protection,
    /// What backs it.
    pub backing: GuestBacking,
    /// `MADV_DONTDUMP` on it once mapped.
    pub dont_dump: bool,
}

/// Adds a guest region to the arena behind `handle`: under the arena's lock,
/// refused where it overlaps one of the table (before anything is mapped),
/// mapped by the change `plan` makes (the protocol of [`change`]), advised
/// `MADV_DONTDUMP` if asked (a failure unmaps it again), then recorded.
/// Nothing is left half-done. Returns its slot, and whether the arena now
/// holds ranges until [`reclaim`] (views the arena's own object made there).
pub fn guest_add<'fd>(
    handle: f64,
    add: GuestAdd,
    plan: impl FnOnce(&MemoryMappingArena) -> Result<Change<'fd>>,
) -> Result<(u32, bool)> {
    const OPERATION: &str = "addRegion";
    let region = get(handle)?;
    let mut state = region.keep.lock();
    state.live()?.arena(OPERATION)?;
    state.guest.check_free(add.start, add.size)?;
    let change = plan(state.live()?.arena(OPERATION)?)?;
    let held = apply(&region, &mut state, OPERATION, change)?;
    if add.dont_dump {
        let advised = region
            .span
            .page_range(add.start, add.size)
            .and_then(|range| {
                // SAFETY: the range was just mapped, under the lock.
                unsafe { range.madvise(Advice::new(libc::MADV_DONTDUMP)?) }
            });
        if let Err(e) = advised {
            let removal = state
                .live()?
                .arena(OPERATION)?
                .plan_removal(add.start, add.size)?;
            // No view is left there (the add detached them): nothing new is held.
            apply(&region, &mut state, OPERATION, removal)?;
            return Err(e.into());
        }
    }
    let GuestRegion { slot, .. } =
        state
            .guest
            .insert(add.start, add.size, add.protection, add.backing)?;
    Ok((slot, held))
}

/// Removes the guest region that starts at `start` (`ERR_GUEST_ADDRESS` if
/// none does) from the arena and the table, under the arena's lock.
pub fn guest_remove(handle: f64, start: usize) -> Result<bool> {
    guest_region_change(
        handle,
        start,
        "removeRegion",
        |arena, r| arena.plan_removal(r.start, r.size),
        |table| table.remove(start).map(drop),
    )
}

/// Changes the protection of the guest region that starts at `start`
/// (`mprotect`), in the arena and the table, under the arena's lock.
pub fn guest_protect(handle: f64, start: usize, protection: Protection) -> Result<bool> {
    guest_region_change(
        handle,
        start,
        "protect",
        |arena, r| arena.plan_protect(r.start, r.size, protection),
        |table| table.set_protection(start, protection),
    )
}

/// A change (the protocol of [`change`]) of the whole guest region that
/// starts at `start`, then `record`ed in the table.
fn guest_region_change<'fd>(
    handle: f64,
    start: usize,
    operation: &'static str,
    plan: impl FnOnce(&MemoryMappingArena, GuestRegion) -> mapped_region::Result<Change<'fd>>,
    record: impl FnOnce(&mut GuestTable) -> mapped_region::Result<()>,
) -> Result<bool> {
    let region = get(handle)?;
    let mut state = region.keep.lock();
    state.live()?;
    let r = state.guest.starting_at(start)?;
    let change = plan(state.live()?.arena(operation)?, r)?;
    let held = apply(&region, &mut state, operation, change)?;
    record(&mut state.guest)?;
    Ok(held)
}

/// The guest regions of the arena behind `handle`, sorted by guest address.
pub fn guest_regions(handle: f64) -> Result<Vec<GuestRegion>> {
    let region = get(handle)?;
    let state = region.keep.lock();
    state.live()?;
    Ok(state.guest.regions().to_vec())
}

/// Whether the object behind `handle` is closed (an unknown handle is).
pub fn closed(handle: f64) -> bool {
    registry::get(handle).is_none_or(|r| r.closed.get() || r.keep.lock().live().is_err())
}

/// Number of asynchronous operations still pending (0 for an unknown handle).
pub fn pending(handle: f64) -> f64 {
    registry::get(handle).map_or(0.0, |r| r.keep.lock().pending() as f64)
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
    let Some(region) = registry::get(handle) else {
        return false;
    };
    if region.closed.replace(true) {
        return false;
    }
    let (alive, detached) = region.views.borrow_mut().detach(0, usize::MAX);
    let alive = alive.is_some();
    let (released, defer) = {
        let mut state = region.keep.lock();
        if !alive {
            for (start, id) in detached {
                state.forget_view((start, region.owner, id));
            }
        }
        state.owners = state.owners.saturating_sub(1);
        let last = state.owners == 0 && !state.closed;
        // An arena that holds ranges has pointers possibly in use there too.
        let held = matches!(&state.region, Some(AnyRegion::Arena(a)) if a.has_held());
        let defer = alive || (last && held);
        if last {
            state.closed = true;
            if defer {
                state.deferred = Some(region.owner);
            }
        }
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
        if region.closed.get() {
            // Its views, detached by close(), can no longer be in use.
            let owner = region.owner;
            state.records.retain(|&(_, o, _), _| o != owner);
            if state.deferred == Some(owner) {
                state.deferred = None;
            }
        }
        state.take_if_done()
    };
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

    use super::{registry, Keep};

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
        let regions = registry::drain();
        for region in &regions {
            let released = {
                let mut state = region.keep.lock();
                if !region.closed.replace(true) {
                    state.owners = state.owners.saturating_sub(1);
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
