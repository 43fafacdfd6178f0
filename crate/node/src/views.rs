//! Zero-copy views: external `Buffer`s over a region's memory, each holding
//! the region's [`Keep`] until collected, and detached (length 0) before any
//! change to the memory under them.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use mapped_region::{Error, Window};
use napi::sys;

use crate::convert;
use crate::errors::{Failure, Result};
use crate::state::Keep;

/// The test-only switch: with `MAPPED_REGION_TEST_NO_EXTERNAL=1` in the
/// environment when the addon loads, every external buffer the addon would
/// make (views, windows, shared views, the scratch slots) gets the status a
/// runtime that forbids them returns, `napi_no_external_buffers_allowed`, so
/// that the suite runs the same paths as on such a runtime (none can be
/// installed here). Not an option for users.
const TEST_SWITCH: &str = "MAPPED_REGION_TEST_NO_EXTERNAL";

/// Whether external buffers are refused in this process: by the test switch
/// (read once, at the addon's first use), or because the runtime refused one
/// (it never starts accepting them later).
fn refused_flag() -> &'static AtomicBool {
    static REFUSED: OnceLock<AtomicBool> = OnceLock::new();
    REFUSED.get_or_init(|| AtomicBool::new(std::env::var_os(TEST_SWITCH).is_some_and(|v| v == "1")))
}

/// Whether this runtime (or the test switch) refuses external buffers: then
/// `view()` and `sharedView()` throw `ERR_MMAP_NO_EXTERNAL`, typed access gets
/// no window, and the scratch slots are an ordinary `ArrayBuffer`.
pub fn external_refused() -> bool {
    refused_flag().load(Ordering::Relaxed)
}

/// The status of an attempt to make an external buffer: the runtime's own,
/// or the refusal's where external buffers are known to be refused (never
/// calling `make`, as a runtime that refuses them never takes the finalizer
/// hint). Remembers a refusal for the process.
pub fn external_status(make: impl FnOnce() -> sys::napi_status) -> sys::napi_status {
    if external_refused() {
        return sys::Status::napi_no_external_buffers_allowed;
    }
    let status = make();
    if status == sys::Status::napi_no_external_buffers_allowed {
        refused_flag().store(true, Ordering::Relaxed);
    }
    status
}

/// A view's key in its object's list: `(start, id)`.
pub type ViewKey = (usize, u64);

/// Where the finalizers of an object's views post the views collected:
/// `(slot, id)`. The object takes them out (and deletes their weak
/// references) the next time it touches its list, on its own thread.
///
/// A finalizer never touches the list itself, nor calls N-API: Node runs an
/// external buffer's finalizer on the JS thread once the event loop turns,
/// but Deno (2.9) runs it from V8's backing-store deleter — on a GC helper
/// thread when the buffer is collected, and synchronously inside
/// `napi_detach_arraybuffer` — where deleting a reference corrupts V8's
/// global handles (`Check failed: node->IsInUse()`, or `SIGSEGV`). See
/// `docs/upstream/deno-napi-external-finalizer-thread.md`.
#[derive(Default)]
struct Mailbox {
    /// Whether `collected` may have entries (checked without the lock).
    pending: AtomicBool,
    collected: Mutex<Vec<(usize, u64)>>,
}

impl Mailbox {
    /// A view `(slot, id)` was collected; callable on any thread.
    fn post(&self, slot: usize, id: u64) {
        let mut collected = self.collected.lock().unwrap_or_else(|e| e.into_inner());
        collected.push((slot, id));
        self.pending.store(true, Ordering::Release);
    }

    /// Takes every view posted so far.
    fn take(&self) -> Vec<(usize, u64)> {
        if !self.pending.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut collected = self.collected.lock().unwrap_or_else(|e| e.into_inner());
        self.pending.store(false, Ordering::Release);
        collected.split_off(0)
    }
}

thread_local! {
    /// Set while this thread detaches a buffer: a runtime that runs the
    /// buffer's finalizer from inside `napi_detach_arraybuffer` (Deno) runs
    /// it while the caller may hold the region's lock, and the caller
    /// forgets the view's record itself.
    static DETACHING: Cell<bool> = const { Cell::new(false) };
}

