//! Every rule about the arguments of a mapping operation, defined once:
//! alignment, bounds, sizes, file offsets, end of file, advice and seals.
//! The regions call these; the binding calls them too where it must check a
//! value before it reaches a region (a `GuestMemory` spec), never a copy.

use crate::{page_size, Error, Result};

/// Checks that `value` is a multiple of the page size.
pub fn check_aligned(what: &'static str, value: u64) -> Result<()> {
    // The page size is a power of two: a mask, not a division.
    if value & (page_size() as u64 - 1) != 0 {
        return Err(Error::Unaligned { what, value });
    }
    Ok(())
}

/// Checks that `[offset, offset + size)` lies inside `[0, limit)`, without
/// overflow. Returns the end of the range.
pub fn check_bounds(offset: usize, size: usize, limit: usize) -> Result<usize> {
    match offset.checked_add(size) {
        Some(end) if end <= limit => Ok(end),
        _ => Err(Error::OutOfBounds {
            offset: offset as u64,
            size: size as u64,
            limit: limit as u64,
        }),
    }
}

/// `size` rounded up to whole pages, or `None` on overflow.
pub fn round_up_to_page(size: usize) -> Option<usize> {
    let mask = page_size() - 1;
    size.checked_add(mask).map(|s| s & !mask)
}

/// A range that starts a kernel call (`msync`, `madvise`, a populate): page
/// aligned offset, inside `[0, limit)`. Returns the length in whole pages the
/// call covers (0 for a size of 0).
pub fn syscall_range(offset: usize, size: usize, limit: usize) -> Result<usize> {
    check_aligned("offset", offset as u64)?;
    check_bounds(offset, size, limit)?;
    // offset + size <= limit, and a region's length is whole pages: the pages
    // the range touches stay inside it. round_up cannot overflow as size <= limit.
    Ok(round_up_to_page(size).unwrap_or(size))
}

/// A range whose pages are discarded (`discard`): offset *and* size page
/// aligned, inside `[0, limit)`. Unlike [`syscall_range`], the size is not
/// rounded up: discarding destroys contents, so no byte the caller did not
/// name may go with the last page. A size of 0 is allowed (nothing happens).
pub fn discard_range(offset: usize, size: usize, limit: usize) -> Result<()> {
    check_aligned("offset", offset as u64)?;
    check_aligned("size", size as u64)?;
    check_bounds(offset, size, limit)?;
    Ok(())
}

/// A range that creates or removes a mapping inside a region: as
/// [`syscall_range`], and the size is greater than 0.
pub fn mapping_range(offset: usize, size: usize, limit: usize) -> Result<usize> {
    check_size(size)?;
    syscall_range(offset, size, limit)
}

/// The size of a new mapping: greater than 0, representable in whole pages
/// of the address space. Returns the length in whole pages.
pub fn mapping_len(size: usize) -> Result<usize> {
    check_size(size)?;
    round_up_to_page(size)
        .filter(|&len| len <= isize::MAX as usize)
        .ok_or_else(|| Error::OutOfRange {
            what: "size",
            reason: format!("{size} is larger than the address space"),
        })
}

fn check_size(size: usize) -> Result<()> {
    if size == 0 {
        return Err(Error::ZeroSize { what: "size" });
    }
    Ok(())
}

/// An offset into a file that a mapping starts at: page aligned and within `off_t`.
pub fn file_offset(what: &'static str, offset: u64) -> Result<libc::off_t> {
    check_aligned(what, offset)?;
    file_position(what, offset)
}

/// A byte position in a file (where a read starts): within `off_t`.
pub fn file_position(what: &'static str, offset: u64) -> Result<libc::off_t> {
    libc::off_t::try_from(offset).map_err(|_| Error::OutOfRange {
        what,
        reason: format!("{offset} does not fit in off_t"),
    })
}

