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
