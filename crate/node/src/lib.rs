//! The napi glue: thin classes that convert arguments, call the core crate and
//! turn its typed errors into Node-style JS errors. No memory logic lives here.

mod args;
mod errors;
mod region;
mod shm;

use napi_derive::napi;

/// The system page size.
#[napi]
pub fn page_size() -> u32 {
    mapped_region::page_size() as u32
}