/// No slot: the end of a list.
const NIL: usize = usize::MAX;

/// A view in its object's list, or a free slot (`id == 0`).
struct Slot {
    start: usize,
    end: usize,
    /// The view's id, unique in its object (from 1); 0 when free.
    id: u64,
    /// A weak reference to its `ArrayBuffer`.
    buffer: sys::napi_ref,
    /// The views before and after it that start at the same offset.
    prev: usize,
    next: usize,
}

/// The views of a region, detached on every change under them. Each view has
/// a slot that does not move while it lives (its finalizer finds it there);
/// views that start at the same offset are linked together, and the offsets
/// are ordered, so that a change finds the views it overlaps without looking
/// at the others: those start before its end and no more than the longest
/// view's length before its start. Making a view at an offset that already
/// has one touches no ordered-map node.
pub struct Views {
    env: sys::napi_env,
    /// Views collected since the list was last touched (see [`Mailbox`]).
    mailbox: Arc<Mailbox>,
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// The first slot of the views starting at each offset.
    starts: BTreeMap<usize, usize>,
    next: u64,
    /// The longest view's length (never lowered: a bound, not an exact figure).
    longest: usize,
    /// The facade's own windows for typed access (`[start, end)`, weak
    /// reference): few, never handed to user code, and only touched by
    /// built-ins that cannot call back into JavaScript (a `DataView` load or
    /// store, an `Atomics` operation, all with numbers already checked).
    /// Detached like views, but a detached window never leaves memory held.
    windows: Vec<(usize, usize, sys::napi_ref)>,
}

impl Views {
    /// No views yet, on `env`.
    pub fn new(env: sys::napi_env) -> Views {
        Views {
            env,
            mailbox: Arc::default(),
            slots: Vec::new(),
            free: Vec::new(),
            starts: BTreeMap::new(),
            next: 1,
            longest: 0,
            windows: Vec::new(),
        }
    }

    /// Detaches every typed-access window (a region shared with other
    /// threads hands out none).
    pub fn detach_windows(&mut self) {
        self.detach_windows_in(0, usize::MAX);
    }

    fn detach_windows_in(&mut self, start: usize, end: usize) {
        if self.windows.is_empty() {
            return;
        }
        let env = self.env;
        self.windows.retain(|&(s, e, reference)| {
            let keep = s >= end || e <= start;
            if !keep {
                // SAFETY: a live reference created in `create_window` on this env,
                // dropped from the list here. No built-in holds a window's pointer
                // across JavaScript, so its memory need not stay held.
                unsafe { detach_and_delete(env, reference) };
            }
            keep
        });
    }

    /// The slots of the views in the list.
    fn used(&self) -> impl Iterator<Item = (usize, &Slot)> {
        self.slots.iter().enumerate().filter(|(_, s)| s.id != 0)
    }

    /// The views still alive: `(start, id, end)`.
    pub fn live(&mut self) -> Vec<(usize, u64, usize)> {
        self.prune();
        self.used()
            // SAFETY: each reference is live and was created on this env.
            .filter(|(_, s)| unsafe { !reference_value(self.env, s.buffer).is_null() })
            .map(|(_, s)| (s.start, s.id, s.end))
            .collect()
    }

    /// The slot the next [`Views::insert`] fills, with the id it gives.
    fn vacant(&self) -> (usize, u64) {
        (
            self.free.last().copied().unwrap_or(self.slots.len()),
            self.next,
        )
    }

    /// Puts a view in the list, in the slot and with the id [`Views::vacant`]
    /// gave (nothing else was put in since).
    fn insert(&mut self, start: usize, end: usize, buffer: sys::napi_ref) {
        let slot = self.free.pop().unwrap_or(self.slots.len());
        let head = self.starts.entry(start).or_insert(NIL);
        let next = std::mem::replace(head, slot);
        if next != NIL {
            self.slots[next].prev = slot;
        }
        let view = Slot {
            start,
            end,
            id: self.next,
            buffer,
            prev: NIL,
            next,
        };
        match self.slots.get_mut(slot) {
            Some(free) => *free = view,
            None => self.slots.push(view),
        }
        self.next += 1;
        self.longest = self.longest.max(end - start);
    }

