//! `NativeSharedMemory`: the binding class behind the facade's `SharedMemory`.

use mapped_region::{Error, SharedMemory};
use napi::Env;
use napi_derive::napi;

use crate::args;
use crate::errors::{js, throw};

#[napi]
pub struct NativeSharedMemory {
    shm: Option<SharedMemory>,
    size: f64,
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
        hugetlb: bool,
    ) -> napi::Result<Self> {
        let size = js(&env, args::index("size", size))?;
        let shm = js(
            &env,
            SharedMemory::create(&name, size as u64, seal, hugetlb),
        )?;
        Ok(NativeSharedMemory {
            shm: Some(shm),
            size: size as f64,
        })
    }

    fn get(&self, env: &Env) -> napi::Result<&SharedMemory> {
        self.shm.as_ref().ok_or_else(|| throw(env, &Error::Closed))
    }

    #[napi(getter)]
    pub fn fd(&self, env: Env) -> napi::Result<i32> {
        Ok(self.get(&env)?.fd())
    }

    #[napi(getter)]
    pub fn size(&self) -> f64 {
        self.size
    }

    #[napi]
    pub fn seals(&self, env: Env) -> napi::Result<i32> {
        let shm = self.get(&env)?;
        js(&env, shm.seals())
    }

    #[napi]
    pub fn add_seals(&self, env: Env, seals: i32) -> napi::Result<()> {
        let shm = self.get(&env)?;
        js(&env, shm.add_seals(seals))
    }

    /// Closes the memfd. Mappings of it stay valid. Idempotent.
    #[napi]
    pub fn close(&mut self) {
        self.shm = None;
    }

    #[napi(getter)]
    pub fn closed(&self) -> bool {
        self.shm.is_none()
    }
}
