//! The napi glue: thin classes that convert arguments, call the core crate and
//! turn its typed errors into Node-style JS errors. No memory logic lives here.

// Under `cfg(test)` napi-derive generates no module registration, so every
// exported function looks unused to the compiler; the glue is tested through the
// ava suite, not `cargo test`.
#![cfg_attr(test, allow(dead_code))]

mod args;
mod errors;
mod fast;
mod region;
mod shm;

use napi::bindgen_prelude::Object;
use napi::{Env, JsValue};
use napi_derive::napi;

/// The system page size.
#[napi]
pub fn page_size() -> u32 {
    mapped_region::page_size() as u32
}

/// Registers the hot-path functions that bypass napi-rs's argument handling.
#[napi(module_exports)]
pub fn init(exports: Object, env: Env) -> napi::Result<()> {
    fast::register(&env, exports.raw())
}

/// The process's map-count budget, see `mapCount()` in the facade.
#[napi(object)]
pub struct MapCount {
    /// Mappings in the whole process now (`/proc/self/maps`).
    pub process: u32,
    /// Mappings owned by this library (arenas with their holes, mappings).
    pub owned: u32,
    /// `vm.max_map_count`.
    pub limit: u32,
    /// Mappings kept free for the runtime: overlays are refused within this of the limit.
    pub headroom: u32,
}

/// Counts the process's mappings against `vm.max_map_count`.
#[napi]
pub fn map_count(env: napi::Env) -> napi::Result<MapCount> {
    use mapped_region::budget;
    let process = errors::js(&env, budget::process_map_count())?;
    Ok(MapCount {
        process: process as u32,
        owned: budget::owned_map_count() as u32,
        limit: budget::max_map_count() as u32,
        headroom: budget::headroom() as u32,
    })
}
