//! The state of one region, shared by every object that owns it (in any
//! thread), its views and its pending asynchronous operations: open or
//! closed, a deferred close, the ranges asynchronous operations lease, the
//! owners, the views recorded once the region is shared, and the guest
//! region table of a `GuestMemory`'s arena. Every rule about that state is a
//! method here; the other binding files call them and never touch its fields.
//!
//! Ownership: the region lives in a [`Keep`] shared through an `Arc` by every
//! handle (`registry.rs`), every view's finalizer (`views.rs`) and every
//! pending asynchronous operation (`tasks.rs`), so memory never goes away
//! under any of them.
//!
//! Threads: once shared (`share.rs`) one `Keep` is owned by objects in
//! several threads: one region at the same addresses, one layout behind one
//! lock. Views belong to the thread that made them and only it can detach
//! them, so once shared every view of every object is *recorded* here, and a
//! change over another object's live view is refused (`ERR_MMAP_BUSY`)
//! instead of replacing memory that view still shows.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use std::os::fd::BorrowedFd;

use mapped_region::{
    AnyRegion, Error, GuestTable, Pager, PagerOptions, PagerRange, PagerStatus, Span,
};

use crate::dirty::KernelDirty;
use crate::errors::{Failure, Result};

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
    /// The pager filling guest regions of a restore (`lazy: 'pager'`): one
    /// per arena, so that faults from every thread are served by it. Stopped
    /// (its thread joined) when the arena is closed, before it is unmapped;
    /// declared first so that it is also dropped (stopped) before `region`
    /// when the last `Keep` goes without a close (every owner collected).
    pager: Option<Pager>,
    /// Whether the pager records the pages first faulted on.
    recording: bool,
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
    /// Kernel dirty tracking of the guest regions, once asked for.
    dirty: Option<KernelDirty>,
}

impl State {
    /// The region, unless it was closed.
    pub fn live(&self) -> Result<&AnyRegion> {
        match (&self.region, self.closed) {
            (Some(region), false) => Ok(region),
            _ => Err(Error::Closed.into()),
        }
    }

