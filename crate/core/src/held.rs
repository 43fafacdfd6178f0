//! Ranges of an arena whose memory must stay accessible for a while after a
//! change: ranges that had live views when they were removed or overlaid.
//!
//! A view is detached before the memory under it changes, but code that took
//! its pointer before the change may still be running: in Node, a built-in such
//! as `Buffer#fill` takes the pointer, then calls back into JavaScript (a
//! `valueOf`), which may remove the range; the built-in then writes through the
//! pointer it holds. Such a range is *held*: the kernel keeps it readable and
//! writable (scratch pages where it was removed; the new overlay mapped
//! read-write where it is narrower), while the layout already says what the
//! change asked for, so every checked access obeys the new layout at once.
//! Once no such pointer can be in use (for Node: the next turn of the event
//! loop), the arena is *reclaimed*: each held range gets what the change asked
//! for.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use crate::Protection;

/// What a held range becomes when it is reclaimed.
#[derive(Clone, Debug)]
pub(crate) enum Restore {
    /// Nothing: the change mapped what it asked for (read-write memory). The
    /// range is held only so that a further change before the reclaim still
    /// knows an old pointer may be in use there.
    Keep,
    /// A reserved `PROT_NONE` hole (it was removed; scratch pages meanwhile).
    Hole,
    /// Anonymous memory with this protection (mapped read-write meanwhile).
    Protect(Protection),
    /// The file mapped as the overlay asked (`MAP_SHARED`, or `MAP_PRIVATE`
    /// when not `shared`), with a private read-write mapping of it meanwhile;
    /// the fd is a duplicate kept until then.
    File {
        fd: Arc<OwnedFd>,
        fd_offset: u64,
        prot: Protection,
        shared: bool,
    },
}

/// One held range, `[start, end)` in arena offsets.
#[derive(Clone, Debug)]
pub(crate) struct Held {
    pub start: usize,
    pub end: usize,
    pub restore: Restore,
}

impl Held {
    /// The part of this range inside `[from, to)`, with file offsets moved along.
    fn part(&self, from: usize, to: usize) -> Held {
        let restore = match &self.restore {
            Restore::File {
                fd,
                fd_offset,
                prot,
                shared,
            } => Restore::File {
                fd: Arc::clone(fd),
                fd_offset: fd_offset + (from - self.start) as u64,
                prot: *prot,
                shared: *shared,
            },
            other => other.clone(),
        };
        Held {
            start: from,
            end: to,
            restore,
        }
    }
}

/// The held ranges of an arena. Few and short-lived (they exist only between a
/// change over live views and the next reclaim), so a list.
#[derive(Debug, Default)]
pub(crate) struct HeldRanges {
    ranges: Vec<Held>,
}

impl HeldRanges {
    /// Whether any part of `[start, end)` is held. Inlined: on the common path
    /// nothing is held, and every overlay and removal asks.
    #[inline(always)]
    pub fn overlaps(&self, start: usize, end: usize) -> bool {
        !self.ranges.is_empty() && self.any_overlap(start, end)
    }

    /// Whether a part of `[start, end)` waits for its shared file mapping
    /// (a private mapping of the file stands in until the reclaim).
    pub fn shared_overlaps(&self, start: usize, end: usize) -> bool {
        self.ranges
            .iter()
            .any(|h| h.start < end && h.end > start && matches!(h.restore, Restore::File { .. }))
    }

