//! Interval bookkeeping for an arena: which page range holds which overlay.
//!
//! Pieces are kept in an ordered map keyed by their start offset ([`Pieces`]:
//! sorted chunks of at most 64), never overlap,
//! and neighbouring pieces that the kernel would treat as one mapping (same kind
//! and protection; for fds the same fd with contiguous file offsets) are merged.
//! Holes (reserved `PROT_NONE` space) are not stored. Each update costs
//! O(log n) plus O(log n) per piece it replaces.

use std::os::fd::RawFd;

use crate::pieces::Pieces;
use crate::Protection;

/// What backs a piece of an arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// Private anonymous memory.
    Anonymous,
    /// A mapping of `fd` starting at file offset `fd_offset`.
    Fd {
        /// The fd number the overlay was made with (not kept open).
        fd: RawFd,
        /// The file offset of the piece's first byte.
        fd_offset: u64,
        /// `MAP_SHARED` (writes reach the file) or `MAP_PRIVATE` (copy-on-write).
        shared: bool,
    },
}

/// One entry of an arena's layout: `[offset, offset + size)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MappingInfo {
    /// Byte offset in the arena (page aligned).
    pub offset: usize,
    /// Length in bytes (whole pages).
    pub size: usize,
    /// What is mapped there.
    pub backing: Backing,
    /// The access it allows.
    pub protection: Protection,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Piece {
    end: usize,
    backing: Backing,
    protection: Protection,
    /// For an fd piece, the identity (`st_dev`, `st_ino`) of the file mapped
    /// there, where it is known: a mapping keeps its file alive, so while the
    /// piece is mapped no other file can have it. Pieces of two different
    /// files never merge in the kernel, whatever their fd numbers.
    file: Option<FileId>,
}

/// The identity of a file (`st_dev`, `st_ino`).
pub type FileId = (u64, u64);

impl Piece {
    /// The piece as it continues from `from` (>= its start at `start`).
    fn tail(self, start: usize, from: usize) -> Piece {
        let backing = match self.backing {
            Backing::Fd {
                fd,
                fd_offset,
                shared,
            } => Backing::Fd {
                fd,
                fd_offset: fd_offset + (from - start) as u64,
                shared,
            },
            Backing::Anonymous => Backing::Anonymous,
        };
        Piece { backing, ..self }
    }

    /// Whether `next`, starting where `self` (starting at `start`) ends, continues it.
    fn continues_into(&self, start: usize, next: &Piece) -> bool {
        self.protection == next.protection
            && !matches!((self.file, next.file), (Some(a), Some(b)) if a != b)
            && match (self.backing, next.backing) {
                (Backing::Anonymous, Backing::Anonymous) => true,
                (
                    Backing::Fd {
                        fd: a,
                        fd_offset: oa,
                        shared: sa,
                    },
                    Backing::Fd {
                        fd: b,
                        fd_offset: ob,
                        shared: sb,
                    },
                ) => a == b && sa == sb && oa.checked_add((self.end - start) as u64) == Some(ob),
                _ => false,
            }
    }
}

/// The layout of an arena: non-overlapping, merged pieces ordered by offset.
#[derive(Debug, Default, Clone)]
pub struct Layout {
    pieces: Pieces<Piece>,
    /// Pairs of consecutive pieces with no hole between them (kept up to date by
    /// `put`/`take`), so that the kernel's mapping count is known in O(1).
    touching: usize,
}

impl Layout {
    /// An empty layout.
    pub fn new() -> Layout {
        Layout::default()
    }

    /// Number of entries (after merging).
    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    /// Whether nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// How many kernel mappings (VMAs) an arena of `size` bytes with this layout
    /// occupies: one per entry plus one per reserved hole between, before and
    /// after them.
    pub fn kernel_mappings(&self, size: usize) -> usize {
        let (Some((first, _)), Some((_, last))) = (self.pieces.first(), self.pieces.last()) else {
            return 1;
        };
        let entries = self.pieces.len();
        let inner_holes = entries - 1 - self.touching;
        entries + inner_holes + usize::from(first > 0) + usize::from(last.end < size)
    }

