//! A pager: fills memory from a file on demand and in the background, the way
//! a VMM restores a guest lazily without mapping the snapshot file itself.
//!
//! How: the ranges (fresh anonymous or shared memory, nothing present yet)
//! are registered with a userfaultfd in missing mode. A thread of the pager
//! polls the descriptor: a fault on a page not yet present — by any thread of
//! the process, the kernel on its behalf (`read(2)` into the memory), or KVM
//! running a guest over it — waits in the kernel until the thread has read
//! the aligned block of pages around it from the file (`pread`) and placed it
//! with `UFFDIO_COPY`, which maps the pages and wakes the waiters in one
//! step. Between faults the thread fills the remaining pages in order (the
//! prefetch), skipping those a fault filled. When every page is in, it
//! unregisters the ranges, closes its duplicate of the file and ends: the
//! memory is then ordinary memory that no longer depends on the file.
//!
//! Missing mode and `UFFDIO_COPY` rather than minor mode and
//! `UFFDIO_CONTINUE`: minor faults are for pages already in the page cache
//! of shared memory (filled through another mapping first), which would need
//! a second mapping of every region and works for shared memory only;
//! missing mode serves anonymous memory and shared memory alike, and
//! `UFFDIO_COPY` fills a page atomically (no thread sees it half written).
//!
//! A page the file cannot supply (it was truncated or fails to read) is
//! filled with zeros, so that no fault waits for ever, and is recorded: the
//! [`PagerStatus::Done`] lists it. Stopping the pager (or dropping it) wakes
//! the thread, which unregisters the ranges and ends; faults waiting then are
//! woken by the kernel and the pages not filled read as zeros (what a missing
//! page of anonymous memory or of a memfd is).
//!
//! The pager needs a full userfaultfd: one made with `UFFD_USER_MODE_ONLY`
//! (what an unprivileged process may make) is not told of faults taken in
//! kernel mode — KVM's, a `read(2)` into the memory — which would fail with
//! `EFAULT` instead of waiting for their page. Where a full descriptor is
//! refused the pager is refused ([`Error::Paging`]).

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::sys::wp::{self, UffdMsg};
use crate::{sys, Error, MemSliceMut, Result};

/// Pages read and placed for one fault: the aligned block around it (fewer
/// at the end of a range).
const FAULT_PAGES: usize = 16;
/// Pages the prefetch reads and places between two looks at the faults.
const PREFETCH_PAGES: usize = 64;
/// The same while faults come (see [`BUSY_STEPS`]): a fault waits for the
/// step under way, so smaller steps answer it sooner, at the cost of more
/// calls per byte.
const PREFETCH_PAGES_BUSY: usize = 16;
/// Prefetch steps taken at [`PREFETCH_PAGES_BUSY`] after a fault was served.
const BUSY_STEPS: usize = 64;

/// One range of memory the pager fills: `len` bytes at `addr` (page aligned,
/// mapped, nothing present yet) from `len` bytes of the file at
/// `file_offset`. `tag` is how pages of it are named in
/// [`PagerStatus::Done`]'s list of pages the file could not supply (the
/// binding passes the guest address of the range).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagerRange {
    /// The range's first address in this process.
    pub addr: usize,
    /// Its length in bytes, a multiple of the page size.
    pub len: usize,
    /// Where its first byte is in the file.
    pub file_offset: u64,
    /// The name of its first byte in the status (e.g. a guest address).
    pub tag: u64,
}

/// How a pager works, besides its ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PagerOptions {
    /// Runs of pages the prefetch fills first, in this order, as `(tag +
    /// offset, pages)` (what [`Pager::working_set`] returns; parts outside
    /// the ranges are ignored): the pages a previous run of the guest touched
    /// first. Then it fills the rest in address order.
    pub first: Vec<(u64, usize)>,
    /// Record the order in which pages are first faulted on
    /// ([`Pager::working_set`]).
    pub record: bool,
}

/// What the pager saw of the faults.
#[derive(Debug, Default)]
struct Record {
    /// Faults that had to wait for the file (on a page not filled yet).
    faults: usize,
    /// With [`PagerOptions::record`]: the pages first faulted on, as
    /// `(tag + offset, pages)` runs in the order of the faults (a fault
    /// right after the one before it extends its run).
    touched: Vec<(u64, usize)>,
}