    #[cold]
    fn any_overlap(&self, start: usize, end: usize) -> bool {
        self.ranges.iter().any(|h| h.start < end && h.end > start)
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Each held range, `[start, end)`.
    pub fn ranges(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.ranges.iter().map(|h| (h.start, h.end))
    }

    /// Ranges held as [`Restore::Hole`]: each is a kernel mapping the layout
    /// does not list (scratch pages inside a hole), splitting that hole.
    pub fn holes(&self) -> usize {
        self.ranges
            .iter()
            .filter(|h| matches!(h.restore, Restore::Hole))
            .count()
    }

    /// Forgets whatever is held inside `[start, end)` (a new change replaces
    /// it), keeping the parts outside.
    #[inline(always)]
    pub fn release(&mut self, start: usize, end: usize) {
        if self.overlaps(start, end) {
            self.release_overlapping(start, end);
        }
    }

    #[cold]
    fn release_overlapping(&mut self, start: usize, end: usize) {
        let mut kept = Vec::with_capacity(self.ranges.len() + 1);
        for h in self.ranges.drain(..) {
            if h.end <= start || h.start >= end {
                kept.push(h);
                continue;
            }
            if h.start < start {
                kept.push(h.part(h.start, start));
            }
            if h.end > end {
                kept.push(h.part(end, h.end));
            }
        }
        self.ranges = kept;
    }

    /// Holds `[start, end)` until the next reclaim, replacing what was held there.
    pub fn hold(&mut self, start: usize, end: usize, restore: Restore) {
        self.release(start, end);
        self.ranges.push(Held {
            start,
            end,
            restore,
        });
    }

    /// Holds whatever part of `[start, end)` is not held yet as
    /// [`Restore::Keep`]: memory there may still be touched through an old
    /// pointer, though nothing needs restoring.
    pub fn hold_gaps(&mut self, start: usize, end: usize) {
        let mut taken: Vec<(usize, usize)> = self
            .ranges
            .iter()
            .filter(|h| h.start < end && h.end > start)
            .map(|h| (h.start.max(start), h.end.min(end)))
            .collect();
        taken.sort_unstable();
        let mut cursor = start;
        for (a, b) in taken {
            if a > cursor {
                self.ranges.push(Held {
                    start: cursor,
                    end: a,
                    restore: Restore::Keep,
                });
            }
            cursor = cursor.max(b);
        }
        if cursor < end {
            self.ranges.push(Held {
                start: cursor,
                end,
                restore: Restore::Keep,
            });
        }
    }

    /// Takes every held range, for reclaiming.
    pub fn take(&mut self) -> Vec<Held> {
        std::mem::take(&mut self.ranges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(h: &HeldRanges) -> Vec<(usize, usize)> {
        let mut v: Vec<_> = h.ranges.iter().map(|h| (h.start, h.end)).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn release_keeps_the_parts_outside() {
        let mut h = HeldRanges::default();
        h.hold(0, 10, Restore::Hole);
        h.hold(20, 30, Restore::Protect(Protection::READ));
        assert!(h.overlaps(9, 11) && !h.overlaps(10, 20));
        h.release(5, 25);
        assert_eq!(spans(&h), vec![(0, 5), (25, 30)]);
        assert_eq!(h.holes(), 1);
        h.hold(2, 28, Restore::Hole);
        assert_eq!(spans(&h), vec![(0, 2), (2, 28), (28, 30)]);
        assert_eq!(h.take().len(), 3);
        assert!(h.is_empty());
    }

    #[test]
    fn gaps_are_held_without_replacing_what_is_held() {
        let mut h = HeldRanges::default();
        h.hold(10, 20, Restore::Hole);
        h.hold(30, 40, Restore::Protect(Protection::READ));
        h.hold_gaps(0, 50);
        assert_eq!(
            spans(&h),
            vec![(0, 10), (10, 20), (20, 30), (30, 40), (40, 50)]
        );
        assert_eq!(h.holes(), 1);
        h.hold_gaps(5, 45);
        assert_eq!(h.ranges.len(), 5, "nothing new: all of it is held");
    }

    #[test]
    fn parts_of_a_file_range_keep_their_file_offsets() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let fd = Arc::new(OwnedFd::from(file));
        let mut h = HeldRanges::default();
        h.hold(
            100,
            200,
            Restore::File {
                fd,
                fd_offset: 4096,
                prot: Protection::READ,
                shared: true,
            },
        );
        h.release(120, 150);
        let offsets: Vec<(usize, u64)> = h
            .ranges
            .iter()
            .map(|r| match r.restore {
                Restore::File { fd_offset, .. } => (r.start, fd_offset),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(offsets, vec![(100, 4096), (150, 4146)]);
    }
}
