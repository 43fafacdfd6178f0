//! `AnyRegion`: a region of either kind, with the operations both share and
//! the arena-only ones refused in one place for a plain mapping.

use crate::region::unsupported;
use crate::{MappedRegion, MemoryMapping, MemoryMappingArena, Result};

/// A [`MemoryMapping`] or a [`MemoryMappingArena`].
#[derive(Debug)]
pub enum AnyRegion {
    /// One mapping.
    Mapping(MemoryMapping),
    /// A reservation with overlays.
    Arena(MemoryMappingArena),
}

impl AnyRegion {
    /// The region as the common trait.
    pub fn region(&self) -> &dyn MappedRegion {
        match self {
            AnyRegion::Mapping(m) => m,
            AnyRegion::Arena(a) => a,
        }
    }

    /// The arena, for an operation only arenas have; a mapping refuses it
    /// with [`Error::Unsupported`](crate::Error::Unsupported) naming `operation`.
    pub fn arena(&self, operation: &'static str) -> Result<&MemoryMappingArena> {
        match self {
            AnyRegion::Arena(a) => Ok(a),
            AnyRegion::Mapping(_) => Err(unsupported(operation)),
        }
    }

    /// As [`arena`](Self::arena), mutably.
    pub fn arena_mut(&mut self, operation: &'static str) -> Result<&mut MemoryMappingArena> {
        match self {
            AnyRegion::Arena(a) => Ok(a),
            AnyRegion::Mapping(_) => Err(unsupported(operation)),
        }
    }

    /// Copies `dst.len()` bytes from `offset`; needs `READ` there.
    pub fn read_into(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        match self {
            AnyRegion::Mapping(m) => m.read_into(offset, dst),
            AnyRegion::Arena(a) => a.read_into(offset, dst),
        }
    }

    /// Copies `src` to `offset`; needs `WRITE` there.
    pub fn write_from(&self, offset: usize, src: &[u8]) -> Result<()> {
        match self {
            AnyRegion::Mapping(m) => m.write_from(offset, src),
            AnyRegion::Arena(a) => a.write_from(offset, src),
        }
    }

    /// Whether `[offset, offset + len)` may be touched directly, as a view
    /// does: mapped `READ | WRITE` and backed by memory whose size is known.
    pub fn check_direct(&self, offset: usize, len: usize) -> Result<()> {
        match self {
            AnyRegion::Mapping(m) => m.check_direct(offset, len),
            AnyRegion::Arena(a) => a.check_direct(offset, len),
        }
    }

    /// Kernel mappings the region occupies: 1 for a mapping, the overlays and
    /// holes of an arena.
    pub fn kernel_mapping_count(&self) -> usize {
        match self {
            AnyRegion::Mapping(_) => 1,
            AnyRegion::Arena(a) => a.kernel_mapping_count(),
        }
    }
}