/// How a pager is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PagerStatus {
    /// Pages are still missing.
    Running {
        /// Pages filled so far (or found present).
        filled: usize,
        /// Pages of every range.
        total: usize,
    },
    /// Every page is in; the file is closed and the ranges unregistered.
    /// `failed` lists the pages the file could not supply (they read as
    /// zeros), as `(tag + offset, pages)` runs in range order.
    Done {
        /// The runs of pages filled with zeros instead of the file's bytes.
        failed: Vec<(u64, usize)>,
    },
    /// Stopped before every page was in: the pages missing read as zeros.
    Stopped,
    /// The pager's thread met an error it cannot go on after (a `poll` or a
    /// `read` of the userfaultfd failing): it unregistered the ranges and
    /// ended, as when stopped.
    Failed {
        /// The error.
        error: Error,
    },
}

/// Fills ranges of memory from a file, on demand (a fault waits for its
/// page) and in the background, with a thread of its own; see the module
/// documentation. Dropping it stops it (see [`Pager::stop`]).
#[derive(Debug)]
pub struct Pager {
    /// Signalled to stop the thread.
    stop: Arc<OwnedFd>,
    /// The thread, until joined.
    thread: Option<JoinHandle<()>>,
    /// What the thread reports.
    status: Arc<Mutex<PagerStatus>>,
    /// What it saw of the faults.
    record: Arc<Mutex<Record>>,
}

impl Pager {
    /// Registers `ranges` for missing-page faults and starts the thread that
    /// fills them from `source` (a duplicate is kept until every page is in).
    /// The ranges must be page aligned, mapped, and have no page present
    /// (fresh anonymous memory or a fresh memfd): a page present is never
    /// overwritten. Refused with [`Error::Paging`] where the process may not
    /// have a full userfaultfd or the memory cannot be registered.
    pub fn start(source: BorrowedFd<'_>, ranges: Vec<PagerRange>) -> Result<Pager> {
        Pager::start_with(source, ranges, PagerOptions::default())
    }

    /// [`Pager::start`] with `options`: a prefetch order, recording.
    pub fn start_with(
        source: BorrowedFd<'_>,
        ranges: Vec<PagerRange>,
        options: PagerOptions,
    ) -> Result<Pager> {
        Pager::start_inner(source, ranges, options, true)
    }

    /// [`Pager::start_with`], with the prefetch on or off: off (for tests of
    /// the fault path alone) only faults fill pages, and the pager runs until
    /// every page was touched or it is stopped.
    fn start_inner(
        source: BorrowedFd<'_>,
        ranges: Vec<PagerRange>,
        options: PagerOptions,
        prefetch: bool,
    ) -> Result<Pager> {
        let page = sys::page_size();
        for r in &ranges {
            if !r.addr.is_multiple_of(page) {
                return Err(Error::Unaligned {
                    what: "address",
                    value: r.addr as u64,
                });
            }
            if !r.file_offset.is_multiple_of(page as u64) {
                return Err(Error::Unaligned {
                    what: "fileOffset",
                    value: r.file_offset,
                });
            }
            if r.len == 0 || !r.len.is_multiple_of(page) {
                return Err(Error::Unaligned {
                    what: "length",
                    value: r.len as u64,
                });
            }
        }
        let uffd = match wp::userfaultfd(libc::O_CLOEXEC | libc::O_NONBLOCK) {
            Ok(fd) => fd,
            Err(e) if e.errno() == Some(libc::EPERM) => {
                return Err(Error::Paging {
                    reason: "this process may not make a userfaultfd that serves faults taken in kernel mode (vm.unprivileged_userfaultfd is 0 and it has neither CAP_SYS_PTRACE nor access to /dev/userfaultfd); one for user-mode faults only would let KVM's faults and a read(2) into the memory fail with EFAULT. Restore with lazy: 'file' or lazy: false",
                })
            }
            Err(e) if e.errno() == Some(libc::ENOSYS) => {
                return Err(Error::Paging {
                    reason: "this kernel has no userfaultfd (ENOSYS)",
                })
            }
            Err(e) => return Err(e),
        };
        wp::uffd_api(uffd.as_fd(), 0)?;
        let source = sys::dup_cloexec(source)?;
        for (i, r) in ranges.iter().enumerate() {
            if let Err(e) = wp::uffd_register_missing(uffd.as_fd(), r.addr, r.len) {
                for done in &ranges[..i] {
                    let _ = wp::uffd_unregister(uffd.as_fd(), done.addr, done.len);
                }
                return Err(match e.errno() {
                    Some(libc::EINVAL) => Error::Paging {
                        reason: "the memory cannot be registered for missing-page faults (only anonymous and shared memory can)",
                    },
                    Some(libc::EBUSY) => Error::Paging {
                        reason: "the memory is registered with another userfaultfd (kernel dirty tracking uses one: it must let go of the memory first)",
                    },
                    _ => e,
                });
            }
        }
        let total: usize = ranges.iter().map(|r| r.len / page).sum();
        let status = Arc::new(Mutex::new(PagerStatus::Running { filled: 0, total }));
        let unregister = |uffd: &OwnedFd| {
            for r in &ranges {
                let _ = wp::uffd_unregister(uffd.as_fd(), r.addr, r.len);
            }
        };
        let stop = match wp::eventfd() {
            Ok(fd) => Arc::new(fd),
            Err(e) => {
                unregister(&uffd);
                return Err(e);
            }
        };
        let words = total.div_ceil(64);
        let record = Arc::new(Mutex::new(Record::default()));
        let mut work = Work {
            page,
            filled: vec![0; words],
            failed: vec![0; words],
            count: 0,
            total,
            cursor: if prefetch { 0 } else { total },
            // One page more than a fill uses: its last page stays zeros.
            buf: vec![0; (FAULT_PAGES.max(PREFETCH_PAGES) + 1) * page],
            busy: 0,
            status: Arc::clone(&status),
            record: Arc::clone(&record),
            recording: options.record,
            queue: VecDeque::new(),
            uffd,
            source,
            ranges,
        };
        if prefetch {
            work.queue = work.runs_of(&options.first);
        }
        let thread_stop = Arc::clone(&stop);
        let spawned = std::thread::Builder::new()
            .name("mr-pager".into())
            .spawn(move || work.run(&thread_stop));
        match spawned {
            Ok(thread) => Ok(Pager {
                stop,
                thread: Some(thread),
                status,
                record,
            }),
            // The closure (and with it the descriptor) was dropped: closing
            // the userfaultfd unregisters its ranges.
            Err(_) => Err(Error::Syscall {
                syscall: "pthread_create",
                errno: libc::EAGAIN,
            }),
        }
    }

