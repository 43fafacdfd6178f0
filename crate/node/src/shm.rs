//! `NativeSharedMemory`: the binding class behind the facade's `SharedMemory`
//! (napi-rs: one object per memfd, no per-operation cost that matters).

use std::cell::RefCell;
use std::rc::Rc;

use mapped_region::rules::HugePages;
use mapped_region::{Error, SharedMemory};
use napi::Env;
use napi_derive::napi;

use crate::convert;
use crate::errors::{to_napi, Result};

/// A sealed memfd.
#[napi]
pub struct NativeSharedMemory {
    shm: Option<Rc<SharedMemory>>,
    size: f64,
    /// Its entry in this thread's [`sources`] table, for overlays.
    source: f64,
}

/// The open `SharedMemory`s of this thread, by the number the facade passes
/// to `regionAddShmMapping` (an index; a closed one's slot is emptied and
/// never reused, so a stale number finds nothing).
mod sources {
    use super::*;

    thread_local! {
        static TABLE: RefCell<Vec<Option<Rc<SharedMemory>>>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn insert(shm: Rc<SharedMemory>) -> f64 {
        TABLE.with_borrow_mut(|t| {
            t.push(Some(shm));
            (t.len() - 1) as f64
        })
    }

    pub(super) fn remove(source: f64) {
        let removed = TABLE.with_borrow_mut(|t| {
            let i = crate::convert::int_in(source, 0.0, t.len() as f64 - 1.0)?;
            t.get_mut(i as usize)?.take()
        });
        drop(removed);
    }

    /// The open `SharedMemory` registered as `source` on this thread.
    pub fn get(source: f64) -> Option<Rc<SharedMemory>> {
        TABLE.with_borrow(|t| {
            let i = crate::convert::int_in(source, 0.0, t.len() as f64 - 1.0)?;
            t.get(i as usize)?.clone()
        })
    }
}

/// The open `SharedMemory` the facade registered as `source` (an overlay's
/// source), or `ERR_MMAP_CLOSED`.
pub fn source(source: f64) -> std::result::Result<Rc<SharedMemory>, Error> {
    sources::get(source).ok_or(Error::Closed)
}

fn js<T>(env: &Env, result: Result<T>) -> napi::Result<T> {
    result.map_err(|f| to_napi(env, f))
}

#[napi]
impl NativeSharedMemory {
    /// `memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING)`, sized, sealed.
    #[napi(factory)]
    pub fn create(
        env: Env,
        name: String,
        size: f64,
        seal: bool,
        hugetlb: u32,
    ) -> napi::Result<Self> {
        // 0: no huge pages; 1: the default size; 2: 2 MiB; 3: 1 GiB.
        let hugetlb = match hugetlb {
            0 => None,
            1 => Some(HugePages::Default),
            2 => Some(HugePages::Size2M),
            _ => Some(HugePages::Size1G),
        };
        let created = convert::index("size", size).and_then(|size| {
            Ok(SharedMemory::create(&name, size as u64, seal, hugetlb).map(|shm| (shm, size))?)
        });
        let (shm, size) = js(&env, created)?;
        let shm = Rc::new(shm);
        Ok(NativeSharedMemory {
            source: sources::insert(Rc::clone(&shm)),
            shm: Some(shm),
            size: size as f64,
        })
    }

    fn get(&self) -> Result<&SharedMemory> {
        Ok(self.shm.as_deref().ok_or(Error::Closed)?)
    }

    /// The number `regionAddShmMapping` takes for this memfd (on this thread).
    #[napi(getter)]
    pub fn source(&self) -> f64 {
        self.source
    }

    /// The memfd's number.
    #[napi(getter)]
    pub fn fd(&self, env: Env) -> napi::Result<i32> {
        js(&env, self.get().map(SharedMemory::fd))
    }

    /// The size in bytes.
    #[napi(getter)]
    pub fn size(&self) -> f64 {
        self.size
    }

    /// The current seals.
    #[napi]
    pub fn seals(&self, env: Env) -> napi::Result<i32> {
        js(&env, self.get().and_then(|shm| Ok(shm.seals()?)))
    }

    /// Adds seals (`F_ADD_SEALS`).
    #[napi]
    pub fn add_seals(&self, env: Env, seals: f64) -> napi::Result<()> {
        js(
            &env,
            self.get()
                .and_then(|shm| Ok(shm.add_seals(convert::seals(seals)?)?)),
        )
    }

    /// Closes the memfd. Mappings of it stay valid. Idempotent.
    #[napi]
    pub fn close(&mut self) {
        sources::remove(self.source);
        self.shm = None;
    }

    /// Whether it was closed.
    #[napi(getter)]
    pub fn closed(&self) -> bool {
        self.shm.is_none()
    }
}

impl Drop for NativeSharedMemory {
    /// Collected without `close()`: its source entry goes with it.
    fn drop(&mut self) {
        sources::remove(self.source);
    }
}
