//! Asynchronous operations on the libuv thread pool (`msyncAsync`,
//! `populateAsync`, `loadFileAsync`, a snapshot's dump and a diff's load):
//! the tasks the entry points (`entries.rs`) start and return as promises.
//! Each registers its range as pending on the region until it settles:
//! changes over the range are refused with `ERR_MMAP_BUSY`, and a `close()`
//! meanwhile unmaps only when the last one settles.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use mapped_region::rules::check_eof;
use mapped_region::{
    extend_file, file_load_length, file_size, AnyRegion, Error, IoRange, PageRange,
};
use napi::bindgen_prelude::AsyncTask;
use napi::{Env, Task};

use crate::convert;
use crate::errors::{rejection, Failure, Result};
use crate::registry;
use crate::state::Keep;

/// A range registered as pending on its region until dropped.
pub struct Lease {
    keep: Arc<Keep>,
    id: u64,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let released = self.keep.lock().settle(self.id);
        // Unmaps outside the lock if the region was closed meanwhile.
        drop(released);
    }
}

/// Registers an asynchronous operation over the range `check` validates on
/// the live region: it returns what the task works on and the byte range
/// `[start, end)` it needs kept as it is.
pub(crate) fn lease<T>(
    handle: f64,
    check: impl FnOnce(&AnyRegion) -> Result<(T, usize, usize)>,
) -> Result<(Lease, T)> {
    lease_ranges(handle, |r| {
        let (target, start, end) = check(r)?;
        Ok((target, vec![(start, end)]))
    })
}

/// As [`lease`], for an operation over several byte ranges (a snapshot of
/// every region): each is pending until the operation settles.
fn lease_ranges<T>(
    handle: f64,
    check: impl FnOnce(&AnyRegion) -> Result<(T, Vec<(usize, usize)>)>,
) -> Result<(Lease, T)> {
    let region = registry::get(handle)?;
    let mut state = region.keep.lock();
    let (target, ranges) = check(state.live()?)?;
    let id = state.lease(ranges);
    let lease = Lease {
        keep: Arc::clone(&region.keep),
        id,
    };
    Ok((lease, target))
}