/// How many bytes a load of a file from `offset` reads: `length` when given;
/// otherwise the rest of the file (`file_size`, from `fstat`, for regular
/// files and block devices), 0 from past its end. A file whose size is not
/// known (a character device) needs a length.
pub fn load_length(offset: u64, length: Option<usize>, file_size: Option<u64>) -> Result<usize> {
    file_position("offset", offset)?;
    match (length, file_size) {
        (Some(length), _) => Ok(length),
        (None, Some(size)) => usize::try_from(size.saturating_sub(offset)).map_err(|_| Error::OutOfRange {
            what: "length",
            reason: format!("the rest of the file, {} bytes, is larger than the address space", size - offset),
        }),
        (None, None) => Err(Error::InvalidArgument {
            what: "length",
            reason: "must be given for a file whose size is not known (not a regular file or block device)".into(),
        }),
    }
}

/// The alignment of a reservation: a power of two, at least the page size
/// (e.g. 2 MiB or 1 GiB, so that huge-page backings can be overlaid).
pub fn check_alignment(align: usize) -> Result<()> {
    if !align.is_power_of_two() || align < page_size() {
        return Err(Error::OutOfRange {
            what: "align",
            reason: format!(
                "it must be a power of two >= the page size ({}). Received {align}",
                page_size()
            ),
        });
    }
    Ok(())
}

/// The huge page size a memfd asks for (`MFD_HUGETLB` with `MFD_HUGE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HugePages {
    /// The system's default huge page size.
    Default,
    /// 2 MiB pages (`MFD_HUGE_2MB`).
    Size2M,
    /// 1 GiB pages (`MFD_HUGE_1GB`).
    Size1G,
}

impl HugePages {
    /// The `memfd_create` flags that ask for these pages.
    pub fn memfd_flags(self) -> libc::c_uint {
        // MFD_HUGE_SHIFT is 26; the size is log2 of the page size.
        const SHIFT: libc::c_uint = 26;
        libc::MFD_HUGETLB
            | match self {
                HugePages::Default => 0,
                HugePages::Size2M => 21 << SHIFT,
                HugePages::Size1G => 30 << SHIFT,
            }
    }
}

/// A mapping of a huge-page file (hugetlbfs, `MFD_HUGETLB`) of pages of
/// `page_size` bytes: its address (where it is placed; `None` where the kernel
/// picks one), size and file offset must all be multiples of it. The kernel
/// refuses anything else (`EINVAL`) — checked here so that nothing is asked.
pub fn check_huge(
    address: Option<usize>,
    size: usize,
    fd_offset: u64,
    page_size: u64,
) -> Result<()> {
    let unaligned = |what, value: u64| Error::HugeUnaligned {
        what,
        value,
        page_size,
    };
    if let Some(address) = address {
        if !(address as u64).is_multiple_of(page_size) {
            return Err(unaligned("offset", address as u64));
        }
    }
    if !(size as u64).is_multiple_of(page_size) {
        return Err(unaligned("size", size as u64));
    }
    if !fd_offset.is_multiple_of(page_size) {
        return Err(unaligned("fdOffset", fd_offset));
    }
    Ok(())
}

/// An atomic access of `width` bytes (4 or 8) at `offset`: naturally aligned,
/// as the hardware needs (the region starts on a page, so alignment of the
/// offset is alignment of the address).
pub fn check_atomic(offset: usize, width: usize) -> Result<()> {
    if !offset.is_multiple_of(width) {
        return Err(Error::Misaligned {
            offset: offset as u64,
            width: width as u64,
        });
    }
    Ok(())
}

/// Refuses a mapping of `size` bytes from `fd_offset` of a file (or memfd, or
/// block device) of `file_size` bytes that reaches past its end: touching a
/// page there raises `SIGBUS`.
pub fn check_eof(fd_offset: u64, size: usize, file_size: u64) -> Result<()> {
    let needed = fd_offset.saturating_add(size as u64);
    if needed > file_size {
        return Err(Error::BeyondEof { needed, file_size });
    }
    Ok(())
}

/// An `madvise` advice this library passes to the kernel. Made only by
/// [`Advice::new`], which refuses the advices that turn memory into a trap, so
/// a region's `madvise` cannot make a later access through a view or a copy
/// kill the process (memmap2 makes the same split with `UncheckedAdvice`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advice(i32);

/// `MADV_HWPOISON` and `MADV_GUARD_INSTALL`: the pages fault on every access.
const TRAP_ADVICE: [i32; 2] = [100, 102];