    /// How the pager is doing.
    pub fn status(&self) -> PagerStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many faults had to wait for the file so far (on a page not filled
    /// yet: a fault on a page the prefetch had placed costs nothing).
    pub fn faults(&self) -> usize {
        lock(&self.record).faults
    }

    /// With [`PagerOptions::record`]: the pages first faulted on so far, as
    /// `(tag + offset, pages)` runs in the order of the faults (empty
    /// otherwise). Only faults are seen: a page the prefetch placed before
    /// anything touched it is not in the list.
    pub fn working_set(&self) -> Vec<(u64, usize)> {
        lock(&self.record).touched.clone()
    }

    /// Stops the pager and waits for its thread to end (idempotent): the
    /// ranges are unregistered, the file closed. Pages not filled yet read
    /// as zeros from now on; a fault waiting for one is woken. The status is
    /// then [`PagerStatus::Stopped`], unless every page was in already.
    pub fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            // If the signal cannot be written (it never fails on an eventfd
            // short of a counter overflow) the thread still ends by itself
            // once every page is in.
            let _ = wp::eventfd_signal(self.stop.as_fd());
            let _ = thread.join();
        }
    }
}

impl Drop for Pager {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Places the page of zeros `zeros` at `addr` if it is missing there; a page
/// present, or a range no longer registered, is left as it is.
fn zeros_where_missing(uffd: BorrowedFd<'_>, addr: usize, zeros: &[u8]) -> Result<()> {
    match wp::uffd_copy(uffd, addr, zeros) {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.errno(),
                Some(
                    libc::EEXIST
                        | libc::EAGAIN
                        | libc::ENOENT
                        | libc::EFAULT
                        | libc::ESRCH
                        | libc::EINVAL
                )
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// `mutex` locked (a panic aborts: poisoning is never observed in release).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The thread's state.
struct Work {
    /// The page size.
    page: usize,
    /// One bit per page of every range (in range order): filled.
    filled: Vec<u64>,
    /// One bit per page: filled with zeros, the file could not supply it.
    failed: Vec<u64>,
    /// Pages filled.
    count: usize,
    /// Pages of every range.
    total: usize,
    /// The next page the prefetch looks at.
    cursor: usize,
    /// The bytes read from the file, placed from here; its last page is
    /// never read into and stays zeros.
    buf: Vec<u8>,
    /// Prefetch steps still to take at the smaller size, since a fault.
    busy: usize,
    /// Where the status is reported.
    status: Arc<Mutex<PagerStatus>>,
    /// Where faults are counted and recorded.
    record: Arc<Mutex<Record>>,
    /// Whether the pages faulted on are recorded.
    recording: bool,
    /// Runs `(page, count)` the prefetch fills before going on at `cursor`.
    queue: VecDeque<(usize, usize)>,
    /// The ranges are registered with it.
    uffd: OwnedFd,
    /// The file.
    source: OwnedFd,
    /// The ranges.
    ranges: Vec<PagerRange>,
}

/// Whether bit `i` of `bits` is set.
fn bit(bits: &[u64], i: usize) -> bool {
    bits[i / 64] & (1 << (i % 64)) != 0
}

/// Sets bit `i` of `bits`.
fn set(bits: &mut [u64], i: usize) {
    bits[i / 64] |= 1 << (i % 64);
}

impl Work {
    /// The thread: serves faults, prefetches between them, until every page
    /// is in or `stop` is signalled; then unregisters and reports.
    fn run(mut self, stop: &OwnedFd) {
        let mut stopped = false;
        let mut error = None;
        while self.count < self.total {
            // While the prefetch has pages to fill it never waits: faults
            // are looked at between two steps of it. Once it is through
            // (only with pages a fault is filling meanwhile, or with the
            // prefetch off) it waits for faults.
            let busy = self.cursor < self.total || !self.queue.is_empty();
            let timeout = if busy { 0 } else { -1 };
            match wp::poll_readable([self.uffd.as_fd(), stop.as_fd()], timeout) {
                Err(e) => error = Some(e),
                Ok([_, true]) => stopped = true,
                Ok([faults, false]) => {
                    let step = if faults { self.serve_faults() } else { Ok(()) };
                    if let Err(e) = step.and_then(|()| self.prefetch()) {
                        error = Some(e);
                    }
                }
            }
            if stopped || error.is_some() {
                break;
            }
            self.report_progress();
        }
        // Unregistered before the status leaves `Running`: whoever tracks the
        // memory next (kernel dirty tracking) may register it once it reads
        // that status. An unregister the kernel refuses (`EINVAL`: the range
        // now holds a mapping a userfaultfd cannot cover) leaves that part
        // registered until the userfaultfd is closed below; a register
        // meanwhile is `EBUSY`, which the tracker reports whole and retries.
        for r in &self.ranges {
            let _ = wp::uffd_unregister(self.uffd.as_fd(), r.addr, r.len);
        }
        let status = match error {
            Some(error) => PagerStatus::Failed { error },
            None if self.count < self.total => PagerStatus::Stopped,
            None => PagerStatus::Done {
                failed: self.failed_runs(),
            },
        };
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = status;
        // `self` drops here: the userfaultfd and the file are closed.
    }

    /// Reports the pages filled so far.
    fn report_progress(&self) {
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = PagerStatus::Running {
            filled: self.count,
            total: self.total,
        };
    }

    /// The range of page `page` (of all ranges, in order) and the page's
    /// index in it.
    fn locate(&self, mut page: usize) -> (usize, usize) {
        for (i, r) in self.ranges.iter().enumerate() {
            let pages = r.len / self.page;
            if page < pages {
                return (i, page);
            }
            page -= pages;
        }
        unreachable!("a page past the ranges")
    }

    /// The page (of all ranges) at address `addr`, if it is in a range.
    fn page_at(&self, addr: usize) -> Option<usize> {
        let mut first = 0;
        for r in &self.ranges {
            if addr >= r.addr && addr - r.addr < r.len {
                return Some(first + (addr - r.addr) / self.page);
            }
            first += r.len / self.page;
        }
        None
    }

    /// Reads the pending fault messages and fills the block of pages around
    /// each fault; wakes a fault whose page is in already.
    fn serve_faults(&mut self) -> Result<()> {
        let mut msgs = [UffdMsg::default(); 16];
        loop {
            let n = wp::uffd_read(self.uffd.as_fd(), &mut msgs)?;
            if n == 0 {
                return Ok(());
            }
            for m in &msgs[..n] {
                if m.event != wp::UFFD_EVENT_PAGEFAULT {
                    continue;
                }
                let addr = m.address as usize & !(self.page - 1);
                let Some(page) = self.page_at(addr) else {
                    continue;
                };
                self.busy = BUSY_STEPS;
                if bit(&self.filled, page) {
                    // Placed already, and missing again: it was discarded
                    // since (`MADV_DONTNEED`, `MADV_REMOVE`), and a discarded
                    // page reads as zeros. Or placed just now for an earlier
                    // message about the same page: then it is present, and
                    // `UFFDIO_COPY` leaves it as it is (`EEXIST`). Either way
                    // the fault is resolved: it must never be woken to fault
                    // again for ever.
                    let zeros = &self.buf[self.buf.len() - self.page..];
                    zeros_where_missing(self.uffd.as_fd(), addr, zeros)?;
                } else {
                    self.touched(page);
                    let (_, in_range) = self.locate(page);
                    let block = in_range - in_range % FAULT_PAGES;
                    let first = page - (in_range - block);
                    let (range, _) = self.locate(first);
                    let pages = self.ranges[range].len / self.page;
                    self.fill(first, FAULT_PAGES.min(pages - block))?;
                }
                // Placed by an earlier message (two threads faulted on the
                // page), or just now: a wake of a page no one waits on is a
                // no-op.
                let _ = wp::uffd_wake(self.uffd.as_fd(), addr, self.page);
            }
        }
    }

    /// Counts a fault on page `page` (not filled yet), and records it.
    fn touched(&self, page: usize) {
        let mut record = lock(&self.record);
        record.faults += 1;
        if !self.recording {
            return;
        }
        let (range, in_range) = self.locate(page);
        let at = self.ranges[range].tag + (in_range * self.page) as u64;
        match record.touched.last_mut() {
            Some((start, n)) if *start + (*n * self.page) as u64 == at => *n += 1,
            _ => record.touched.push((at, 1)),
        }
    }

    /// `(tag + offset, pages)` runs as `(page, count)` runs of the ranges,
    /// each within one range; parts outside every range are left out.
    fn runs_of(&self, runs: &[(u64, usize)]) -> VecDeque<(usize, usize)> {
        let mut out = VecDeque::new();
        for &(at, pages) in runs {
            let end = at.saturating_add((pages as u64).saturating_mul(self.page as u64));
            let mut first = 0;
            for r in &self.ranges {
                let (lo, hi) = (at.max(r.tag), end.min(r.tag + r.len as u64));
                if lo < hi {
                    let from = ((lo - r.tag) / self.page as u64) as usize;
                    let to = (hi - r.tag).div_ceil(self.page as u64) as usize;
                    out.push_back((first + from, to - from));
                }
                first += r.len / self.page;
            }
        }
        out
    }

    /// Fills the next pages of the prefetch: from the runs asked for first,
    /// then the pages it has not looked at in address order (at most
    /// `PREFETCH_PAGES`, or `PREFETCH_PAGES_BUSY` for `BUSY_STEPS` steps
    /// after a fault, within one range).
    fn prefetch(&mut self) -> Result<()> {
        let step = if self.busy > 0 {
            self.busy -= 1;
            PREFETCH_PAGES_BUSY
        } else {
            PREFETCH_PAGES
        };
        while let Some((first, count)) = self.queue.pop_front() {
            let n = count.min(step);
            if n < count {
                self.queue.push_front((first + n, count - n));
            }
            if (first..first + n).any(|p| !bit(&self.filled, p)) {
                return self.fill(first, n);
            }
        }
        while self.cursor < self.total && bit(&self.filled, self.cursor) {
            self.cursor += 1;
        }
        if self.cursor == self.total {
            return Ok(());
        }
        let (range, in_range) = self.locate(self.cursor);
        let pages = step.min(self.ranges[range].len / self.page - in_range);
        self.fill(self.cursor, pages)?;
        self.cursor += pages;
        Ok(())
    }

    /// Reads pages `[first, first + n)` (of one range) from the file and
    /// places those not filled yet. Pages the file cannot supply are placed
    /// as zeros and recorded.
    fn fill(&mut self, first: usize, n: usize) -> Result<()> {
        let page = self.page;
        let (range, in_range) = self.locate(first);
        let r = self.ranges[range];
        let want = n * page;
        let offset = r.file_offset + (in_range * page) as u64;
        let mut got = 0;
        while got < want {
            // SAFETY: `buf` is this thread's own buffer (at least `want`
            // bytes), borrowed exclusively for the call.
            let dst = unsafe { MemSliceMut::new(self.buf.as_mut_ptr().add(got), want - got) };
            match libc::off_t::try_from(offset + got as u64) {
                Ok(at) => match sys::pread(self.source.as_fd(), dst, at) {
                    Ok(0) => break,
                    Ok(k) => got += k,
                    Err(e) if e.errno() == Some(libc::EINTR) => {}
                    Err(_) => break,
                },
                Err(_) => break,
            }
        }
        // A page read only in part is not the file's: all zeros instead.
        let good = got / page;
        self.buf[good * page..want].fill(0);
        let mut p = first;
        while p < first + n {
            if bit(&self.filled, p) {
                p += 1;
                continue;
            }
            let mut end = p + 1;
            while end < first + n && !bit(&self.filled, end) {
                end += 1;
            }
            self.place(r.addr + (in_range + p - first) * page, p - first, end - p)?;
            for q in p..end {
                if q - first >= good {
                    set(&mut self.failed, q);
                }
            }
            p = end;
        }
        Ok(())
    }

    /// Places `count` pages of `buf` from page `at` at `dst` (pages of
    /// `dst` not filled yet): those already present (placed by another
    /// route) are left as they are, and all count as filled. A range no
    /// longer registered (the memory was unmapped or replaced) counts as
    /// filled too: there is nothing to fill there any more.
    fn place(&mut self, dst: usize, at: usize, count: usize) -> Result<()> {
        let page = self.page;
        let mut done = 0;
        while done < count {
            let src = &self.buf[(at + done) * page..(at + count) * page];
            match wp::uffd_copy(self.uffd.as_fd(), dst + done * page, src) {
                Ok(k) => done += (k / page).max(1).min(count - done),
                Err(e) => match e.errno() {
                    Some(libc::EEXIST) => done += 1,
                    Some(libc::EAGAIN) => std::thread::yield_now(),
                    Some(libc::ENOENT | libc::EFAULT | libc::ESRCH | libc::EINVAL) => {
                        done = count;
                    }
                    _ => return Err(e),
                },
            }
        }
        let first = self.page_at(dst).unwrap_or(0);
        for p in first..first + count {
            if !bit(&self.filled, p) {
                set(&mut self.filled, p);
                self.count += 1;
            }
        }
        Ok(())
    }

    /// The pages recorded as not supplied, as `(tag + offset, pages)` runs.
    fn failed_runs(&self) -> Vec<(u64, usize)> {
        let mut runs = Vec::new();
        let mut first = 0;
        for r in &self.ranges {
            let pages = r.len / self.page;
            let mut p = 0;
            while p < pages {
                if !bit(&self.failed, first + p) {
                    p += 1;
                    continue;
                }
                let start = p;
                while p < pages && bit(&self.failed, first + p) {
                    p += 1;
                }
                runs.push((r.tag + (start * self.page) as u64, p - start));
            }
            first += pages;
        }
        runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{page_size, MappedRegion, MappingOptions, MemoryMapping, SharedMemory};
    use std::time::{Duration, Instant};

    /// A file of `pages` pages, page `i` filled with byte `i + 1` (mod 251).
    fn snapshot(tag: &str, pages: usize, writable: bool) -> std::fs::File {
        let ps = page_size();
        let content: Vec<u8> = (0..pages * ps).map(|i| (i / ps % 251 + 1) as u8).collect();
        crate::testutil::unlinked_file(tag, &content, writable)
    }

    /// A pager over `m`, or `None` where the process may not have one
    /// (anywhere but root here: then `MR_ALLOW_NO_UFFD=1` must say so).
    fn pager(file: &std::fs::File, ranges: Vec<PagerRange>) -> Option<Pager> {
        match Pager::start(file.as_fd(), ranges) {
            Ok(p) => Some(p),
            Err(Error::Paging { reason })
                if std::env::var_os("MR_ALLOW_NO_UFFD").is_some_and(|v| v == "1") =>
            {
                println!("pager skipped (MR_ALLOW_NO_UFFD=1): {reason}");
                None
            }
            Err(e) => panic!("a pager must work on this machine: {e}"),
        }
    }

    /// `n` pages of fresh private anonymous memory, and their address.
    fn anonymous(n: usize) -> (MemoryMapping, usize) {
        let m = MemoryMapping::anonymous(n * page_size(), MappingOptions::anonymous()).unwrap();
        let addr = m.as_ptr() as usize;
        (m, addr)
    }

    /// The range of `n` pages at `addr`, from the file at `file_offset`.
    fn whole(addr: usize, n: usize, file_offset: u64, tag: u64) -> PagerRange {
        PagerRange {
            addr,
            len: n * page_size(),
            file_offset,
            tag,
        }
    }

    /// Waits (at most 20 s) until the pager is no longer running.
    fn settled(p: &Pager) -> PagerStatus {
        let at = Instant::now();
        loop {
            match p.status() {
                PagerStatus::Running { .. } if at.elapsed() < Duration::from_secs(20) => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                s => return s,
            }
        }
    }

    /// Byte 8 of page `page` at `addr`, read directly (a load: it faults).
    fn peek(addr: usize, page: usize) -> u8 {
        // SAFETY: the tests pass memory they mapped readable and own; no
        // reference points into it.
        unsafe { std::ptr::read_volatile((addr + page * page_size() + 8) as *const u8) }
    }

    #[test]
    fn faults_and_the_prefetch_fill_every_page() {
        let ps = page_size();
        let n = 1024;
        let file = snapshot("pager-full", n + 4, false);
        let (_mapping, addr) = anonymous(n);
        let range = whole(addr, n, 4 * ps as u64, 0x10_0000);
        let Some(p) = pager(&file, vec![range]) else {
            return;
        };
        // A load from this thread, and a write by the kernel (pread into the
        // memory: a fault taken in kernel mode), both served.
        // Page 1004 of the file holds 1004 % 251 + 1 = 1.
        assert_eq!(peek(addr, 1000), 1);
        let other = crate::testutil::unlinked_file("pager-src", &vec![0xeeu8; ps], false);
        // SAFETY: one page of the mapping made above.
        let dst = unsafe { MemSliceMut::new((addr + 900 * ps) as *mut u8, ps) };
        assert_eq!(sys::pread(other.as_fd(), dst, 0).unwrap(), ps);
        assert_eq!(
            settled(&p),
            PagerStatus::Done { failed: vec![] },
            "every page in"
        );
        for page in 0..n {
            let want = if page == 900 {
                0xee
            } else {
                ((page + 4) % 251 + 1) as u8
            };
            assert_eq!(peek(addr, page), want, "page {page}");
        }
    }

    #[test]
    fn faults_alone_are_served_from_any_thread_and_from_the_kernel() {
        let ps = page_size();
        let n = 256;
        let file = snapshot("pager-faults", n, false);
        let (m, addr) = anonymous(n);
        let range = whole(addr, n, 0, 0);
        if pager(&file, vec![]).is_none() {
            return;
        }
        let mut p =
            Pager::start_inner(file.as_fd(), vec![range], PagerOptions::default(), false).unwrap();
        // Other threads, each its own pages (several blocks), and this one.
        let threads: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    (t * 64..t * 64 + 48).all(|page| peek(addr, page) == (page % 251 + 1) as u8)
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().unwrap());
        }
        // The status follows the pages placed (reported just after them).
        let at = Instant::now();
        let filled = loop {
            match p.status() {
                PagerStatus::Running { filled, total: 256 } if filled >= 4 * 48 => break filled,
                PagerStatus::Running { .. } if at.elapsed() < Duration::from_secs(5) => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                s => panic!("{s:?}"),
            }
        };
        assert_eq!(
            filled,
            4 * 48,
            "the blocks of the pages touched, and no others"
        );
        // A fault taken in kernel mode: pread from a file into a page not
        // present (the threads touched pages 192..240 at most). With a user-mode-only
        // userfaultfd this would be EFAULT.
        let other = crate::testutil::unlinked_file("pager-src2", &vec![0xeeu8; ps], false);
        // SAFETY: one page of the mapping made above.
        let dst = unsafe { MemSliceMut::new((addr + 250 * ps) as *mut u8, ps) };
        assert_eq!(sys::pread(other.as_fd(), dst, 0).unwrap(), ps);
        assert_eq!(peek(addr, 250), 0xee);
        // Page 251 holds 251 % 251 + 1 = 1.
        assert_eq!(peek(addr, 251), 1);
        // A page discarded after it was filled faults again: it reads as
        // zeros (what a discarded anonymous page is), with no wait.
        m.discard(250 * ps, 2 * ps).unwrap();
        let reader = std::thread::spawn(move || (peek(addr, 250), peek(addr, 251)));
        let at = Instant::now();
        while !reader.is_finished() {
            assert!(
                at.elapsed() < Duration::from_secs(10),
                "a discarded page hangs"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(reader.join().unwrap(), (0, 0));
        p.stop();
        assert_eq!(p.status(), PagerStatus::Stopped);
        // Never touched, after the stop: zeros, no wait.
        assert_eq!(peek(addr, 120), 0);
    }

    #[test]
    fn the_pages_first_faulted_on_are_recorded_in_order_and_prefetched_first_next_time() {
        let ps = page_size();
        let n = 4096;
        let file = snapshot("pager-record", n, false);
        let (_mapping, addr) = anonymous(n);
        let range = whole(addr, n, 0, 0x1_0000_0000);
        if pager(&file, vec![]).is_none() {
            return;
        }
        let record = PagerOptions {
            first: vec![],
            record: true,
        };
        let mut p = Pager::start_inner(file.as_fd(), vec![range], record, false).unwrap();
        // A fault fills the 16-page block around its page: 3001 and 12 are in
        // already when touched (no fault); 3016 starts the next block.
        for page in [3000, 3001, 3016, 10, 12, 500] {
            assert_eq!(peek(addr, page), (page % 251 + 1) as u8);
        }
        assert_eq!(p.faults(), 4);
        let tag = |page: usize| 0x1_0000_0000 + (page * ps) as u64;
        assert_eq!(
            p.working_set(),
            [(tag(3000), 1), (tag(3016), 1), (tag(10), 1), (tag(500), 1)]
        );
        p.stop();
        // The next restore fetches those first (runs outside the ranges, or
        // running past their end, are cut), then the rest: every page in.
        let (_again, addr2) = anonymous(n);
        let mut first = p.working_set();
        first.extend([(0, 3), (tag(n - 2), 10), (tag(0) - ps as u64, 2)]);
        let next = PagerOptions {
            first,
            record: false,
        };
        let q = Pager::start_with(file.as_fd(), vec![whole(addr2, n, 0, tag(0))], next).unwrap();
        assert_eq!(settled(&q), PagerStatus::Done { failed: vec![] });
        for page in (0..n).step_by(31) {
            assert_eq!(peek(addr2, page), (page % 251 + 1) as u8, "page {page}");
        }
        assert!(q.working_set().is_empty(), "not recording");
    }

    #[test]
    fn shared_memory_is_filled_and_pages_present_are_kept() {
        let ps = page_size();
        let n = 64;
        let file = snapshot("pager-shm", n, false);
        let shm = SharedMemory::create("mr-core-pager", (n * ps) as u64, true, None).unwrap();
        let m = MemoryMapping::from_fd(shm.as_fd(), n * ps, MappingOptions::fd()).unwrap();
        let addr = m.as_ptr() as usize;
        // A page written through another mapping before: present, kept.
        let other = MemoryMapping::from_fd(shm.as_fd(), n * ps, MappingOptions::fd()).unwrap();
        // SAFETY: a byte of the mapping made above; no reference points there.
        unsafe { std::ptr::write_volatile((other.as_ptr() as usize + 3 * ps + 8) as *mut u8, 7) };
        let range = whole(addr, n, 0, 0);
        let Some(p) = pager(&file, vec![range]) else {
            return;
        };
        assert_eq!(settled(&p), PagerStatus::Done { failed: vec![] });
        assert_eq!(peek(addr, 3), 7);
        assert_eq!(peek(addr, 40), 41);
    }

    #[test]
    fn pages_the_file_cannot_supply_are_zeros_and_named() {
        let ps = page_size();
        let n = 256;
        // The file ends in the middle of page 100.
        let file = snapshot("pager-short", n, true);
        file.set_len((100 * ps + 10) as u64).unwrap();
        let (_mapping, addr) = anonymous(n);
        let range = whole(addr, n, 0, 0x4000_0000);
        let Some(p) = pager(&file, vec![range]) else {
            return;
        };
        // A fault on a page past the end resolves (zeros), no signal, no wait.
        assert_eq!(peek(addr, 120), 0);
        assert_eq!(
            settled(&p),
            PagerStatus::Done {
                failed: vec![(0x4000_0000 + 100 * ps as u64, 156)]
            }
        );
        assert_eq!(peek(addr, 99), 100);
        assert_eq!(peek(addr, 100), 0);
    }

    #[test]
    fn a_stopped_pager_lets_every_fault_go_on() {
        let n = 8192;
        let file = snapshot("pager-stop", n, false);
        let (_mapping, addr) = anonymous(n);
        let range = whole(addr, n, 0, 0);
        let Some(mut p) = pager(&file, vec![range]) else {
            return;
        };
        // Threads fault while the pager stops: none waits for ever.
        let readers: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    (0..n)
                        .step_by(7 + t)
                        .map(|page| u64::from(peek(addr, page)))
                        .sum::<u64>()
                })
            })
            .collect();
        p.stop();
        let status = p.status();
        assert!(
            matches!(status, PagerStatus::Stopped | PagerStatus::Done { .. }),
            "{status:?}"
        );
        for r in readers {
            r.join().unwrap();
        }
        // After the stop: a page is the file's (filled before) or zeros.
        for page in (0..n).step_by(97) {
            let b = peek(addr, page);
            assert!(b == 0 || b == (page % 251 + 1) as u8, "page {page}: {b}");
        }
        drop(p);
    }
}
