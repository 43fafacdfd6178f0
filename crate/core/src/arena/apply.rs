//! Making planned changes: `apply` does the kernel's part of each kind of
//! [`Change`] (`mmap`, `mprotect`, a hole) and records the result in the
//! layouts; a change that fails is repaired (see `repair`). `add_anonymous`
//! and `protect` plan and apply in one call.

use std::os::fd::{BorrowedFd, RawFd};

use super::plan::What;
use super::{Change, MemoryMappingArena, RESERVE_FLAGS};
use crate::held::Restore;
use crate::layout::{Backing, FileId};
use crate::{budget, sys, Error, Protection, Result};

/// What an fd overlay being applied is, besides where it goes.
#[derive(Clone, Copy, Debug)]
struct FdKind {
    /// The fd's size was checked (views may touch it).
    sized: bool,
    /// Its pages cannot vanish (copies may be plain).
    plain: bool,
    /// `MAP_SHARED` rather than `MAP_PRIVATE`.
    shared: bool,
    /// The fd number the layout records.
    recorded: RawFd,
    /// The file's identity, when known: neighbours of other files are never
    /// merged, without asking the kernel.
    file: Option<FileId>,
}

impl MemoryMappingArena {
    /// Maps `size` bytes of private anonymous memory at `offset`.
    pub fn add_anonymous(&mut self, offset: usize, size: usize, prot: Protection) -> Result<()> {
        let change = self.plan_anonymous(offset, size, prot)?;
        self.apply(change, false)
    }

    /// Changes the protection of `[offset, offset + size)` in place; see
    /// [`plan_protect`](Self::plan_protect).
    pub fn protect(&mut self, offset: usize, size: usize, prot: Protection) -> Result<()> {
        let change = self.plan_protect(offset, size, prot)?;
        self.apply(change, false)
    }

    /// Makes a planned change. `in_use` says whether pointers into its range
    /// taken before may still be used (views were just detached there): the
    /// range is then *held* until [`reclaim`](Self::reclaim) — kept readable
    /// and writable while the layout already says what the change asked for
    /// (see the `held` module). A range still held from an earlier change
    /// counts as in use too. A failed change leaves the range as it was where
    /// the kernel kept it, and re-reserves what the kernel destroyed.
    pub fn apply(&mut self, change: Change<'_>, in_use: bool) -> Result<()> {
        let (start, end) = change.range();
        let in_use = in_use || self.held.overlaps(start, end);
        let result = match change.what {
            What::Anonymous { prot } => self.apply_anonymous(start, end, prot, in_use),
            What::Fd {
                fd,
                fd_offset,
                prot,
                sized,
                plain,
                recorded,
                file,
                shared,
            } => {
                let kind = FdKind {
                    sized,
                    plain,
                    shared,
                    recorded,
                    file,
                };
                self.apply_fd_mapping(start, end, fd, fd_offset, prot, kind, in_use)
            }
            What::Protect { prot } => self.apply_protect(start, end, prot, in_use),
            What::Remove => self.apply_removal(start, end, in_use),
        };
        self.sync_budget();
        result
    }

