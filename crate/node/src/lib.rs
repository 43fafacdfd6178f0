//! The napi binding of mapped-region: converts JavaScript values, calls the
//! core crate (`crate/core`) and turns its typed errors into Node-style
//! JavaScript errors through one table. No memory logic lives here.
//!
//! - [`entries`]: every call on a region, registered with raw N-API; their
//!   typings are generated from the declarations there.
//! - [`state`]: a region's state, shared by its owners in every thread, its
//!   views and its pending operations; every rule about that state.
//! - [`registry`]: this thread's objects behind numeric handles, closing, and
//!   what the thread's end leaves.
//! - [`change`]: the protocol of a change to an arena (plain or a guest region).
//! - [`dirty`]: kernel dirty tracking of a guest memory's regions.
//! - [`share`]: regions shared between threads (`share`/`attach`).
//! - [`views`]: zero-copy `Buffer`s and their lifetimes.
//! - [`tasks`]: asynchronous operations on the libuv thread pool.
//! - [`shared`]: `SharedArrayBuffer` views, each pinning its range until collected.
//! - [`errors`]: the error table and the codes.
//! - [`convert`]: JavaScript numbers to the core's integers.
//! - [`records`], [`shm`]: the records returned, and `SharedMemory` (napi-rs,
//!   called once per object, not per operation).

// Under `cfg(test)` napi-derive generates no module registration, so every
// exported function looks unused to the compiler; the binding is tested
// through the ava suite, not `cargo test`.
#![cfg_attr(test, allow(dead_code))]

pub mod change;
pub mod convert;
pub mod dirty;
pub mod entries;
pub mod errors;
pub mod records;
pub mod registry;
pub mod scratch;
pub mod share;
pub mod shared;
pub mod shm;
pub mod state;
pub mod tasks;
pub mod views;

use napi::bindgen_prelude::Object;
use napi::{Env, JsValue};
use napi_derive::napi;

use crate::errors::to_napi;
use crate::records::MapCount;

/// The system page size.
#[napi]
pub fn page_size() -> u32 {
    mapped_region::page_size() as u32
}

/// Whether `value` is a multiple of the page size (the core's alignment rule,
/// for facade checks of values that reach no native call as an offset).
#[napi]
pub fn is_page_aligned(value: f64) -> bool {
    value >= 0.0 && mapped_region::rules::check_aligned("value", value as u64).is_ok()
}

/// Registers the entry points.
#[napi(module_exports)]
pub fn init(exports: Object, env: Env) -> napi::Result<()> {
    // SAFETY: the env and exports object of this module's initialisation.
    unsafe { entries::register(env.raw(), exports.raw()) }
}

/// The TypeScript declarations of the raw entry points (for
/// `scripts/typings.mjs`, which appends them to `index.d.ts`).
#[cfg(feature = "codegen")]
#[napi(skip_typescript)]
pub fn entry_typings() -> String {
    entries::typings()
}

/// `ts/calls.ts`, the facade's functions that call the entry points (for
/// `scripts/typings.mjs`, which writes it).
#[cfg(feature = "codegen")]
#[napi(skip_typescript)]
pub fn entry_calls() -> String {
    entries::calls()
}

/// Counts the process's kernel mappings against `vm.max_map_count`.
#[napi]
pub fn map_count(env: Env) -> napi::Result<MapCount> {
    use mapped_region::budget;
    let process = budget::process_map_count().map_err(|e| to_napi(&env, e.into()))?;
    Ok(MapCount {
        process: process as u32,
        owned: budget::owned_map_count() as u32,
        limit: budget::max_map_count() as u32,
        headroom: budget::headroom() as u32,
    })
}
