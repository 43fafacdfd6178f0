//! Kernel dirty tracking of a `GuestMemory`'s regions: one core
//! [`WriteTracker`] per arena, kept in the region's `State` (so every thread's
//! object over the arena takes from the same record), plus the pages changed
//! in ways no write through the mapping shows — discarded shared memory, a
//! region hot-plugged or mapped anew, pages marked by hand, pages a failed
//! snapshot puts back. A take reports both and clears both.
//!
//! Memory a pager fills (`lazy: 'pager'`) is registered with the pager's
//! userfaultfd, and a range takes one userfaultfd: the tracker lets go of it
//! while the pager runs, and every take reports all of it. The first take
//! after the pager has ended (and unregistered it) tracks it and reports it
//! whole once more, so a write made before it was protected is in that take;
//! from then on it is tracked page by page.
//!
//! Addresses here are guest addresses (offsets in the arena); `base` is where
//! the arena lies in this process.

use std::collections::BTreeMap;

use mapped_region::{page_size, GuestTable, WriteTracker};

use crate::errors::Result;

/// The kernel's record of the guest's written pages, and the pages marked.
pub struct KernelDirty {
    tracker: WriteTracker,
    /// Where the arena lies in this process.
    base: usize,
    /// Marked pages, by the guest address of their region: one bit per page
    /// of the region (a take's layout), OR-ed into the next take.
    marks: BTreeMap<usize, Vec<u64>>,
    /// Ranges mapped anew that the kernel would not track (`[start, end)`):
    /// reported by every take, since their writes cannot be seen.
    untracked: Vec<(usize, usize)>,
    /// Ranges a pager fills (`[start, end)`): registered with its
    /// userfaultfd, not the tracker's, until [`KernelDirty::hand_over`];
    /// reported by every take meanwhile. A region mapped there while they
    /// are listed stays untracked too: the pager unregisters its ranges when
    /// it ends, and a registration of the tracker's there must not meet that.
    paging: Vec<(usize, usize)>,
}

impl KernelDirty {
    /// Opens a tracker for the arena at `base` and tracks every region of
    /// `table` (each starts clean). Fails with the reason the kernel or the
    /// process cannot track writes, or the range it refuses.
    pub fn open(base: usize, table: &GuestTable) -> Result<KernelDirty> {
        let mut dirty = KernelDirty {
            tracker: WriteTracker::open()?,
            base,
            marks: BTreeMap::new(),
            untracked: Vec::new(),
            paging: Vec::new(),
        };
        for r in table.regions() {
            dirty.track(r.start, r.size)?;
        }
        Ok(dirty)
    }

    /// Starts tracking the region at `start` (just mapped, or mapped anew),
    /// clean: what it held before is the caller's to mark.
    pub fn track(&mut self, start: usize, size: usize) -> Result<()> {
        for (from, to) in self.outside_paging(start, start + size) {
            self.tracker.track(self.base + from, to - from)?;
        }
        self.marks
            .entry(start)
            .or_insert_with(|| vec![0; words(size)]);
        Ok(())
    }

    /// The region at `start` (`size` bytes) is gone: its marks go with it
    /// (its mapping, and with it the kernel's tracking, is gone already).
    pub fn forget(&mut self, start: usize, size: usize) {
        self.marks.remove(&start);
        let end = start + size;
        self.untracked.retain(|&(s, e)| e <= start || s >= end);
    }

    /// `[start, end)` of the arena was mapped anew by a change made through
    /// the arena itself: the parts inside regions of `table` are tracked
    /// again (a new mapping starts untracked) and marked, since what they
    /// hold changed. A part the kernel will not track is reported by every
    /// take from now on: no write there can be lost.
    pub fn mapped_anew(&mut self, table: &GuestTable, start: usize, end: usize) {
        // What was untracked there is gone; what is left of it around the range stays so.
        let mut left = Vec::with_capacity(self.untracked.len());
        for &(s, e) in &self.untracked {
            if e <= start || s >= end {
                left.push((s, e));
                continue;
            }
            if s < start {
                left.push((s, start));
            }
            if e > end {
                left.push((end, e));
            }
        }
        self.untracked = left;
        for r in table.regions() {
            let (from, to) = (start.max(r.start), end.min(r.end()));
            for (from, to) in self.outside_paging(from, to) {
                if self.tracker.track(self.base + from, to - from).is_err() {
                    self.untracked.push((from, to));
                }
            }
        }
        self.mark(table, start, end - start);
    }

    /// A pager is about to register `ranges` (`(start, size)`, inside the
    /// guest regions) with its userfaultfd: the tracker lets go of them, and
    /// every take reports them whole until [`KernelDirty::hand_over`].
    pub fn pager_starting(&mut self, ranges: &[(usize, usize)]) -> Result<()> {
        for &(start, size) in ranges {
            // Listed first: were the untrack to fail part-way, the range is
            // reported whole rather than scanned.
            self.paging.push((start, start + size));
            self.tracker.untrack(self.base + start, size)?;
        }
        Ok(())
    }

    /// Whether ranges wait for [`KernelDirty::hand_over`].
    pub fn paging(&self) -> bool {
        !self.paging.is_empty()
    }