    /// The end of the piece before `start` and the start of the piece at or
    /// after `end`.
    fn neighbours(&self, start: usize, end: usize) -> (Option<usize>, Option<usize>) {
        let prev_end = self.pieces.before(start).map(|(_, p)| p.end);
        let next_start = self.pieces.from(end).map(|(s, _)| s);
        (prev_end, next_start)
    }

    /// Inserts a piece into a free range, keeping `touching` current.
    fn put(&mut self, start: usize, piece: Piece) {
        let (prev_end, next_start) = self.neighbours(start, piece.end);
        if let (Some(pe), Some(ns)) = (prev_end, next_start) {
            self.touching -= usize::from(pe == ns);
        }
        self.touching += usize::from(prev_end == Some(start));
        self.touching += usize::from(next_start == Some(piece.end));
        self.pieces.insert(start, piece);
    }

    /// Removes the piece at `start`, keeping `touching` current.
    fn take(&mut self, start: usize) -> Option<Piece> {
        let piece = self.pieces.remove(start)?;
        let (prev_end, next_start) = self.neighbours(start, piece.end);
        self.untouch(start, piece.end, prev_end, next_start);
        Some(piece)
    }

    /// Keeps `touching` current once the piece `[start, end)` is gone from
    /// between the piece ending at `prev_end` and the one starting at
    /// `next_start`.
    fn untouch(
        &mut self,
        start: usize,
        end: usize,
        prev_end: Option<usize>,
        next_start: Option<usize>,
    ) {
        self.touching -= usize::from(prev_end == Some(start));
        self.touching -= usize::from(next_start == Some(end));
        if let (Some(pe), Some(ns)) = (prev_end, next_start) {
            self.touching += usize::from(pe == ns);
        }
    }

    /// Makes `[start, end)` a hole.
    pub fn clear(&mut self, start: usize, end: usize) {
        if start >= end || self.pieces.is_empty() {
            return;
        }
        // The last piece that starts before `end`, and the one before it.
        let (last, before_last) = self.pieces.before_two(end);
        let Some((s, &p)) = last else {
            return;
        };
        if p.end <= start {
            return; // a hole already
        }
        if s == start && p.end == end {
            // Exactly one piece (an overlay removed whole): its neighbours are
            // the piece before it and the first one at or after `end`.
            let prev_end = before_last.map(|(_, q)| q.end);
            let next_start = self.pieces.from(end).map(|(n, _)| n);
            self.pieces.remove(s);
            self.untouch(start, end, prev_end, next_start);
            return;
        }
        // Otherwise from that piece backwards, while pieces reach into the range.
        while let Some((s, &p)) = self.pieces.before(end) {
            if p.end <= start {
                break;
            }
            self.take(s);
            if p.end > end {
                self.put(end, p.tail(s, end));
            }
            if s < start {
                self.put(s, Piece { end: start, ..p });
                break;
            }
        }
    }

    /// Makes `[start, end)` one piece of `backing` with `protection`, replacing
    /// and splitting whatever was there, then merges with its neighbours.
    pub fn set(&mut self, start: usize, end: usize, backing: Backing, protection: Protection) {
        self.set_checked(start, end, backing, protection, &mut |_| true);
    }

    /// [`set`](Self::set), merging with a neighbour only where
    /// `kernel_merged(boundary)` confirms that the kernel merged the two
    /// mappings that meet at `boundary` too. Whether it does depends on more
    /// than this layout knows: the same open file (an fd number can be closed
    /// and reused, even for the same file), mapping flags that advices changed,
    /// anonymous memory already faulted in on both sides. Where it did not,
    /// the pieces stay apart, as the kernel's mappings do, so that the
    /// kernel's mapping count derived from this layout is never too low.
    pub fn set_checked(
        &mut self,
        start: usize,
        end: usize,
        backing: Backing,
        protection: Protection,
        kernel_merged: &mut dyn FnMut(usize) -> bool,
    ) {
        self.set_file_checked(start, end, backing, None, protection, kernel_merged);
    }