/// Registers an operation over the pages touched by `[offset, offset + size)`.
fn lease_pages(handle: f64, offset: f64, size: f64) -> Result<(Lease, PageRange)> {
    lease(handle, |r| {
        let start = convert::index("offset", offset)?;
        let range = r
            .region()
            .page_range(start, convert::index("size", size)?)?;
        Ok((range, start, start + range.len()))
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
    /// Held for its `Drop`: the range stays pending until the task is dropped.
    _lease: Lease,
    range: PageRange,
    op: Op,
    error: Option<Error>,
}

impl Task for RangeTask {
    type Output = ();
    type JsValue = ();

    fn compute(&mut self) -> napi::Result<()> {
        let range = &self.range;
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

fn start(handle: f64, offset: f64, size: f64, op: Op) -> Result<AsyncTask<RangeTask>> {
    let (lease, range) = lease_pages(handle, offset, size)?;
    Ok(AsyncTask::new(RangeTask {
        _lease: lease,
        range,
        op,
        error: None,
    }))
}

/// `msync(MS_SYNC)` of the pages of `[offset, offset + size)` on the libuv thread pool.
pub fn msync(handle: f64, offset: f64, size: f64) -> Result<AsyncTask<RangeTask>> {
    start(handle, offset, size, Op::Msync)
}

/// `MADV_POPULATE_READ`/`_WRITE` of the pages of `[offset, offset + size)` on
/// the libuv thread pool.
pub fn populate(handle: f64, offset: f64, size: f64, write: bool) -> Result<AsyncTask<RangeTask>> {
    start(handle, offset, size, Op::Populate { write })
}

/// What a [`FileIoTask`] does with each of its runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Io {
    /// `pread` into the region, stopping where the file ends (`loadFileAsync`).
    Load,
    /// `pread` into the region, every byte of which the file must hold (a diff).
    LoadWhole,
    /// `pwrite` from the region (a snapshot).
    Dump,
}

/// File I/O between a region and one file on the thread pool: `loadFileAsync`
/// (one run), a snapshot's dump or a diff's load (a run per page range). Every
/// run is leased until the task settles; the task owns a duplicate of the fd,
/// so the caller may close its own meanwhile.
pub struct FileIoTask {
    /// Held for its `Drop`: the runs stay pending until the task is dropped.
    _lease: Lease,
    runs: Vec<(IoRange, u64)>,
    fd: OwnedFd,
    io: Io,
    /// For a dump: the length the file is grown to (never shortened) at the end.
    file_len: u64,
    error: Option<Error>,
}

impl Task for FileIoTask {
    type Output = usize;
    type JsValue = f64;

    fn compute(&mut self) -> napi::Result<usize> {
        let mut moved = 0;
        let result = (|| {
            for (range, file_offset) in &self.runs {
                // Every run was checked (readable for a dump, writable for a
                // load) when the task started and is leased: changes over it are
                // refused and `close()` leaves it mapped until the lease is dropped.
                if self.io == Io::Dump {
                    // SAFETY: see above.
                    unsafe { range.dump(self.fd.as_fd(), *file_offset) }?;
                    moved += range.len();
                    continue;
                }
                // SAFETY: see above.
                let n = unsafe { range.load(self.fd.as_fd(), *file_offset) }?;
                // A diff's file was checked to hold every byte of every run; one
                // that shrank since is still reported.
                if self.io == Io::LoadWhole && n < range.len() {
                    return Err(Error::BeyondEof {
                        needed: file_offset + range.len() as u64,
                        file_size: file_offset + n as u64,
                    });
                }
                moved += n;
            }
            if self.io == Io::Dump {
                extend_file(self.fd.as_fd(), self.file_len)?;
            }
            Ok(moved)
        })();
        result.map_err(|e| {
            self.error = Some(e);
            napi::Error::from_status(napi::Status::GenericFailure)
        })
    }

    fn resolve(&mut self, _env: Env, moved: usize) -> napi::Result<f64> {
        Ok(moved as f64)
    }

    fn reject(&mut self, env: Env, err: napi::Error) -> napi::Result<f64> {
        match self.error.take() {
            Some(e) => Err(rejection(&env, &Failure::Core(e))),
            None => Err(err),
        }
    }
}

/// Starts a [`FileIoTask`] over `triples` (offset in the region, length, file
/// offset): each run checked and leased, the fd duplicated.
fn start_file_io(
    handle: f64,
    fd: BorrowedFd<'_>,
    io: Io,
    triples: &[(usize, usize, u64)],
    file_len: u64,
) -> Result<FileIoTask> {
    let (lease, runs) = lease_ranges(handle, |r| {
        let mut runs = Vec::with_capacity(triples.len());
        let mut leased = Vec::with_capacity(triples.len());
        for &(offset, len, file_offset) in triples {
            let range = if io == Io::Dump {
                r.dump_source(offset, len)?
            } else {
                r.load_target(offset, len)?
            };
            runs.push((range, file_offset));
            leased.push((offset, offset + len));
        }
        Ok((runs, leased))
    })?;
    let fd = fd.try_clone_to_owned().map_err(|e| Error::Syscall {
        syscall: "fcntl",
        errno: e.raw_os_error().unwrap_or(libc::EIO),
    })?;
    Ok(FileIoTask {
        _lease: lease,
        runs,
        fd,
        io,
        file_len,
        error: None,
    })
}

/// Reads `fd` from `file_offset` into `offset` on the libuv thread pool:
/// `length` bytes, or without it the rest of the file; resolves to the bytes loaded.
pub fn load_file(
    handle: f64,
    offset: f64,
    fd: f64,
    file_offset: f64,
    length: Option<f64>,
) -> Result<AsyncTask<FileIoTask>> {
    let (offset, file_offset) = (
        convert::index("offset", offset)?,
        convert::index("fileOffset", file_offset)? as u64,
    );
    let length = length.map(|l| convert::index("length", l)).transpose()?;
    // SAFETY: the borrow ends with this call; the task keeps a duplicate.
    let fd = unsafe { convert::borrow_fd(convert::fd(fd)?) };
    let length = file_load_length(fd, file_offset, length)?;
    start_file_io(handle, fd, Io::Load, &[(offset, length, file_offset)], 0).map(AsyncTask::new)
}

/// A batch of file I/O on the thread pool: `runs` is flat triples `(offset in
/// the region, length, file offset)`. With `dump`, each run of the region is
/// written to the file (`pwrite`), which is then grown to at least `file_len`;
/// otherwise each is read from the file into the region (`pread`), and a file
/// too short for any run is refused before anything is read. Resolves to the
/// bytes moved.
pub fn file_io(
    handle: f64,
    fd: f64,
    dump: bool,
    runs: &[f64],
    file_len: f64,
) -> Result<AsyncTask<FileIoTask>> {
    if !runs.len().is_multiple_of(3) {
        return Err(Failure::Core(Error::InvalidArgument {
            what: "runs",
            reason: "must hold (offset, length, file offset) triples".into(),
        }));
    }
    // SAFETY: the borrow ends with this call; the task keeps a duplicate.
    let fd = unsafe { convert::borrow_fd(convert::fd(fd)?) };
    let file_len = convert::index("fileLen", file_len)? as u64;
    let mut triples = Vec::with_capacity(runs.len() / 3);
    for t in runs.chunks_exact(3) {
        let offset = convert::index("offset", t[0])?;
        let len = convert::index("length", t[1])?;
        let file_offset = convert::index("fileOffset", t[2])? as u64;
        triples.push((offset, len, file_offset));
    }
    if !dump {
        // The run that reaches furthest into the file decides.
        let furthest = triples
            .iter()
            .max_by_key(|&&(_, len, off)| off.saturating_add(len as u64));
        if let (Some(&(_, len, off)), Some(size)) = (furthest, file_size(fd)?) {
            check_eof(off, len, size)?;
        }
    }
    let io = if dump { Io::Dump } else { Io::LoadWhole };
    start_file_io(handle, fd, io, &triples, file_len).map(AsyncTask::new)
}
