//! Planning changes to an arena: each `plan_*` applies every rule a change
//! must obey (range, alignment, file offset, end of file, huge pages, map
//! count) and returns a [`Change`] that nothing has made yet.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use super::MemoryMappingArena;
use crate::copy::CopyMode;
use crate::layout::FileId;
use crate::mapping::copy_mode_for_fd;
use crate::rules::{check_eof, check_huge, file_offset, mapping_range};
use crate::{budget, sys, Error, Protection, Result, SharedMemory};

/// A change to an arena, validated but not yet made: returned by
/// [`MemoryMappingArena::plan_fd_mapping`], [`plan_anonymous`] and
/// [`plan_removal`], made by [`MemoryMappingArena::apply`]. In between, whoever
/// else uses the memory of [`range`](Change::range) (views, asynchronous
/// operations) lets go of it, or refuses the change by not applying it, which
/// leaves everything as it was.
///
/// [`plan_anonymous`]: MemoryMappingArena::plan_anonymous
/// [`plan_removal`]: MemoryMappingArena::plan_removal
#[derive(Clone, Copy, Debug)]
#[must_use = "a planned change does nothing until it is applied"]
pub struct Change<'fd> {
    start: usize,
    end: usize,
    pub(super) what: What<'fd>,
}

/// What a [`Change`] makes of its range.
#[derive(Clone, Copy, Debug)]
pub(super) enum What<'fd> {
    Fd {
        fd: BorrowedFd<'fd>,
        /// Checked by [`file_offset`]: page aligned, within `off_t`.
        fd_offset: libc::off_t,
        prot: Protection,
        /// Whether the fd has a size that was checked (regular file, memfd,
        /// block device); views need it.
        sized: bool,
        /// Whether its pages cannot vanish (a memfd sealed against shrinking):
        /// copies of it may be plain.
        plain: bool,
        /// The fd number the layout records (the one the caller named; for a
        /// [`SharedMemory`], its public fd, though its private one is mapped).
        recorded: RawFd,
        /// The identity of the file mapped (from the `fstat` of the plan, or
        /// the [`SharedMemory`]'s own).
        file: Option<FileId>,
        /// `MAP_SHARED`, or `MAP_PRIVATE` (copy-on-write).
        shared: bool,
    },
    Anonymous {
        prot: Protection,
    },
    Protect {
        prot: Protection,
    },
    Remove,
}

impl Change<'_> {
    /// The page range `[start, end)` of the arena the change replaces.
    pub fn range(&self) -> (usize, usize) {
        (self.start, self.end)
    }

    /// Whether views over the range must be detached before the change: every
    /// change but a protection change that keeps `READ | WRITE` (the memory
    /// and its access for a view stay as they are).
    pub fn detaches_views(&self) -> bool {
        !matches!(self.what, What::Protect { prot } if prot.contains(Protection::READ_WRITE))
    }
}

/// What is known of an fd about to be overlaid, from `fstat` or from the
/// [`SharedMemory`] it belongs to.
#[derive(Clone, Copy, Debug)]
struct FdFacts {
    /// Its size, where it has one that was checked (regular file, memfd,
    /// block device); `None` for a device of unknown size.
    size: Option<u64>,
    /// Its huge-page size (hugetlbfs).
    huge_page: Option<u64>,
    /// Whether its pages cannot vanish (sealed against shrinking).
    plain: bool,
    /// The fd number the layout records.
    recorded: RawFd,
    /// The file's identity (`st_dev`, `st_ino`).
    file: Option<FileId>,
}