    /// The region to change, unless it was closed.
    pub fn live_mut(&mut self) -> Result<&mut AnyRegion> {
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
            // The tracker's descriptors go with the region.
            self.dirty = None;
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
    pub fn env_gone(&mut self, owner: u64) -> Option<AnyRegion> {
        self.records.retain(|&(_, o, _), _| o != owner);
        if self.deferred == Some(owner) {
            self.deferred = None;
        }
        if self.owners == 0 && !self.closed {
            self.closed = true;
            self.stop_pager();
        }
        // The turn that would have reclaimed ranges held for its views never
        // comes. (Held ranges are the arena's, not one thread's: this
        // reclaims them all, as any thread's `reclaim` does.)
        self.reclaim_held();
        self.take_if_done()
    }

    /// An arena's held ranges get what their changes asked for (see
    /// `MemoryMappingArena::reclaim`); what that maps anew under guest
    /// regions the kernel tracks is tracked again and marked.
    fn reclaim_held(&mut self) {
        if let Some(AnyRegion::Arena(arena)) = self.region.as_mut() {
            let held = if self.dirty.is_some() {
                arena.held_ranges()
            } else {
                Vec::new()
            };
            let _ = arena.reclaim();
            for (start, end) in held {
                self.dirty_mapped_anew(start, end);
            }
        }
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

    /// The guest regions, to record a change the arena has just applied.
    pub fn guest_mut(&mut self) -> &mut GuestTable {
        &mut self.guest
    }

    /// Tracks the writes to the guest regions with the kernel, now and as
    /// regions come (idempotent): `ERR_MMAP_UNSUPPORTED` with the reason
    /// where the kernel or the process cannot, or a region cannot be tracked.
    pub fn track_dirty(&mut self) -> Result<()> {
        if self.dirty.is_none() {
            let base = Span::of(self.live()?.region()).addr();
            self.dirty = Some(KernelDirty::open(base, &self.guest)?);
        }
        Ok(())
    }

    /// Whether the kernel tracks the guest regions' writes.
    pub fn dirty_kernel(&self) -> bool {
        self.dirty.is_some()
    }

    /// The kernel's tracking, or `ERR_MMAP_UNSUPPORTED` for `operation` where
    /// the kernel does not track this guest memory.
    fn kernel_dirty(&mut self, operation: &'static str) -> Result<&mut KernelDirty> {
        self.live()?;
        self.dirty
            .as_mut()
            .ok_or(Failure::Core(Error::Unsupported { operation }))
    }

    /// Marks the pages of `[addr, addr + len)` (inside the guest regions)
    /// changed: the next take reports them.
    pub fn dirty_mark(&mut self, addr: usize, len: usize) -> Result<()> {
        self.guest.covered(addr, len)?;
        let guest = &self.guest;
        match self.dirty.as_mut() {
            Some(d) => {
                d.mark(guest, addr, len);
                Ok(())
            }
            None => self.kernel_dirty("markDirty").map(drop),
        }
    }

    /// `[start, end)` of the arena changed without a write through its
    /// mapping (discarded): marked where the kernel tracks the guest regions
    /// there (nothing otherwise).
    pub fn dirty_changed(&mut self, start: usize, end: usize) {
        let guest = &self.guest;
        if let Some(d) = self.dirty.as_mut() {
            d.mark(guest, start, end.saturating_sub(start));
        }
    }

    /// Takes the pages of every guest region written or marked since the
    /// last take (see `KernelDirty::take`); the ranges of a pager that has
    /// ended are tracked first (`KernelDirty::hand_over`).
    pub fn dirty_take(&mut self) -> Result<Vec<u64>> {
        self.live()?;
        let guest = &self.guest;
        match self.dirty.as_mut() {
            Some(d) => {
                // The pager's ranges are handed over once it has ended: it
                // unregisters them before its status leaves `Running`.
                let running = matches!(
                    self.pager.as_ref().map(Pager::status),
                    Some(PagerStatus::Running { .. })
                );
                if d.paging() && !running {
                    d.hand_over(guest);
                }
                d.take(guest)
            }
            None => self.kernel_dirty("takeDirty").map(|_| Vec::new()),
        }
    }

    /// A guest region was just mapped at `start`: tracked from now on if
    /// the kernel tracks this guest memory (clean: the caller marks it).
    pub fn dirty_region_added(&mut self, start: usize, size: usize) -> Result<()> {
        match self.dirty.as_mut() {
            Some(d) => d.track(start, size),
            None => Ok(()),
        }
    }

    /// The guest region at `start` was removed.
    pub fn dirty_region_removed(&mut self, start: usize, size: usize) {
        if let Some(d) = self.dirty.as_mut() {
            d.forget(start, size);
        }
    }

    /// `[start, end)` of the arena was mapped anew through the arena itself
    /// (see `KernelDirty::mapped_anew`).
    pub fn dirty_mapped_anew(&mut self, start: usize, end: usize) {
        let guest = &self.guest;
        if let Some(d) = self.dirty.as_mut() {
            d.mapped_anew(guest, start, end);
        }
    }

    /// Starts the pager that fills the guest regions `runs` (`(guest
    /// address, size, file offset)`, each covered by guest regions whose
    /// memory has no page present) from `source`: one per arena. `options`
    /// name pages by guest address.
    pub fn pager_start(
        &mut self,
        source: BorrowedFd<'_>,
        runs: &[(usize, usize, u64)],
        options: PagerOptions,
    ) -> Result<()> {
        let base = Span::of(self.live()?.region()).addr();
        if self.pager.is_some() {
            return Err(Error::Paging {
                reason: "this guest memory has a pager already",
            }
            .into());
        }
        let mut ranges = Vec::with_capacity(runs.len());
        for &(address, size, file_offset) in runs {
            self.guest.covered(address, size)?;
            ranges.push(PagerRange {
                addr: base + address,
                len: size,
                file_offset,
                tag: address as u64,
            });
        }
        // The kernel's tracking lets go of the ranges first (a range takes
        // one userfaultfd); every take reports them whole until the pager
        // has ended. Should the pager not start, the next take tracks them.
        if let Some(d) = self.dirty.as_mut() {
            let guest: Vec<(usize, usize)> = runs.iter().map(|&(a, s, _)| (a, s)).collect();
            d.pager_starting(&guest)?;
        }
        self.recording = options.record;
        self.pager = Some(Pager::start_with(source, ranges, options)?);
        Ok(())
    }

    /// What the pager saw of the faults, as numbers: `[]` without a pager;
    /// else `[recording, faults, guest address, pages, …]` — whether it
    /// records, how many faults waited for the file, and the pages first
    /// faulted on, in order, when it records.
    pub fn pager_record(&self) -> Result<Vec<u64>> {
        self.live()?;
        let Some(pager) = self.pager.as_ref() else {
            return Ok(Vec::new());
        };
        let mut out = vec![u64::from(self.recording), pager.faults() as u64];
        for (address, pages) in pager.working_set() {
            out.extend([address, pages as u64]);
        }
        Ok(out)
    }

    /// The pager's status, as numbers: `[0]` without a pager; `[1, filled,
    /// total]` running; `[2, guest address, pages, …]` done, with the runs of
    /// pages the file could not supply; `[3]` stopped before it was done;
    /// `[4, errno]` its thread failed (errno 0 when the error had none).
    pub fn pager_status(&self) -> Result<Vec<u64>> {
        self.live()?;
        Ok(match self.pager.as_ref().map(Pager::status) {
            None => vec![0],
            Some(PagerStatus::Running { filled, total }) => vec![1, filled as u64, total as u64],
            Some(PagerStatus::Done { failed }) => {
                let mut out = vec![2];
                for (address, pages) in failed {
                    out.extend([address, pages as u64]);
                }
                out
            }
            Some(PagerStatus::Stopped) => vec![3],
            Some(PagerStatus::Failed { error }) => vec![4, error.errno().unwrap_or(0) as u64],
        })
    }

    /// Stops the pager, if any, and joins its thread (the arena is closing:
    /// it must not outlive the mapping).
    fn stop_pager(&mut self) {
        if let Some(pager) = self.pager.as_mut() {
            pager.stop();
        }
    }

    /// An owning object was collected (or its thread ended) without
    /// `close()`: it owns the region no more.
    pub fn owner_gone(&mut self) {
        self.owners = self.owners.saturating_sub(1);
    }

    /// A new object in some thread owns the region (an `attach`): refused
    /// once the region is closed or has no owner left, and where `arena`
    /// does not match its kind. Returns where the region lies.
    pub fn add_owner(&mut self, arena: bool) -> Result<Span> {
        if self.closed || self.owners == 0 {
            return Err(Failure::StaleHandle);
        }
        let r = self.live()?;
        if matches!(r, AnyRegion::Arena(_)) != arena {
            return Err(Failure::BadHandle(if arena {
                "it is a MemoryMapping's, not an arena's"
            } else {
                "it is an arena's, not a MemoryMapping's"
            }));
        }
        let span = Span::of(r.region());
        self.owners += 1;
        Ok(span)
    }

    /// The object `owner` closes. Its views were detached: `detached` lists
    /// them (`(start, id)`), and `views_alive` says whether one was still in
    /// use, in which case their records stay until [`State::reclaim`]. If it
    /// was the last owner, the region is closed — released now, or deferred
    /// to `reclaim` where a pointer may still be in use (a live view, or
    /// ranges the arena holds). Returns the region if released now, and
    /// whether the caller must call `reclaim` on the next turn.
    pub fn close_owner(
        &mut self,
        owner: u64,
        views_alive: bool,
        detached: Vec<(usize, u64)>,
    ) -> (Option<AnyRegion>, bool) {
        if !views_alive {
            for (start, id) in detached {
                self.forget_view((start, owner, id));
            }
        }
        self.owners = self.owners.saturating_sub(1);
        let last = self.owners == 0 && !self.closed;
        // An arena that holds ranges has pointers possibly in use there too.
        let held = matches!(&self.region, Some(AnyRegion::Arena(a)) if a.has_held());
        let defer = views_alive || (last && held);
        if last {
            self.closed = true;
            self.stop_pager();
            if defer {
                self.deferred = Some(owner);
            }
        }
        (self.take_if_done(), defer)
    }

    /// The turn after a change or a close of object `owner` (`closed`
    /// whether it is closed): held ranges of an arena are given what their
    /// changes asked for; once closed, its views can no longer be in use, so
    /// their records and a close deferred for them go. Returns the region if
    /// that released it.
    pub fn reclaim(&mut self, owner: u64, closed: bool) -> Option<AnyRegion> {
        self.reclaim_held();
        if closed {
            self.records.retain(|&(_, o, _), _| o != owner);
            if self.deferred == Some(owner) {
                self.deferred = None;
            }
        }
        self.take_if_done()
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
    pub fn check_no_foreign_views(
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
    pub fn check_not_busy(&self, start: usize, end: usize, operation: &'static str) -> Result<()> {
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
    /// A new region's state, with one owner (the object being made).
    pub fn new(region: AnyRegion) -> Arc<Keep> {
        Arc::new(Keep {
            state: Mutex::new(State {
                pager: None,
                recording: false,
                region: Some(region),
                closed: false,
                deferred: None,
                pending: Vec::new(),
                next_id: 0,
                owners: 1,
                shared: false,
                records: BTreeMap::new(),
                guest: GuestTable::new(),
                dirty: None,
            }),
            recorded: AtomicBool::new(false),
            share: OnceLock::new(),
        })
    }

    /// Marks the region shared (once): from now on every view of every
    /// object is recorded, starting with `views` (`(start, id, end)`), the
    /// live views of object `owner`. Returns whether the region is an arena.
    pub fn mark_shared(
        &self,
        owner: u64,
        views: impl IntoIterator<Item = (usize, u64, usize)>,
    ) -> Result<bool> {
        let mut state = self.lock();
        let arena = matches!(state.live()?, AnyRegion::Arena(_));
        if !state.shared {
            state.shared = true;
            self.recorded.store(true, Ordering::Release);
            for (start, id, end) in views {
                state.records.insert((start, owner, id), end);
            }
        }
        Ok(arena)
    }

    /// The region's id and token in the share table, made by `make` the
    /// first time: the same every time.
    pub fn share_entry(&self, make: impl FnOnce() -> (u64, u64)) -> (u64, u64) {
        *self.share.get_or_init(make)
    }

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