    /// [`set_checked`](Self::set_checked) for an fd overlay whose file's
    /// identity is known (`file`): a neighbour known to map another file is
    /// never merged with it, and the kernel is not asked — only a neighbour
    /// of the same file (or of an unknown one) at contiguous offsets is.
    pub fn set_file_checked(
        &mut self,
        start: usize,
        end: usize,
        backing: Backing,
        file: Option<FileId>,
        protection: Protection,
        kernel_merged: &mut dyn FnMut(usize) -> bool,
    ) {
        if start >= end {
            return;
        }
        self.clear(start, end);
        // `[start, end)` is a hole now, between `left` and `right` (the pieces
        // around it, if any), which are therefore not touching each other.
        let left = self.pieces.before(start).map(|(s, &p)| (s, p));
        let right = self.pieces.from(end).map(|(s, &p)| (s, p));
        let file = match backing {
            Backing::Fd { .. } => file,
            Backing::Anonymous => None,
        };
        let piece = Piece {
            end,
            backing,
            protection,
            file,
        };
        let left_touches = left.is_some_and(|(_, l)| l.end == start);
        let right_touches = right.is_some_and(|(r, _)| r == end);
        // The merged piece starts at `first` with `merged`'s backing.
        let (first, mut merged) = match left {
            Some((s, l)) if left_touches && l.continues_into(s, &piece) && kernel_merged(start) => {
                (
                    s,
                    Piece {
                        end,
                        backing: l.backing,
                        protection,
                        // The kernel merged them: one file, known from either.
                        file: l.file.or(file),
                    },
                )
            }
            _ => (start, piece),
        };
        if let Some((r, right)) = right {
            if right_touches && merged.continues_into(first, &right) && kernel_merged(end) {
                self.pieces.remove(r);
                merged.end = right.end;
                merged.file = merged.file.or(right.file);
                // The pair (merged, right) is one piece now; right's own pair
                // with the piece after it is merged's, unchanged.
            } else {
                self.touching += usize::from(right_touches);
            }
        }
        if first == start {
            self.touching += usize::from(left_touches);
            self.pieces.insert(start, merged);
        } else if let Some(l) = self.pieces.get_mut(first) {
            // Merged into `left`, which keeps its place and its pair before it.
            *l = merged;
        }
    }

    /// Gives every piece overlapping `[start, end)` the protection `protection`
    /// there, keeping its backing (splitting pieces at `start` and `end`), and
    /// merges as [`set_checked`](Self::set_checked) does. Holes stay holes.
    pub fn set_protection(
        &mut self,
        start: usize,
        end: usize,
        protection: Protection,
        kernel_merged: &mut dyn FnMut(usize) -> bool,
    ) {
        // The piece containing `start` (if any), then those starting inside.
        let parts: Vec<(usize, usize, Piece)> = self
            .pieces
            .at_or_before(start)
            .into_iter()
            .chain(self.pieces.range(start.saturating_add(1), end))
            .filter(|&(s, p)| s < end && p.end > start)
            .map(|(s, &p)| {
                let from = s.max(start);
                (from, p.end.min(end), p.tail(s, from))
            })
            .collect();
        for (from, to, p) in parts {
            self.set_file_checked(from, to, p.backing, p.file, protection, kernel_merged);
        }
    }

    /// Whether every byte of `[start, end)` is mapped with at least `needed`.
    /// On success, tells whether the whole range is anonymous memory.
    pub fn check_access(&self, start: usize, end: usize, needed: Protection) -> Option<bool> {
        // The piece that contains `start`, then its contiguous successors.
        let first = self.pieces.at_or_before(start);
        // Most accesses lie inside one piece: one search.
        if let Some((_, p)) = first {
            if p.end >= end && p.end > start {
                return p
                    .protection
                    .contains(needed)
                    .then_some(p.backing == Backing::Anonymous);
            }
        }
        let mut cursor = start;
        let mut all_anonymous = true;
        let mut iter = first
            .into_iter()
            .chain(self.pieces.range(start.saturating_add(1), end));
        while cursor < end {
            let (s, p) = iter.next()?;
            if s > cursor || p.end <= cursor || !p.protection.contains(needed) {
                return None;
            }
            all_anonymous &= p.backing == Backing::Anonymous;
            cursor = p.end;
        }
        Some(all_anonymous)
    }

