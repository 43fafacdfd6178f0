//! Regions shared between threads: `share()` puts a region's [`Keep`] in a
//! process-wide table under an id and a random token, and `attach()` in
//! another thread registers a new object over it (`registry.rs`). The table
//! holds weak references: an entry whose region is gone answers "stale", and
//! is dropped at the next `share()`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::convert;
use crate::errors::{Failure, Result};
use crate::registry;
use crate::state::Keep;

/// Shared regions: id to (token, region). An entry goes when its [`Keep`] does.
type ShareTable = Mutex<HashMap<u64, (u64, Weak<Keep>)>>;

fn share_table() -> &'static ShareTable {
    static TABLE: OnceLock<ShareTable> = OnceLock::new();
    TABLE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Share ids handed out so far (ids are 1, 2, …).
static SHARE_IDS: AtomicU64 = AtomicU64::new(1);

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
    let region = registry::get(handle)?;
    let mut views = region.views.borrow_mut();
    views.detach_windows();
    // The views this object made before: recorded like every later one.
    let arena = region.keep.mark_shared(region.owner, views.live())?;
    let (id, token) = region.keep.share_entry(|| {
        let id = SHARE_IDS.fetch_add(1, Ordering::Relaxed);
        let token = random_token();
        let mut table = share_table().lock().unwrap_or_else(|e| e.into_inner());
        table.retain(|_, (_, weak)| weak.strong_count() > 0);
        table.insert(id, (token, Arc::downgrade(&region.keep)));
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
    let span = keep.lock().add_owner(arena)?;
    Ok(registry::register(env, keep, span))
}

const MAX_SAFE: f64 = ((1u64 << 53) - 1) as f64;
