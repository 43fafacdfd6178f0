//! The protocol of a change to an arena's memory, plain or to a guest
//! region: the core plans the change and says which range it replaces
//! ([`Change::range`]); a range an asynchronous operation leases refuses it,
//! as does another object's live view once the region is shared; otherwise
//! this object's views there are detached (`views.rs`) and the core applies
//! it. A guest region's change also records it in the region's guest table,
//! under the same lock, so that the arena and the table never disagree.

use mapped_region::{Advice, Change, GuestBacking, GuestRegion, MemoryMappingArena, Protection};

use crate::errors::Result;
use crate::registry::{self, Region};
use crate::state::State;

/// Runs a change to the arena behind `handle`. A plain mapping refuses it
/// first ([`AnyRegion::arena`]), before its arguments are looked at; then
/// `plan` converts them and asks the core to validate the change and say
/// which range it replaces; a range an asynchronous operation uses refuses it
/// (nothing applied, nothing changed); otherwise the views over the range are
/// detached and the change applied, telling the core whether one of them was
/// alive (so that it holds the range). Returns whether the arena now holds
/// ranges until `reclaim` (`registry.rs`).
pub fn change<'fd>(
    handle: f64,
    operation: &'static str,
    plan: impl FnOnce(&MemoryMappingArena) -> Result<Change<'fd>>,
) -> Result<bool> {
    let region = registry::get(handle)?;
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
    // A change that keeps the memory (a protection) keeps its mappings' tracking too.
    let replaces = change.detaches_views();
    let arena = state.live_mut()?.arena_mut(operation)?;
    if let Some((view_start, view_end)) = in_use {
        arena.hold_in_use(view_start, view_end);
    }
    let applied = arena.apply(change, in_use.is_some());
    let held = arena.has_held();
    if replaces {
        // Guest memory the kernel tracks, replaced under the guest table (or
        // reserved again after a failure): what was mapped anew is tracked
        // again and reported changed.
        state.dirty_mapped_anew(start, end);
    }
    applied?;
    Ok(held)
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
/// holds ranges until `reclaim` (`registry.rs`) (views the arena's own object made there).
pub fn guest_add<'fd>(
    handle: f64,
    add: GuestAdd,
    plan: impl FnOnce(&MemoryMappingArena) -> Result<Change<'fd>>,
) -> Result<(u32, bool)> {
    const OPERATION: &str = "addRegion";
    let region = registry::get(handle)?;
    let mut state = region.keep.lock();
    state.live()?.arena(OPERATION)?;
    state.guest().check_free(add.start, add.size)?;
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
    if let Err(e) = state.dirty_region_added(add.start, add.size) {
        let removal = state
            .live()?
            .arena(OPERATION)?
            .plan_removal(add.start, add.size)?;
        apply(&region, &mut state, OPERATION, removal)?;
        return Err(e);
    }
    let GuestRegion { slot, .. } =
        state
            .guest_mut()
            .insert(add.start, add.size, add.protection, add.backing)?;
    // A region plugged in after the last snapshot is in none of it: all its
    // pages are new (marked here, under the lock, whoever asked).
    state.dirty_changed(add.start, add.start + add.size);
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
        |state| {
            let r = state.guest_mut().remove(start)?;
            state.dirty_region_removed(r.start, r.size);
            Ok(())
        },
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
        |state| state.guest_mut().set_protection(start, protection),
    )
}

/// A change (the protocol of [`change`]) of the whole guest region that
/// starts at `start`, then `record`ed in the table.
fn guest_region_change<'fd>(
    handle: f64,
    start: usize,
    operation: &'static str,
    plan: impl FnOnce(&MemoryMappingArena, GuestRegion) -> mapped_region::Result<Change<'fd>>,
    record: impl FnOnce(&mut State) -> mapped_region::Result<()>,
) -> Result<bool> {
    let region = registry::get(handle)?;
    let mut state = region.keep.lock();
    state.live()?;
    let r = state.guest().starting_at(start)?;
    let change = plan(state.live()?.arena(operation)?, r)?;
    let held = apply(&region, &mut state, operation, change)?;
    record(&mut state)?;
    Ok(held)
}

/// The guest regions of the arena behind `handle`, sorted by guest address.
pub fn guest_regions(handle: f64) -> Result<Vec<GuestRegion>> {
    let region = registry::get(handle)?;
    let state = region.keep.lock();
    state.live()?;
    Ok(state.guest().regions().to_vec())
}
