//! The region table of a guest-physical address space (the facade's
//! `GuestMemory`): which ranges of an arena are guest regions, each one KVM
//! memory slot. Guest address `g` is offset `g` in the arena, so the table
//! speaks in offsets. The binding keeps one table with its arena, under the
//! arena's lock, for every object (in any thread) over that guest memory.
//!
//! The rules that are the table's own live here: regions never overlap
//! ([`Error::GuestOverlap`]); a slot id is the lowest one free when its
//! region is added, and stays its own for the region's life; a range is
//! accessible when regions that follow each other without a gap cover it
//! (as vm-memory's `try_access` carries on into the next region).

use crate::{Error, Protection, Result};

/// What backs a guest region (for a snapshot's manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestBacking {
    /// Private anonymous memory.
    Anonymous,
    /// An fd the caller passed.
    Fd,
    /// A `SharedMemory`, mapped through its own descriptor.
    SharedMemory,
}

/// One region of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestRegion {
    /// The KVM memory slot number.
    pub slot: u32,
    /// Guest address (offset in the arena) of its first byte.
    pub start: usize,
    /// Size in bytes.
    pub size: usize,
    /// Its protection, as mapped.
    pub protection: Protection,
    /// What backs it.
    pub backing: GuestBacking,
}

impl GuestRegion {
    /// The guest address just past it.
    pub fn end(&self) -> usize {
        self.start + self.size
    }
}

/// The regions, sorted by guest address, never overlapping.
#[derive(Debug, Default, Clone)]
pub struct GuestTable {
    regions: Vec<GuestRegion>,
}

impl GuestTable {
    /// An empty table.
    pub fn new() -> GuestTable {
        GuestTable::default()
    }

    /// The regions, sorted by guest address.
    pub fn regions(&self) -> &[GuestRegion] {
        &self.regions
    }

    /// Refuses `[start, start + size)` if it overlaps a region.
    pub fn check_free(&self, start: usize, size: usize) -> Result<()> {
        let end = start.saturating_add(size);
        // The first region that ends after `start`: the only one that may overlap.
        let at = self.regions.partition_point(|r| r.end() <= start);
        match self.regions.get(at) {
            Some(r) if r.start < end => Err(Error::GuestOverlap {
                start: start as u64,
                other: r.start as u64,
            }),
            _ => Ok(()),
        }
    }

    /// Records a region (refused where it overlaps one); returns it, with its slot.
    pub fn insert(
        &mut self,
        start: usize,
        size: usize,
        protection: Protection,
        backing: GuestBacking,
    ) -> Result<GuestRegion> {
        self.check_free(start, size)?;
        let mut used: Vec<u32> = self.regions.iter().map(|r| r.slot).collect();
        used.sort_unstable();
        let slot = used
            .iter()
            .enumerate()
            .find(|&(i, &s)| s != i as u32)
            .map_or(used.len() as u32, |(i, _)| i as u32);
        let region = GuestRegion {
            slot,
            start,
            size,
            protection,
            backing,
        };
        let at = self.regions.partition_point(|r| r.start < start);
        self.regions.insert(at, region);
        Ok(region)
    }

    /// The index of the region that starts at `start`, or [`Error::GuestNoRegion`].
    fn position(&self, start: usize) -> Result<usize> {
        self.index_of(start)
            .filter(|&i| self.regions[i].start == start)
            .ok_or(Error::GuestNoRegion {
                start: start as u64,
            })
    }

    /// The region that starts at `start`, or [`Error::GuestNoRegion`].
    pub fn starting_at(&self, start: usize) -> Result<GuestRegion> {
        Ok(self.regions[self.position(start)?])
    }

    /// Forgets the region that starts at `start`; returns it.
    pub fn remove(&mut self, start: usize) -> Result<GuestRegion> {
        let at = self.position(start)?;
        Ok(self.regions.remove(at))
    }

    /// Records the protection of the region that starts at `start`.
    pub fn set_protection(&mut self, start: usize, protection: Protection) -> Result<()> {
        let at = self.position(start)?;
        self.regions[at].protection = protection;
        Ok(())
    }

    /// The index of the region that contains `addr`.
    pub fn index_of(&self, addr: usize) -> Option<usize> {
        let at = self.regions.partition_point(|r| r.end() <= addr);
        self.regions.get(at).filter(|r| r.start <= addr).map(|_| at)
    }