    /// The pager has ended (it unregistered its ranges before saying so):
    /// tracks its ranges (their parts in regions of `table`) and marks them
    /// whole. Tracking first, marking after: a write made before the
    /// protection is in the marks the next take reports, one made after it
    /// is the kernel's to report. A part the kernel will not track yet stays
    /// listed (reported whole, tried again by the next hand-over).
    pub fn hand_over(&mut self, table: &GuestTable) {
        let mut left = Vec::new();
        for (start, end) in std::mem::take(&mut self.paging) {
            for r in table.regions() {
                let (from, to) = (start.max(r.start), end.min(r.end()));
                if from < to && self.tracker.track(self.base + from, to - from).is_err() {
                    left.push((from, to));
                }
            }
            self.mark(table, start, end - start);
        }
        self.paging = left;
    }

    /// Marks the pages of `[addr, addr + len)` changed; the range must lie in
    /// regions of `table` (the caller checked it).
    pub fn mark(&mut self, table: &GuestTable, addr: usize, len: usize) {
        let page = page_size();
        let end = addr.saturating_add(len);
        for r in table.regions() {
            let (from, to) = (addr.max(r.start), end.min(r.end()));
            if from >= to {
                continue;
            }
            let bits = self
                .marks
                .entry(r.start)
                .or_insert_with(|| vec![0; words(r.size)]);
            for p in (from - r.start) / page..(to - r.start).div_ceil(page) {
                bits[p / 64] |= 1 << (p % 64);
            }
        }
    }

    /// Takes the written and marked pages of every region of `table`, in its
    /// order, and starts anew: for each region its guest address, its size,
    /// then its bitmap (`KVM_GET_DIRTY_LOG`'s layout), as 64-bit words. A
    /// failure part-way puts what was taken back as marks, so nothing is lost.
    pub fn take(&mut self, table: &GuestTable) -> Result<Vec<u64>> {
        for (start, end) in self.gaps() {
            self.mark(table, start, end - start);
        }
        let mut out = Vec::new();
        // Where each region's bitmap lies in `out`: (its start, first word, words).
        let mut taken = Vec::with_capacity(table.regions().len());
        for r in table.regions() {
            out.extend([r.start as u64, r.size as u64]);
            let (at, n) = (out.len(), words(r.size));
            out.resize(at + n, 0);
            taken.push((r.start, at, n));
            if let Some(marks) = self.marks.get_mut(&r.start) {
                for (word, mark) in out[at..].iter_mut().zip(marks.iter_mut()) {
                    *word |= std::mem::take(mark);
                }
            }
            let scanned = self.scan(r.start, r.end(), &mut out[at..at + n]);
            if let Err(e) = scanned {
                for &(start, at, n) in &taken {
                    let bits = self.marks.entry(start).or_insert_with(|| vec![0; n]);
                    for (mark, word) in bits.iter_mut().zip(&out[at..at + n]) {
                        *mark |= *word;
                    }
                }
                return Err(e.into());
            }
        }
        Ok(out)
    }
}

impl KernelDirty {
    /// The ranges no scan reads, reported whole by every take: those the
    /// kernel would not track and those a pager fills.
    fn gaps(&self) -> Vec<(usize, usize)> {
        self.untracked.iter().chain(&self.paging).copied().collect()
    }

    /// The parts of `[start, end)` outside the ranges a pager fills (none
    /// for an empty range).
    fn outside_paging(&self, start: usize, end: usize) -> Vec<(usize, usize)> {
        if start >= end {
            return Vec::new();
        }
        let mut parts = vec![(start, end)];
        for &(s, e) in &self.paging {
            parts = parts
                .into_iter()
                .flat_map(|(from, to)| {
                    if e <= from || s >= to {
                        vec![(from, to)]
                    } else {
                        [(from, s), (e, to)]
                            .into_iter()
                            .filter(|&(a, b)| a < b && a >= from && b <= to)
                            .collect()
                    }
                })
                .collect();
        }
        parts
    }

    /// Takes the written pages of the region `[start, end)` into `bitmap`
    /// (its first bit is `start`'s page), around the ranges the kernel would
    /// not track and those a pager fills (marked on every take instead).
    fn scan(&self, start: usize, end: usize, bitmap: &mut [u64]) -> mapped_region::Result<()> {
        let page = page_size();
        let mut from = start;
        let mut gaps: Vec<(usize, usize)> = self
            .gaps()
            .into_iter()
            .map(|(s, e)| (s.max(start), e.min(end)))
            .filter(|&(s, e)| s < e)
            .collect();
        gaps.sort_unstable();
        gaps.push((end, end));
        for (gap_start, gap_end) in gaps {
            if from < gap_start {
                let first = (from - start) / page;
                if first.is_multiple_of(64) {
                    self.tracker.take(
                        self.base + from,
                        gap_start - from,
                        &mut bitmap[first / 64..],
                    )?;
                } else {
                    // Not on a word of the region's bitmap: taken apart, then moved.
                    let mut part = vec![0u64; words(gap_start - from)];
                    self.tracker
                        .take(self.base + from, gap_start - from, &mut part)?;
                    for i in 0..(gap_start - from) / page {
                        if part[i / 64] >> (i % 64) & 1 == 1 {
                            let p = first + i;
                            bitmap[p / 64] |= 1 << (p % 64);
                        }
                    }
                }
            }
            from = from.max(gap_end);
        }
        Ok(())
    }
}

/// Words of a bitmap of `size` bytes of pages.
fn words(size: usize) -> usize {
    (size / page_size()).div_ceil(64)
}
