//! `NativeSharedMemory`: the binding class behind the facade's `SharedMemory`
//! (napi-rs: one object per memfd, no per-operation cost that matters).

use mapped_region::rules::HugePages;
use mapped_region::{Error, SharedMemory};
use napi::Env;
use napi_derive::napi;

use crate::convert;
use crate::errors::{to_napi, Result};

/// A sealed memfd.
#[napi]
pub struct NativeSharedMemory {
    shm: Option<SharedMemory>,
    size: f64,
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
        Ok(NativeSharedMemory {
            shm: Some(shm),
            size: size as f64,
        })
    }

    fn get(&self) -> Result<&SharedMemory> {
        Ok(self.shm.as_ref().ok_or(Error::Closed)?)
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
        self.shm = None;
    }

    /// Whether it was closed.
    #[napi(getter)]
    pub fn closed(&self) -> bool {
        self.shm.is_none()
    }
}