impl MemoryMappingArena {
    /// Validates an anonymous overlay of `size` bytes at `offset` (range, map
    /// count) without making it.
    pub fn plan_anonymous(
        &self,
        offset: usize,
        size: usize,
        prot: Protection,
    ) -> Result<Change<'static>> {
        let len = mapping_range(offset, size, self.size)?;
        budget::check_room(2)?;
        Ok(Change {
            start: offset,
            end: offset + len,
            what: What::Anonymous { prot },
        })
    }

    /// Validates an overlay of `size` bytes of `fd` from `fd_offset` at
    /// `offset` without making it: range, alignment, `off_t`, end of file and
    /// map count. Regular files (memfds included) and block devices shorter
    /// than `fd_offset + size` are refused: touching pages past their end would
    /// raise `SIGBUS`.
    pub fn plan_fd_mapping<'fd>(
        &self,
        offset: usize,
        size: usize,
        fd: BorrowedFd<'fd>,
        fd_offset: u64,
        prot: Protection,
    ) -> Result<Change<'fd>> {
        self.plan_fd_overlay(offset, size, fd, fd_offset, prot, true)
    }

    /// As [`plan_fd_mapping`](Self::plan_fd_mapping), `MAP_SHARED` (writes
    /// reach the file) or, without `shared`, `MAP_PRIVATE`: copy-on-write,
    /// writes stay in this process and the file never changes (so a read-only
    /// fd may be mapped writable). The rules are the same either way: pages
    /// not yet written are the file's, and past its end they would `SIGBUS`.
    pub fn plan_fd_overlay<'fd>(
        &self,
        offset: usize,
        size: usize,
        fd: BorrowedFd<'fd>,
        fd_offset: u64,
        prot: Protection,
        shared: bool,
    ) -> Result<Change<'fd>> {
        self.plan_fd_with(offset, size, fd, fd_offset, prot, shared, || {
            let sys::Mappable {
                size,
                identity,
                huge_page,
            } = sys::mappable(fd)?;
            Ok(FdFacts {
                size,
                huge_page,
                plain: copy_mode_for_fd(fd, identity) == CopyMode::Plain,
                recorded: fd.as_raw_fd(),
                file: Some(identity),
            })
        })
    }

    /// The rules every fd overlay obeys: range and file offset first, then,
    /// applied to what `known` says of the fd (asked only once those hold),
    /// huge-page alignment, end of file and map count.
    #[allow(clippy::too_many_arguments)]
    fn plan_fd_with<'fd>(
        &self,
        offset: usize,
        size: usize,
        fd: BorrowedFd<'fd>,
        fd_offset: u64,
        prot: Protection,
        shared: bool,
        known: impl FnOnce() -> Result<FdFacts>,
    ) -> Result<Change<'fd>> {
        let len = mapping_range(offset, size, self.size)?;
        let off = file_offset("fdOffset", fd_offset)?;
        let known = known()?;
        if let Some(huge) = known.huge_page {
            check_huge(Some(self.addr as usize + offset), size, fd_offset, huge)?;
        }
        if let Some(file_size) = known.size {
            check_eof(fd_offset, size, file_size)?;
        }
        budget::check_room(2)?;
        Ok(Change {
            start: offset,
            end: offset + len,
            what: What::Fd {
                fd,
                fd_offset: off,
                prot,
                sized: known.size.is_some(),
                plain: known.plain,
                recorded: known.recorded,
                file: known.file,
                shared,
            },
        })
    }

    /// As [`plan_fd_overlay`](Self::plan_fd_overlay) for a [`SharedMemory`]:
    /// maps its private descriptor, which it never hands out, so nothing can
    /// close it or make its number name another file while `shm` lives. Once
    /// sealed against shrinking its size can only grow from the size it had
    /// then, and its huge-page size is known from its creation: a range within
    /// that size needs no `fstat` and no `F_GET_SEALS` (the end-of-file,
    /// huge-page and copy rules are applied to what `shm` knows). Anything
    /// else — not sealed, or a range past the size at sealing (the memfd may
    /// have grown since) — asks the kernel as the fd path does. The layout
    /// records `shm`'s public fd, as if the caller had named it.
    pub fn plan_shm_overlay<'fd>(
        &self,
        offset: usize,
        size: usize,
        shm: &'fd SharedMemory,
        fd_offset: u64,
        prot: Protection,
        shared: bool,
    ) -> Result<Change<'fd>> {
        let fd = shm.private_fd();
        let known = shm.sealed_size().filter(|&sealed| {
            fd_offset
                .checked_add(size as u64)
                .is_some_and(|end| end <= sealed)
        });
        if known.is_none() {
            let mut change = self.plan_fd_overlay(offset, size, fd, fd_offset, prot, shared)?;
            if let What::Fd { recorded, .. } = &mut change.what {
                *recorded = shm.fd();
            }
            return Ok(change);
        }
        let known = FdFacts {
            size: known,
            huge_page: shm.huge_page_size(),
            plain: true,
            recorded: shm.fd(),
            file: Some(shm.identity()),
        };
        self.plan_fd_with(offset, size, fd, fd_offset, prot, shared, || Ok(known))
    }

    /// Validates a change of the protection of `[offset, offset + size)` in
    /// place (`mprotect`: contents and backing kept) without making it. The
    /// range must be mapped throughout (a hole is [`Error::Access`]). Where a
    /// narrower fd overlay over just-detached views is still mapped privately
    /// (until [`reclaim`](Self::reclaim)), it is [`Error::Busy`].
    pub fn plan_protect(
        &self,
        offset: usize,
        size: usize,
        prot: Protection,
    ) -> Result<Change<'static>> {
        let len = mapping_range(offset, size, self.size)?;
        let end = offset + len;
        if self
            .layout
            .check_access(offset, end, Protection::NONE)
            .is_none()
        {
            return Err(Error::Access {
                offset: offset as u64,
                size: size as u64,
                needed: Protection::NONE,
            });
        }
        // Memory held for detached views takes the new protection like any
        // other (read-write until the reclaim, if narrower) — except where a
        // private mapping stands in for a shared one until the reclaim.
        if self.held.shared_overlaps(offset, end) {
            return Err(Error::Busy {
                operation: "protect",
            });
        }
        // mprotect of part of a mapping splits it.
        budget::check_room(2)?;
        Ok(Change {
            start: offset,
            end,
            what: What::Protect { prot },
        })
    }

    /// Validates the removal of `[offset, offset + size)` without making it.
    /// Never refused for the map-count budget: removal must work at the limit.
    pub fn plan_removal(&self, offset: usize, size: usize) -> Result<Change<'static>> {
        let len = mapping_range(offset, size, self.size)?;
        Ok(Change {
            start: offset,
            end: offset + len,
            what: What::Remove,
        })
    }
}
