//! The records the binding returns, defined once here: napi-rs generates
//! their TypeScript interfaces into `index.d.ts`, which the facade re-exports.

use mapped_region::{Backing, GuestBacking, GuestRegion};
use napi_derive::napi;

/// How close the process is to `vm.max_map_count`; see `mapCount()`.
#[napi(object)]
pub struct MapCount {
    /// Kernel mappings in the whole process right now (lines of `/proc/self/maps`).
    pub process: u32,
    /// Of those, the ones this library owns: each mapping, and each arena's overlays and reserved holes.
    pub owned: u32,
    /// `vm.max_map_count`: past it every `mmap` in the process fails — the JavaScript heap's included.
    pub limit: u32,
    /// Mappings kept free for the runtime and for removals (1/16 of the limit, at least 1024):
    /// creating a mapping or an overlay that would come closer than this to the limit fails
    /// with `ENOMEM`, so that the process never runs out while removals keep working.
    pub headroom: u32,
}

/// One entry of `MemoryMappingArena.mappings()`: a run of pages the kernel sees as one mapping.
#[napi(object)]
pub struct MappingInfo {
    /// Byte offset inside the arena (page aligned).
    pub offset: f64,
    /// Length in bytes (whole pages).
    pub size: f64,
    /// `'fd'` for a file/memfd overlay, `'anonymous'` for private anonymous memory.
    #[napi(ts_type = "'fd' | 'anonymous'")]
    pub kind: String,
    /// For `'fd'`: the fd number the caller passed (the region does not keep it open).
    pub fd: Option<i32>,
    /// For `'fd'`: the file offset of the first byte.
    pub fd_offset: Option<f64>,
    /// For `'fd'`: `true` for `MAP_SHARED` (writes reach the file), `false` for a private
    /// (copy-on-write) overlay.
    pub shared: Option<bool>,
    /// The `Protection` bits.
    pub protection: u32,
}

impl From<mapped_region::MappingInfo> for MappingInfo {
    fn from(m: mapped_region::MappingInfo) -> MappingInfo {
        let (kind, fd, fd_offset, shared) = match m.backing {
            Backing::Anonymous => ("anonymous", None, None, None),
            Backing::Fd {
                fd,
                fd_offset,
                shared,
            } => ("fd", Some(fd), Some(fd_offset as f64), Some(shared)),
        };
        MappingInfo {
            offset: m.offset as f64,
            size: m.size as f64,
            kind: kind.to_string(),
            fd,
            fd_offset,
            shared,
            protection: m.protection.bits(),
        }
    }
}

/// One region of a guest memory's table, for `GuestMemory.regions()` and snapshots.
#[napi(object)]
pub struct GuestRegionInfo {
    /// The KVM memory slot number.
    pub slot: u32,
    /// Guest-physical start address.
    pub guest_address: f64,
    /// Size in bytes.
    pub size: f64,
    /// The `Protection` bits.
    pub protection: u32,
    /// What backs it: `'fd'` for an fd or a `SharedMemory`.
    #[napi(ts_type = "'fd' | 'anonymous'")]
    pub backing: String,
}

impl From<GuestRegion> for GuestRegionInfo {
    fn from(r: GuestRegion) -> GuestRegionInfo {
        GuestRegionInfo {
            slot: r.slot,
            guest_address: r.start as f64,
            size: r.size as f64,
            protection: r.protection.bits(),
            backing: match r.backing {
                GuestBacking::Anonymous => "anonymous",
                GuestBacking::Fd | GuestBacking::SharedMemory => "fd",
            }
            .to_string(),
        }
    }
}