/// Advices that act on pages only and never change a mapping's flags:
/// `WILLNEED`, `DONTNEED`, `FREE`, `REMOVE`, `COLD`, `PAGEOUT`,
/// `POPULATE_READ`/`_WRITE`, `DONTNEED_LOCKED`, `COLLAPSE`, `SOFT_OFFLINE`,
/// `GUARD_REMOVE`.
const PAGES_ONLY_ADVICE: [i32; 12] = [3, 4, 8, 9, 20, 21, 22, 23, 24, 25, 101, 103];

impl Advice {
    /// `MADV_POPULATE_READ` (Linux 5.14).
    pub const POPULATE_READ: Advice = Advice(22);
    /// `MADV_POPULATE_WRITE` (Linux 5.14).
    pub const POPULATE_WRITE: Advice = Advice(23);

    /// `MADV_DONTNEED`: private pages are dropped (anonymous memory reads as
    /// zeros again, a private file mapping as the file).
    pub const DONTNEED: Advice = Advice(libc::MADV_DONTNEED);
    /// `MADV_REMOVE`: the backing store of shared memory is freed (a hole is
    /// punched in the file or memfd, as `fallocate(PUNCH_HOLE | KEEP_SIZE)`).
    pub const REMOVE: Advice = Advice(libc::MADV_REMOVE);

    /// The advice that discards pages of a mapping: `MADV_REMOVE` where it is
    /// `MAP_SHARED` (the memory is the file's or memfd's: only freeing the
    /// backing store discards it — `MADV_DONTNEED` would only unmap the pages,
    /// which would read back as before), `MADV_DONTNEED` where it is
    /// `MAP_PRIVATE` (the memory is this process's copy). crosvm's
    /// `remove_range` always asks `MADV_REMOVE` (private memory refuses it);
    /// QEMU's `ram_block_discard_range` splits by backing, as here.
    pub fn discarding(shared: bool) -> Advice {
        if shared {
            Advice::REMOVE
        } else {
            Advice::DONTNEED
        }
    }

    /// The raw Linux advice `raw`, unless it is negative or one that makes
    /// memory fault on access (`MADV_HWPOISON`, `MADV_GUARD_INSTALL`).
    /// Unknown numbers are passed on: the kernel judges them.
    pub fn new(raw: i32) -> Result<Advice> {
        if raw < 0 || TRAP_ADVICE.contains(&raw) {
            return Err(Error::OutOfRange {
                what: "advice",
                reason: format!(
                    "{raw} is not an advice this library passes on (it could make the memory fault)"
                ),
            });
        }
        Ok(Advice(raw))
    }

    /// The Linux advice number.
    pub fn raw(self) -> i32 {
        self.0
    }

    /// Whether the advice may change a mapping's flags, and so split it into
    /// up to three kernel mappings. Unknown numbers are assumed to.
    pub fn may_split(self) -> bool {
        !PAGES_ONLY_ADVICE.contains(&self.0)
    }
}

/// The seals [`SharedMemory::add_seals`](crate::SharedMemory::add_seals)
/// accepts: `F_SEAL_SEAL | SHRINK | GROW | WRITE | FUTURE_WRITE`.
pub fn check_seals(seals: i32) -> Result<()> {
    const KNOWN: i32 = libc::F_SEAL_SEAL
        | libc::F_SEAL_SHRINK
        | libc::F_SEAL_GROW
        | libc::F_SEAL_WRITE
        | libc::F_SEAL_FUTURE_WRITE;
    if seals < 0 || seals & !KNOWN != 0 {
        return Err(Error::OutOfRange {
            what: "seals",
            reason: format!("{seals} has bits other than the known seals (0 to {KNOWN})"),
        });
    }
    Ok(())
}

/// The longest memfd name the kernel takes, in bytes (`NAME_MAX` minus the
/// `memfd:` prefix).
pub const MEMFD_NAME_MAX: usize = 249;