    /// Checks that regions cover `[addr, addr + len)` without a gap (one
    /// region, or several that follow each other); returns the index of the
    /// one that contains `addr`. [`Error::GuestAddress`] for an address in no
    /// region, [`Error::GuestRange`] for a range that runs into a hole or
    /// past the last region.
    pub fn covered(&self, addr: usize, len: usize) -> Result<usize> {
        let first = self.index_of(addr).ok_or(Error::GuestAddress {
            address: addr as u64,
        })?;
        let end = addr.saturating_add(len);
        let mut i = first;
        while self.regions[i].end() < end {
            match self.regions.get(i + 1) {
                Some(next) if next.start == self.regions[i].end() => i += 1,
                _ => {
                    return Err(Error::GuestRange {
                        address: addr as u64,
                        length: len as u64,
                        end: self.regions[i].end() as u64,
                    })
                }
            }
        }
        Ok(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: usize = 4096;

    fn table(ranges: &[(usize, usize)]) -> GuestTable {
        let mut t = GuestTable::new();
        for &(start, size) in ranges {
            t.insert(start, size, Protection::READ_WRITE, GuestBacking::Anonymous)
                .unwrap();
        }
        t
    }

    #[test]
    fn sorted_by_address_whatever_the_order_of_insertion() {
        let t = table(&[(8 * P, P), (0, P), (4 * P, 2 * P)]);
        let starts: Vec<usize> = t.regions().iter().map(|r| r.start).collect();
        assert_eq!(starts, [0, 4 * P, 8 * P]);
    }

    #[test]
    fn overlap_is_refused_and_changes_nothing() {
        let mut t = table(&[(4 * P, 2 * P)]);
        for (start, size) in [(3 * P, 2 * P), (5 * P, P), (0, 16 * P), (4 * P, 2 * P)] {
            let e = t
                .insert(start, size, Protection::READ, GuestBacking::Fd)
                .unwrap_err();
            assert_eq!(
                e,
                Error::GuestOverlap {
                    start: start as u64,
                    other: 4 * P as u64
                }
            );
        }
        assert_eq!(t.regions().len(), 1);
        // Touching is not overlapping.
        t.insert(6 * P, P, Protection::READ, GuestBacking::Fd)
            .unwrap();
        t.insert(3 * P, P, Protection::READ, GuestBacking::Fd)
            .unwrap();
        assert_eq!(t.regions().len(), 3);
    }

    #[test]
    fn slots_are_the_lowest_free_and_reused() {
        let mut t = table(&[(0, P), (P, P), (2 * P, P)]);
        let slots: Vec<u32> = t.regions().iter().map(|r| r.slot).collect();
        assert_eq!(slots, [0, 1, 2]);
        t.remove(P).unwrap();
        let r = t
            .insert(10 * P, P, Protection::READ, GuestBacking::SharedMemory)
            .unwrap();
        assert_eq!(r.slot, 1);
        let r = t
            .insert(11 * P, P, Protection::READ, GuestBacking::SharedMemory)
            .unwrap();
        assert_eq!(r.slot, 3);
        // The others keep theirs.
        assert_eq!(t.starting_at(2 * P).unwrap().slot, 2);
    }

    #[test]
    fn removal_needs_the_start_of_a_region() {
        let mut t = table(&[(4 * P, 2 * P)]);
        assert_eq!(
            t.remove(5 * P),
            Err(Error::GuestNoRegion {
                start: 5 * P as u64
            })
        );
        assert_eq!(t.remove(0), Err(Error::GuestNoRegion { start: 0 }));
        assert_eq!(t.remove(4 * P).unwrap().size, 2 * P);
        assert!(t.regions().is_empty());
    }

    #[test]
    fn coverage_across_contiguous_regions_only() {
        let t = table(&[(0, P), (P, P), (3 * P, P)]);
        assert_eq!(t.covered(0, 2 * P), Ok(0));
        assert_eq!(t.covered(P + 8, 0), Ok(1));
        assert_eq!(t.covered(3 * P, P), Ok(2));
        assert_eq!(
            t.covered(2 * P, 1),
            Err(Error::GuestAddress {
                address: 2 * P as u64
            })
        );
        assert_eq!(
            t.covered(P, P + 1),
            Err(Error::GuestRange {
                address: P as u64,
                length: P as u64 + 1,
                end: 2 * P as u64
            })
        );
        assert_eq!(
            t.covered(3 * P + 1, P),
            Err(Error::GuestRange {
                address: 3 * P as u64 + 1,
                length: P as u64,
                end: 4 * P as u64
            })
        );
        assert!(t.covered(usize::MAX, 1).is_err());
        assert!(t.covered(0, usize::MAX).is_err());
    }

    #[test]
    fn protection_is_recorded_per_region() {
        let mut t = table(&[(0, P), (P, P)]);
        t.set_protection(P, Protection::READ).unwrap();
        assert_eq!(t.regions()[1].protection, Protection::READ);
        assert_eq!(t.regions()[0].protection, Protection::READ_WRITE);
        assert!(t.set_protection(P / 2, Protection::READ).is_err());
    }
}