    fn apply_anonymous(
        &mut self,
        offset: usize,
        end: usize,
        prot: Protection,
        in_use: bool,
    ) -> Result<()> {
        let len = end - offset;
        let (map_prot, restore) = interim(prot, in_use);
        // SAFETY: `[offset, end)` lies inside the reservation owned by `self`
        // (a planned change); the caller let go of every view over it.
        let result = unsafe {
            sys::mmap(
                self.addr.add(offset),
                len,
                map_prot.to_prot(),
                RESERVE_FLAGS | libc::MAP_FIXED,
                None,
                0,
            )
        };
        match result {
            Ok(_) => {
                self.settle_held(offset, end, in_use, restore);
                // Anonymous memory is neither fragile nor opaque: the range is
                // cleared everywhere, then the layout records the new piece.
                self.clear_layouts(offset, end);
                let base = self.addr as usize;
                self.layout
                    .set_checked(offset, end, Backing::Anonymous, prot, &mut |b| {
                        kernel_merged(base + b)
                    });
                Ok(())
            }
            Err(e) => {
                self.repair(offset, end);
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_fd_mapping(
        &mut self,
        offset: usize,
        end: usize,
        fd: BorrowedFd<'_>,
        fd_offset: libc::off_t,
        prot: Protection,
        kind: FdKind,
        in_use: bool,
    ) -> Result<()> {
        let FdKind {
            sized,
            plain,
            shared,
            recorded,
            file,
        } = kind;
        let flags = if shared {
            libc::MAP_SHARED
        } else {
            libc::MAP_PRIVATE
        };
        let len = end - offset;
        let private = if in_use && !prot.contains(Protection::READ_WRITE) {
            // SAFETY: `[offset, offset + len)` lies inside the reservation owned
            // by `self`; the caller detached every view over it before this call.
            unsafe { self.map_private_until_reclaim(offset, len, fd, fd_offset, prot) }
        } else {
            None
        };
        let (result, held) = match private {
            Some(dup) => (Ok(()), Some(dup)),
            None => (
                // SAFETY: as above.
                unsafe {
                    sys::mmap(
                        self.addr.add(offset),
                        len,
                        prot.to_prot(),
                        flags | libc::MAP_FIXED,
                        Some(fd),
                        fd_offset,
                    )
                }
                .map(|_| ()),
                None,
            ),
        };
        match result {
            Ok(_) => {
                // Non-negative: checked by `file_offset` when planned.
                let fd_offset = fd_offset as u64;
                let restore = held.map(|fd| Restore::File {
                    fd,
                    fd_offset,
                    prot,
                    shared,
                });
                self.settle_held(offset, end, in_use, restore);
                if sized {
                    self.opaque.clear(offset, end);
                } else {
                    self.opaque
                        .set(offset, end, Backing::Anonymous, Protection::NONE);
                }
                let base = self.addr as usize;
                self.layout.set_file_checked(
                    offset,
                    end,
                    Backing::Fd {
                        fd: recorded,
                        fd_offset,
                        shared,
                    },
                    file,
                    prot,
                    &mut |b| kernel_merged(base + b),
                );
                if plain {
                    self.fragile.clear(offset, end);
                } else {
                    self.fragile
                        .set(offset, end, Backing::Anonymous, Protection::NONE);
                }
                Ok(())
            }
            Err(e) => {
                self.repair(offset, offset + len);
                Err(e)
            }
        }
    }

    fn apply_protect(
        &mut self,
        offset: usize,
        end: usize,
        prot: Protection,
        in_use: bool,
    ) -> Result<()> {
        let (now, restore) = interim(prot, in_use);
        // SAFETY: `[offset, end)` is mapped inside the reservation owned by
        // `self` (planned); views that rely on read-write access were detached.
        let result = unsafe { sys::mprotect(self.addr.add(offset), end - offset, now.to_prot()) };
        if let Err(e) = result {
            // mprotect may have changed part of the range before failing: put
            // back what the layout says, piece by piece.
            for m in self
                .layout
                .iter()
                .filter(|m| m.offset < end && m.offset + m.size > offset)
            {
                let (s, t) = (m.offset.max(offset), (m.offset + m.size).min(end));
                // SAFETY: as above; restoring the protection the layout records.
                let _ = unsafe { sys::mprotect(self.addr.add(s), t - s, m.protection.to_prot()) };
            }
            return Err(e);
        }
        self.settle_held(offset, end, in_use, restore);
        let base = self.addr as usize;
        self.layout
            .set_protection(offset, end, prot, &mut |b| kernel_merged(base + b));
        Ok(())
    }

    fn apply_removal(&mut self, offset: usize, end: usize, in_use: bool) -> Result<()> {
        let len = end - offset;
        // Memory that may still be touched through an old pointer: scratch
        // pages until the reclaim makes the hole (two more kernel mappings
        // meanwhile, if the budget has room; at the limit, the hole at once).
        if in_use && budget::check_room(2).is_ok() {
            // SAFETY: the range is inside our reservation; the caller detached
            // every view over it; fresh private anonymous pages replace it.
            let scratch = unsafe {
                sys::mmap(
                    self.addr.add(offset),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    RESERVE_FLAGS | libc::MAP_FIXED,
                    None,
                    0,
                )
            };
            if scratch.is_ok() {
                self.held.hold(offset, offset + len, Restore::Hole);
                self.clear_layouts(offset, offset + len);
                return Ok(());
            }
        }
        let result = self.make_hole(offset, len);
        if let Err(Error::Syscall { errno, .. }) = result {
            if errno != libc::ENOMEM {
                // The remap failed before anything changed.
                return result;
            }
        }
        // Removed — or, if re-reserving after the unmap failed, unmapped: either
        // way nothing is mapped there any more.
        self.held.release(offset, offset + len);
        self.clear_layouts(offset, offset + len);
        result
    }
}

/// The protection to map `prot` with now, and what the reclaim must restore:
/// memory that may still be touched through an old pointer (`in_use`) stays
/// read-write until the reclaim applies a narrower `prot`.
fn interim(prot: Protection, in_use: bool) -> (Protection, Option<Restore>) {
    if in_use && !prot.contains(Protection::READ_WRITE) {
        (prot | Protection::READ_WRITE, Some(Restore::Protect(prot)))
    } else {
        (prot, None)
    }
}

/// Whether the kernel merged the two mappings that meet at `addr` (no mapping
/// starts there): one `PROCMAP_QUERY` (O(log n) in the process's mappings), or
/// on older kernels a read of `/proc/self/maps` up to `addr`. Asked only where
/// the layout cannot tell (the same file or an unknown one at contiguous
/// offsets, anonymous neighbours). When it cannot be told (no fd free), they
/// are taken as apart: the budget then counts one too many, never one too few.
fn kernel_merged(addr: usize) -> bool {
    matches!(sys::mapping_starts_at(addr), Ok(false))
}