    /// Takes the view in `slot` out of the list; returns its weak reference,
    /// which the caller deletes.
    fn unlink(&mut self, slot: usize) -> sys::napi_ref {
        let Slot {
            start,
            prev,
            next,
            buffer,
            ..
        } = self.slots[slot];
        if prev != NIL {
            self.slots[prev].next = next;
        } else if next != NIL {
            self.starts.insert(start, next);
        } else {
            self.starts.remove(&start);
        }
        if next != NIL {
            self.slots[next].prev = prev;
        }
        self.slots[slot].id = 0;
        self.free.push(slot);
        buffer
    }

    /// Detaches and forgets every view overlapping `[start, end)`. Returns the
    /// span of those still alive — code that took their pointers before (a
    /// built-in that called back into JavaScript) may still write anywhere in
    /// them, also outside `[start, end)` — and the `(start, id)` of every view
    /// forgotten.
    pub fn detach(&mut self, start: usize, end: usize) -> (Option<(usize, usize)>, Vec<ViewKey>) {
        if start >= end {
            return (None, Vec::new());
        }
        self.detach_windows_in(start, end);
        self.prune();
        if self.starts.is_empty() {
            return (None, Vec::new());
        }
        let mut hit = Vec::new();
        for (_, &head) in self.starts.range(start.saturating_sub(self.longest)..end) {
            let mut i = head;
            while i != NIL {
                if self.slots[i].end > start {
                    hit.push(i);
                }
                i = self.slots[i].next;
            }
        }
        let mut alive: Option<(usize, usize)> = None;
        let mut keys = Vec::with_capacity(hit.len());
        for i in hit {
            let (s, e, id) = (self.slots[i].start, self.slots[i].end, self.slots[i].id);
            let buffer = self.unlink(i);
            // SAFETY: `buffer` is a live reference created in `create` on this
            // env, out of the list now.
            if unsafe { detach_and_delete(self.env, buffer) } {
                alive = Some(alive.map_or((s, e), |(a, b)| (a.min(s), b.max(e))));
            }
            keys.push((s, id));
        }
        (alive, keys)
    }

    /// Forgets the view `id` in `slot`, whose buffer was collected (nothing
    /// if it was detached and forgotten before: the slot is free, or holds
    /// another view).
    fn collected(&mut self, slot: usize, id: u64) {
        if self.slots.get(slot).is_some_and(|s| s.id == id) {
            let buffer = self.unlink(slot);
            // SAFETY: the reference is ours, created on this env, and left the
            // list just now: deleted exactly once.
            unsafe { sys::napi_delete_reference(self.env, buffer) };
        }
    }

    /// Forgets every view whose finalizer has run since (see [`Mailbox`]).
    fn prune(&mut self) {
        for (slot, id) in self.mailbox.take() {
            self.collected(slot, id);
        }
    }
}

impl Drop for Views {
    fn drop(&mut self) {
        // The region's handle was released: its views may still be alive and
        // keep the memory (through their own `Arc<Keep>`); only the weak
        // references go away here.
        for slot in std::mem::take(&mut self.slots) {
            if slot.id != 0 {
                // SAFETY: each reference was created on `self.env` and is deleted once.
                unsafe { sys::napi_delete_reference(self.env, slot.buffer) };
            }
        }
        for (_, _, reference) in std::mem::take(&mut self.windows) {
            // SAFETY: as above.
            unsafe { sys::napi_delete_reference(self.env, reference) };
        }
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
            let was = DETACHING.with(|d| d.replace(true));
            sys::napi_detach_arraybuffer(env, value);
            DETACHING.with(|d| d.set(was));
        }
        sys::napi_delete_reference(env, reference);
        !value.is_null()
    }
}

/// What a view holds until collected: the region, and for a view (not a
/// window) where it is listed. Touched by the finalizer on whatever thread
/// the runtime runs it: nothing here belongs to one thread.
struct Hold {
    keep: Arc<Keep>,
    view: Option<Listed>,
}

/// Where a view is listed: its object's mailbox, its slot there, and its
/// record's key (`(start, owner, id)`).
struct Listed {
    mailbox: Arc<Mailbox>,
    slot: usize,
    key: (usize, u64, u64),
}

