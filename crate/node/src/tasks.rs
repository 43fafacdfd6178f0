//! Asynchronous operations on the libuv thread pool (`msyncAsync`,
//! `populateAsync`). Each registers its range as pending on the region until
//! it settles: changes over the range are refused with `ERR_MMAP_BUSY`, and a
//! `close()` meanwhile unmaps only when the last one settles.

use std::sync::Arc;

use mapped_region::{Error, PageRange};
use napi::bindgen_prelude::AsyncTask;
use napi::{Env, Task};
use napi_derive::napi;

use crate::convert;
use crate::errors::{rejection, to_napi, Failure, Result};
use crate::handles::{self, Keep, Pending};

/// A range registered as pending on its region until dropped.
pub struct Lease {
    keep: Arc<Keep>,
    id: u64,
    range: PageRange,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let released = {
            let mut state = self.keep.lock();
            state.pending.retain(|p| p.id != self.id);
            state.take_if_done()
        };
        // Unmaps outside the lock if the region was closed meanwhile.
        drop(released);
    }
}

/// Registers an asynchronous operation over `[offset, offset + size)`.
fn lease(handle: f64, offset: f64, size: f64) -> Result<Lease> {
    let region = handles::get(handle)?;
    let mut state = region.keep.lock();
    let r = state.live()?.region();
    let start = convert::index("offset", offset)?;
    let range = r.page_range(start, convert::index("size", size)?)?;
    let id = state.next_id;
    state.next_id += 1;
    state.pending.push(Pending {
        id,
        start,
        end: start + range.len(),
    });
    Ok(Lease {
        keep: Arc::clone(&region.keep),
        id,
        range,
    })
}

/// What a task does on the thread pool.
pub enum Op {
    /// `msync(MS_SYNC)`.
    Msync,
    /// `MADV_POPULATE_READ`, or `_WRITE` with `write`.
    Populate {
        /// Prefault for writing.
        write: bool,
    },
}

/// One asynchronous operation over a leased range.
pub struct RangeTask {
    lease: Lease,
    op: Op,
    error: Option<Error>,
}

impl Task for RangeTask {
    type Output = ();
    type JsValue = ();

    fn compute(&mut self) -> napi::Result<()> {
        let range = &self.lease.range;
        // SAFETY: the range was validated when the task started and is leased:
        // overlays and removals over it are refused, and `close()` leaves it
        // mapped until this task's lease is dropped.
        let result = unsafe {
            match self.op {
                Op::Msync => range.msync(),
                Op::Populate { write } => range.populate(write),
            }
        };
        result.map_err(|e| {
            self.error = Some(e);
            napi::Error::from_status(napi::Status::GenericFailure)
        })
    }

    fn resolve(&mut self, _env: Env, _output: ()) -> napi::Result<()> {
        Ok(())
    }

    fn reject(&mut self, env: Env, err: napi::Error) -> napi::Result<()> {
        match self.error.take() {
            Some(e) => Err(rejection(&env, &Failure::Core(e))),
            None => Err(err),
        }
    }
}

fn start(
    env: &Env,
    handle: f64,
    offset: f64,
    size: f64,
    op: Op,
) -> napi::Result<AsyncTask<RangeTask>> {
    let lease = lease(handle, offset, size).map_err(|f| to_napi(env, f))?;
    Ok(AsyncTask::new(RangeTask {
        lease,
        op,
        error: None,
    }))
}

/// `msync(MS_SYNC)` on the libuv thread pool.
#[napi(ts_return_type = "Promise<void>")]
pub fn region_msync_async(
    env: Env,
    handle: f64,
    offset: f64,
    size: f64,
) -> napi::Result<AsyncTask<RangeTask>> {
    start(&env, handle, offset, size, Op::Msync)
}

/// `MADV_POPULATE_READ`/`_WRITE` on the libuv thread pool.
#[napi(ts_return_type = "Promise<void>")]
pub fn region_populate_async(
    env: Env,
    handle: f64,
    offset: f64,
    size: f64,
    write: bool,
) -> napi::Result<AsyncTask<RangeTask>> {
    start(&env, handle, offset, size, Op::Populate { write })
}