    /// Whether any piece overlaps `[start, end)`.
    pub fn overlaps(&self, start: usize, end: usize) -> bool {
        if self.pieces.is_empty() {
            return false;
        }
        let before = self.pieces.at_or_before(start);
        before.is_some_and(|(_, p)| p.end > start)
            || self
                .pieces
                .range(start.saturating_add(1), end)
                .next()
                .is_some()
    }

    /// The extent `[start, end)` of the piece that contains `offset`.
    pub fn piece_at(&self, offset: usize) -> Option<(usize, usize)> {
        let (start, p) = self.pieces.at_or_before(offset)?;
        (p.end > offset).then_some((start, p.end))
    }

    /// The entries that overlap `[start, end)`, sorted by offset and cut to
    /// it (holes left out): O(log n) plus one step per entry.
    pub fn within(&self, start: usize, end: usize) -> impl Iterator<Item = MappingInfo> + '_ {
        let first = self
            .pieces
            .at_or_before(start)
            .filter(|(_, p)| p.end > start);
        first
            .into_iter()
            .chain(self.pieces.range(start.saturating_add(1), end))
            .filter(move |&(s, _)| s < end)
            .map(move |(s, &p)| {
                let from = s.max(start);
                let piece = p.tail(s, from);
                MappingInfo {
                    offset: from,
                    size: p.end.min(end) - from,
                    backing: piece.backing,
                    protection: piece.protection,
                }
            })
    }

    /// The entries, sorted by offset.
    pub fn iter(&self) -> impl Iterator<Item = MappingInfo> + '_ {
        self.pieces.iter().map(|(offset, p)| MappingInfo {
            offset,
            size: p.end - offset,
            backing: p.backing,
            protection: p.protection,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RW: Protection = Protection::READ_WRITE;
    const R: Protection = Protection::READ;

    fn fd(fd: RawFd, fd_offset: u64) -> Backing {
        Backing::Fd {
            fd,
            fd_offset,
            shared: true,
        }
    }

    fn entries(l: &Layout) -> Vec<(usize, usize, Backing, Protection)> {
        l.iter()
            .map(|m| (m.offset, m.size, m.backing, m.protection))
            .collect()
    }

    #[test]
    fn overlapping_front_back_and_spanning_split() {
        let mut l = Layout::new();
        l.set(10, 20, fd(3, 0), RW);
        // Front overlap.
        l.set(5, 12, Backing::Anonymous, RW);
        assert_eq!(
            entries(&l),
            vec![(5, 7, Backing::Anonymous, RW), (12, 8, fd(3, 2), RW)]
        );
        // Back overlap.
        l.set(18, 25, fd(4, 100), R);
        assert_eq!(
            entries(&l),
            vec![
                (5, 7, Backing::Anonymous, RW),
                (12, 6, fd(3, 2), RW),
                (18, 7, fd(4, 100), R)
            ]
        );
        // Inside one piece: splits it in three.
        l.set(14, 15, Backing::Anonymous, R);
        assert_eq!(
            entries(&l),
            vec![
                (5, 7, Backing::Anonymous, RW),
                (12, 2, fd(3, 2), RW),
                (14, 1, Backing::Anonymous, R),
                (15, 3, fd(3, 5), RW),
                (18, 7, fd(4, 100), R)
            ]
        );
        // Spanning everything.
        l.set(0, 30, fd(5, 0), RW);
        assert_eq!(entries(&l), vec![(0, 30, fd(5, 0), RW)]);
    }

    #[test]
    fn pieces_of_different_files_never_merge_and_the_kernel_is_not_asked() {
        let mut l = Layout::new();
        let mut asked = Vec::new();
        let (a, b) = (Some((1, 10)), Some((1, 11)));
        l.set_file_checked(0, 4, fd(3, 0), a, RW, &mut |x| {
            asked.push(x);
            true
        });
        // The same number, contiguous offsets, another file: apart, nothing asked.
        l.set_file_checked(4, 8, fd(3, 4), b, RW, &mut |x| {
            asked.push(x);
            true
        });
        assert_eq!(l.len(), 2);
        assert!(asked.is_empty());
        // The same file (or one not known) continuing it: only the kernel knows.
        l.set_file_checked(8, 12, fd(3, 8), b, RW, &mut |x| {
            asked.push(x);
            true
        });
        l.set_file_checked(12, 16, fd(3, 12), None, RW, &mut |x| {
            asked.push(x);
            true
        });
        assert_eq!(asked, vec![8, 12]);
        assert_eq!(
            entries(&l),
            vec![(0, 4, fd(3, 0), RW), (4, 12, fd(3, 4), RW)]
        );
        // A merged piece keeps the identity it knew: a third file before it stays apart.
        l.clear(0, 4);
        l.set_file_checked(0, 4, fd(3, 0), Some((2, 10)), RW, &mut |x| {
            asked.push(x);
            true
        });
        assert_eq!(asked, vec![8, 12]);
        assert_eq!(l.len(), 2);
        // A change of protection keeps each piece's file: still apart.
        l.set_protection(0, 16, R, &mut |x| {
            asked.push(x);
            true
        });
        assert_eq!(asked, vec![8, 12]);
        assert_eq!(l.len(), 2);
        assert_eq!(l.kernel_mappings(16), 2);
    }

    #[test]
    fn contiguous_fd_offsets_merge_and_others_do_not() {
        let mut l = Layout::new();
        l.set(0, 4, fd(3, 0), RW);
        l.set(4, 8, fd(3, 4), RW);
        assert_eq!(entries(&l), vec![(0, 8, fd(3, 0), RW)]);
        l.set(8, 12, fd(3, 100), RW);
        l.set(12, 16, fd(3, 104), R);
        l.set(16, 20, fd(9, 108), R);
        assert_eq!(l.len(), 4);
        // Re-filling a split hole with the original content merges back.
        l.set(0, 20, Backing::Anonymous, RW);
        l.clear(4, 8);
        assert_eq!(l.len(), 2);
        l.set(4, 8, Backing::Anonymous, RW);
        assert_eq!(entries(&l), vec![(0, 20, Backing::Anonymous, RW)]);
    }

    #[test]
    fn clear_splits_and_is_idempotent() {
        let mut l = Layout::new();
        l.set(0, 10, fd(3, 0), RW);
        l.clear(3, 5);
        assert_eq!(
            entries(&l),
            vec![(0, 3, fd(3, 0), RW), (5, 5, fd(3, 5), RW)]
        );
        l.clear(3, 5);
        assert_eq!(l.len(), 2);
        l.clear(0, 10);
        assert!(l.is_empty());
    }

    #[test]
    fn access_checks_cover_contiguous_pieces_only() {
        let mut l = Layout::new();
        l.set(0, 4, Backing::Anonymous, RW);
        l.set(4, 8, fd(3, 0), RW);
        l.set(8, 12, fd(3, 100), R);
        assert_eq!(l.check_access(0, 4, RW), Some(true));
        assert_eq!(l.check_access(2, 6, RW), Some(false));
        assert_eq!(l.check_access(2, 10, Protection::READ), Some(false));
        assert_eq!(l.check_access(2, 10, RW), None);
        assert_eq!(l.check_access(10, 13, Protection::READ), None);
        l.clear(5, 6);
        assert_eq!(l.check_access(4, 8, Protection::READ), None);
        assert!(l.overlaps(5, 7) && l.overlaps(0, 1) && l.overlaps(11, 20));
        assert!(!l.overlaps(5, 6) && !l.overlaps(12, 20));
        assert_eq!(l.check_access(6, 8, Protection::READ), Some(false));
    }

    /// Random `set`, `clear` and `set_protection` over 1500 pages, checked after
    /// every step against a page-by-page model merged as far as it goes: the
    /// entries, the kernel mapping count, `check_access`, `overlaps` and
    /// `piece_at`. The number of pieces grows past three chunks and falls back
    /// below one, again and again: chunks are split and dropped.
    #[test]
    fn agrees_with_a_page_model_small_and_large() {
        const N: usize = 1500;
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let prots = [RW, R, Protection::NONE];
        let mut l = Layout::new();
        let mut pages: Vec<Option<(Backing, Protection)>> = vec![None; N];
        let (mut most, mut fewest_after_most) = (0, usize::MAX);
        for step in 0..20_000 {
            // Mostly short ranges, so that pieces are many; now and then a long one.
            let start = next(N);
            let len = if next(10) == 0 {
                1 + next(N - start)
            } else {
                1 + next(4.min(N - start))
            };
            let end = start + len;
            // Grow the count for a while, then shrink it.
            let clearing = (step / 2000) % 2 == 1;
            match next(6) {
                0..=3 if !clearing => {
                    let prot = prots[next(3)];
                    let backing = if next(2) == 0 {
                        Backing::Anonymous
                    } else {
                        fd(3 + next(2) as RawFd, (start * 7 + next(2)) as u64)
                    };
                    l.set(start, end, backing, prot);
                    let piece = Piece {
                        end,
                        backing,
                        protection: prot,
                        file: None,
                    };
                    for (i, page) in pages.iter_mut().enumerate().take(end).skip(start) {
                        *page = Some((piece.tail(start, i).backing, prot));
                    }
                }
                4 => {
                    let prot = prots[next(3)];
                    l.set_protection(start, end, prot, &mut |_| true);
                    for page in pages.iter_mut().take(end).skip(start).flatten() {
                        page.1 = prot;
                    }
                }
                _ => {
                    l.clear(start, end);
                    pages[start..end].fill(None);
                }
            }
            // The model's entries: runs of pages that continue one another.
            let mut want: Vec<(usize, usize, Backing, Protection)> = Vec::new();
            for (i, page) in pages.iter().enumerate() {
                let Some((b, p)) = *page else { continue };
                if let Some(last) = want.last_mut() {
                    let continues = last.0 + last.1 == i
                        && last.3 == p
                        && match (last.2, b) {
                            (Backing::Anonymous, Backing::Anonymous) => true,
                            (
                                Backing::Fd {
                                    fd: a,
                                    fd_offset: oa,
                                    ..
                                },
                                Backing::Fd {
                                    fd: c,
                                    fd_offset: oc,
                                    ..
                                },
                            ) => a == c && oa + last.1 as u64 == oc,
                            _ => false,
                        };
                    if continues {
                        last.1 += 1;
                        continue;
                    }
                }
                want.push((i, 1, b, p));
            }
            assert_eq!(entries(&l), want, "step {step}");
            let holes = want.windows(2).filter(|w| w[0].0 + w[0].1 < w[1].0).count()
                + usize::from(want.first().is_some_and(|e| e.0 > 0))
                + usize::from(want.last().is_some_and(|e| e.0 + e.1 < N));
            assert_eq!(
                l.kernel_mappings(N),
                if want.is_empty() {
                    1
                } else {
                    want.len() + holes
                },
                "step {step}"
            );
            let (a, b) = (next(N), next(N));
            let (a, b) = (a.min(b), a.max(b) + 1);
            let mapped = pages[a..b]
                .iter()
                .all(|p| p.is_some_and(|(_, p)| p.contains(Protection::READ)));
            assert_eq!(
                l.check_access(a, b, Protection::READ).is_some(),
                mapped,
                "step {step}"
            );
            assert_eq!(
                l.overlaps(a, b),
                pages[a..b].iter().any(Option::is_some),
                "step {step}"
            );
            let at = next(N);
            let piece = want
                .iter()
                .find(|e| e.0 <= at && at < e.0 + e.1)
                .map(|e| (e.0, e.0 + e.1));
            assert_eq!(l.piece_at(at), piece, "step {step}");
            most = most.max(l.len());
            if most > 2 * crate::pieces::CHUNK {
                fewest_after_most = fewest_after_most.min(l.len());
            }
        }
        assert!(most > 2 * crate::pieces::CHUNK, "at most {most} pieces");
        assert!(
            fewest_after_most < crate::pieces::CHUNK / 2,
            "never fewer than {fewest_after_most} after"
        );
    }
}