/// Finalizer of a view: forgets its record and releases its share of the
/// region at once (both thread-safe: the region's lock), and posts the view to
/// its object's [`Mailbox`], so that the object forgets its entry, on its own
/// thread, the next time it touches its list (a view, a window, a change, a
/// close).
///
/// No N-API call and nothing of the object's thread is touched here: Node
/// runs this on the JS thread once the event loop turns, but Deno runs it on
/// a GC helper thread, or inside `napi_detach_arraybuffer` while a change
/// holds the region's lock (the change forgets the record itself then).
// The finalizer may run on any thread.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<Hold>();
};

unsafe extern "C" fn finalize_view(_env: sys::napi_env, _data: *mut c_void, hint: *mut c_void) {
    // SAFETY: `hint` is the `Box<Hold>` leaked in `external`; the runtime
    // calls this finalizer exactly once per buffer. `Hold` is `Send`.
    let hold = unsafe { Box::from_raw(hint.cast::<Hold>()) };
    if let Some(listed) = &hold.view {
        if !DETACHING.with(Cell::get) {
            hold.keep.view_collected(listed.key);
        }
        listed.mailbox.post(listed.slot, listed.key.2);
    }
}

impl Views {
    /// A zero-copy `Buffer` over `[offset, offset + length)` of the region
    /// `keep` (mapped at `base`), made by its object `owner` (whose views
    /// these are); the range must be mapped `READ | WRITE`.
    ///
    /// # Safety
    /// `env` must be the live env of the current call, on the region's thread.
    pub unsafe fn create(
        &mut self,
        env: sys::napi_env,
        keep: &Arc<Keep>,
        base: usize,
        owner: u64,
        offset: f64,
        length: f64,
    ) -> Result<sys::napi_value> {
        self.prune();
        let (slot, id) = self.vacant();
        // Checked and, once the region is shared, recorded under one lock: no
        // other thread can change the range between the two.
        let (offset, length, key) = {
            let mut state = keep.lock();
            let r = state.live()?;
            let offset = convert::index("offset", offset)?;
            let length = convert::index("length", length)?;
            r.check_view(offset, length)?;
            let key = (offset, owner, id);
            state.record_view(key, offset + length);
            (offset, length, key)
        };
        let listed = Listed {
            mailbox: Arc::clone(&self.mailbox),
            slot,
            key,
        };
        // SAFETY: the range was checked just above, on this call's env, and is
        // recorded (if shared) so that no other thread changes it.
        let made = unsafe { external(env, keep, base, offset, length, Some(listed)) };
        let (buffer, reference) = made.inspect_err(|_| keep.lock().forget_view(key))?;
        self.insert(offset, offset + length, reference);
        Ok(buffer)
    }
}

/// The largest window a typed access gets: a power of two, so that the
/// facade's index check is one `>>> 0` and every window fits a `Buffer` in
/// every supported Node (4 GiB on Node 20).
const WINDOW: usize = 1 << 30;