/// A memfd name: no NUL byte, at most [`MEMFD_NAME_MAX`] bytes.
pub fn memfd_name(name: &str) -> Result<std::ffi::CString> {
    if name.len() > MEMFD_NAME_MAX {
        return Err(Error::OutOfRange {
            what: "name",
            reason: format!(
                "{} bytes long, at most {MEMFD_NAME_MAX} are allowed",
                name.len()
            ),
        });
    }
    std::ffi::CString::new(name).map_err(|_| Error::InvalidArgument {
        what: "name",
        reason: "must not contain NUL bytes".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discard_ranges_are_whole_pages_inside_the_region() {
        let ps = page_size();
        assert_eq!(discard_range(ps, 2 * ps, 4 * ps), Ok(()));
        assert_eq!(discard_range(0, 0, 0), Ok(()));
        assert!(matches!(
            discard_range(1, ps, 4 * ps),
            Err(Error::Unaligned { what: "offset", .. })
        ));
        assert!(matches!(
            discard_range(0, ps + 1, 4 * ps),
            Err(Error::Unaligned { what: "size", .. })
        ));
        assert!(matches!(
            discard_range(ps, 4 * ps, 4 * ps),
            Err(Error::OutOfBounds { .. })
        ));
        assert!(matches!(
            discard_range(usize::MAX & !(ps - 1), 2 * ps, usize::MAX),
            Err(Error::OutOfBounds { .. })
        ));
        assert_eq!(Advice::discarding(true).raw(), libc::MADV_REMOVE);
        assert_eq!(Advice::discarding(false).raw(), libc::MADV_DONTNEED);
    }

    #[test]
    fn bounds_catch_overflow_and_overreach() {
        assert_eq!(check_bounds(0, 10, 10), Ok(10));
        assert!(matches!(
            check_bounds(5, 6, 10),
            Err(Error::OutOfBounds { .. })
        ));
        assert!(matches!(
            check_bounds(usize::MAX, 2, usize::MAX),
            Err(Error::OutOfBounds { .. })
        ));
    }

    #[test]
    fn ranges_need_alignment_and_a_size() {
        let ps = page_size();
        assert!(matches!(
            mapping_range(1, ps, 4 * ps),
            Err(Error::Unaligned { what: "offset", .. })
        ));
        assert!(matches!(
            mapping_range(0, 0, 4 * ps),
            Err(Error::ZeroSize { .. })
        ));
        assert_eq!(mapping_range(ps, 1, 4 * ps), Ok(ps));
        assert_eq!(syscall_range(0, 0, 4 * ps), Ok(0));
        assert!(matches!(
            mapping_len(usize::MAX),
            Err(Error::OutOfRange { .. })
        ));
        assert_eq!(mapping_len(1), Ok(ps));
    }

    #[test]
    fn file_offsets_fit_off_t_and_eof_is_checked() {
        let ps = page_size() as u64;
        assert_eq!(file_offset("fdOffset", ps), Ok(ps as libc::off_t));
        assert!(matches!(
            file_offset("fdOffset", 1),
            Err(Error::Unaligned { .. })
        ));
        assert!(matches!(
            file_offset("fdOffset", !(ps - 1)),
            Err(Error::OutOfRange { .. })
        ));
        assert!(check_eof(0, 10, 10).is_ok());
        assert_eq!(
            check_eof(8, 4, 10),
            Err(Error::BeyondEof {
                needed: 12,
                file_size: 10
            })
        );
    }

    #[test]
    fn advice_refuses_traps_and_knows_which_split() {
        assert_eq!(Advice::new(libc::MADV_WILLNEED).map(Advice::raw), Ok(3));
        assert!(Advice::new(100).is_err());
        assert!(Advice::new(102).is_err());
        assert!(Advice::new(-1).is_err());
        assert!(!Advice::new(libc::MADV_DONTNEED).unwrap().may_split());
        assert!(Advice::new(libc::MADV_DONTFORK).unwrap().may_split());
        assert!(Advice::new(12345).unwrap().may_split());
    }

    #[test]
    fn seals_and_names() {
        assert!(check_seals(libc::F_SEAL_GROW | libc::F_SEAL_SEAL).is_ok());
        assert!(check_seals(64).is_err());
        assert!(check_seals(-1).is_err());
        assert!(memfd_name("ram").is_ok());
        assert!(matches!(
            memfd_name("a\0b"),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            memfd_name(&"x".repeat(250)),
            Err(Error::OutOfRange { .. })
        ));
        assert!(memfd_name(&"x".repeat(249)).is_ok());
    }
}