/// A window for the facade's typed accesses around `offset` (see
/// `AnyRegion::window`): `[start, length, buffer]` where memory there may be
/// touched directly; `[start, length, undefined]` where it may not (until the
/// next change); `undefined` in a hole or out of bounds.
///
/// # Safety
/// `env` must be the live env of the current call, on the region's thread.
pub unsafe fn create_window(
    env: sys::napi_env,
    keep: &Arc<Keep>,
    base: usize,
    views: &RefCell<Views>,
    offset: f64,
) -> Result<sys::napi_value> {
    let window = {
        let state = keep.lock();
        let window = state
            .live()?
            .window(convert::index("offset", offset)?, WINDOW);
        // Another thread could change memory under a window and could not
        // detach it: a shared region hands out none.
        window.map(|w| Window {
            direct: w.direct && !state.shared(),
            ..w
        })
    };
    let Some(window) = window else {
        return Ok(ptr::null_mut());
    };
    let length = window.end - window.start;
    // Where external buffers are refused there is no window: the facade takes
    // the checked copy, and atomics the native checked path.
    let buffer = if window.direct && !external_refused() {
        let mut views = views.borrow_mut();
        views.prune();
        if views.windows.len() >= 8 {
            let env = views.env;
            views.windows.retain(|&(_, _, reference)| {
                // SAFETY: live references created on this env.
                let alive = unsafe { !reference_value(env, reference).is_null() };
                if !alive {
                    // SAFETY: deleted once, and dropped from the list.
                    unsafe { sys::napi_delete_reference(env, reference) };
                }
                alive
            });
        }
        // SAFETY: `window.direct`: the range is mapped read-write and cannot fault.
        match unsafe { external(env, keep, base, window.start, length, None) } {
            Ok((buffer, reference)) => {
                views.windows.push((window.start, window.end, reference));
                buffer
            }
            // Refused by the runtime just now: no window, as above.
            Err(Failure::NoExternal) => ptr::null_mut(),
            Err(e) => return Err(e),
        }
    } else {
        ptr::null_mut()
    };
    let mut out = ptr::null_mut();
    // SAFETY: a three-element array on this call's env.
    unsafe {
        sys::napi_create_array_with_length(env, 3, &mut out);
        let mut value = ptr::null_mut();
        sys::napi_create_double(env, window.start as f64, &mut value);
        sys::napi_set_element(env, out, 0, value);
        sys::napi_create_double(env, length as f64, &mut value);
        sys::napi_set_element(env, out, 1, value);
        if !buffer.is_null() {
            sys::napi_set_element(env, out, 2, buffer);
        }
    }
    Ok(out)
}

/// An external `Buffer` over `[offset, offset + length)` of the region `keep`
/// (mapped at `base`), holding
/// its [`Keep`] (and its record's `key`, for a view) until collected, and a
/// weak reference to its `ArrayBuffer`. If it fails after the runtime took
/// the hint, the finalizer has run (and forgotten the record).
///
/// # Safety
/// `env` must be the live env of the current call; the range must be inside
/// the region and mapped read-write (its memory is touched directly).
unsafe fn external(
    env: sys::napi_env,
    keep: &Arc<Keep>,
    base: usize,
    offset: usize,
    length: usize,
    view: Option<Listed>,
) -> Result<(sys::napi_value, sys::napi_ref)> {
    let hint = Box::into_raw(Box::new(Hold {
        keep: Arc::clone(keep),
        view,
    }));
    let mut buffer = ptr::null_mut();
    // The memory stays mapped while the buffer lives: `hint` keeps the region
    // alive until `finalize_view`, and every change to the range detaches it
    // first.
    // SAFETY: the range is inside the region and mapped read-write, and `env`
    // is live (both guaranteed by the caller).
    let status = external_status(|| unsafe {
        sys::napi_create_external_buffer(
            env,
            length,
            (base + offset) as *mut c_void,
            Some(finalize_view),
            hint.cast(),
            &mut buffer,
        )
    });
    if status != sys::Status::napi_ok {
        if status == sys::Status::napi_no_external_buffers_allowed {
            // SAFETY: the runtime refused before taking ownership of `hint`,
            // so the finalizer will never run for it.
            drop(unsafe { Box::from_raw(hint) });
            return Err(Failure::NoExternal);
        }
        // Otherwise Node already ran the finalizer (and thus freed `hint`); a
        // failure here means the length exceeds buffer.constants.MAX_LENGTH.
        let mut pending = ptr::null_mut();
        // SAFETY: clearing the exception Node left pending on this env.
        unsafe { sys::napi_get_and_clear_last_exception(env, &mut pending) };
        return Err(Error::OutOfRange {
            what: "length",
            reason: format!("It must be <= buffer.constants.MAX_LENGTH. Received {length}"),
        }
        .into());
    }
    let mut array_buffer = ptr::null_mut();
    let mut reference = ptr::null_mut();
    // SAFETY: `buffer` is the Uint8Array just created; the weak reference is
    // taken on its ArrayBuffer so that every typed array over it is covered.
    unsafe {
        sys::napi_get_typedarray_info(
            env,
            buffer,
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            &mut array_buffer,
            ptr::null_mut(),
        );
        sys::napi_create_reference(env, array_buffer, 0, &mut reference);
    }
    Ok((buffer, reference))
}
