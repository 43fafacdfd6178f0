//! mapped-region core: the memory-mapping primitives a virtual machine monitor
//! needs, modelled on crosvm's `base::mmap`, with tracked overlays.
//!
//! - [`MappedRegion`]: the trait every region implements (`as_ptr`, `size`,
//!   `add_fd_mapping`, `remove_mapping`), with `msync`/`madvise` on `dyn MappedRegion`.
//! - [`MemoryMapping`]: one anonymous or fd mapping.
//! - [`MemoryMappingArena`]: a `PROT_NONE` reservation that overlays are placed
//!   into, with its layout kept in an ordered map.
//! - [`SharedMemory`]: a sealed memfd.
//! - [`WriteTracker`]: which pages of some ranges were written, by anyone in
//!   the process (threads, the kernel, KVM), recorded by the kernel.
//!
//! - [`AnyRegion`]: either kind, for code that holds regions of both kinds;
//!   [`AnyRegion::load`] reads a file straight into one.
//! - [`rules`]: every rule about arguments (alignment, bounds, end of file,
//!   advice, seals), defined once.
//!
//! This crate has no Node dependency and speaks Rust only: the napi binding in
//! `crate/node` converts arguments and maps [`Error`] to JavaScript errors.

mod any;
mod arena;
pub mod budget;
mod copy;
mod dirty;
mod error;
#[cfg(target_arch = "x86_64")]
mod guard;
mod guest;
mod held;
mod layout;
mod load;
mod mapping;
mod pager;
mod pieces;
mod protection;
mod region;
pub mod rules;
mod shm;
mod slice;
mod sys;

pub use any::{AnyRegion, Atomic, AtomicWord, Window};
pub use arena::{Change, MemoryMappingArena};
pub use copy::CopyMode;
pub use dirty::WriteTracker;
pub use error::{Error, NoTracking, Result};
pub use guest::{GuestBacking, GuestRegion, GuestTable};
pub use layout::{Backing, Layout, MappingInfo};
pub use load::{extend_file, file_load_length, file_size, IoRange};
pub use mapping::{MappingOptions, MemoryMapping};
pub use pager::{Pager, PagerOptions, PagerRange, PagerStatus};
pub use protection::Protection;
pub use region::{populate_supported, MappedRegion, PageRange, Span};
pub use rules::Advice;
pub use shm::SharedMemory;
pub use slice::{MemSlice, MemSliceMut};
pub use sys::page_size;

#[cfg(test)]
pub(crate) mod testutil {
    /// A temporary file holding `content`, already unlinked, opened read-write
    /// (or read-only).
    pub fn unlinked_file(tag: &str, content: &[u8], writable: bool) -> std::fs::File {
        let path = std::env::temp_dir().join(format!("mr-core-{tag}-{}", std::process::id()));
        std::fs::write(&path, content).unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(writable)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        file
    }

    /// A one-page private anonymous mapping that allows reading only.
    pub fn read_only_mapping() -> crate::MemoryMapping {
        let options = crate::MappingOptions {
            protection: crate::Protection::READ,
            ..crate::MappingOptions::anonymous()
        };
        crate::MemoryMapping::anonymous(crate::page_size(), options).unwrap()
    }

    /// Closes a raw fd number a test opened with libc.
    pub fn close_raw(fd: i32) {
        // SAFETY: the test owns the number and uses it no more.
        unsafe { libc::close(fd) };
    }

    /// Borrows a raw fd number for a call (tests only: the number may be
    /// closed, which is what some tests check).
    pub fn borrow(fd: i32) -> std::os::fd::BorrowedFd<'static> {
        // SAFETY: tests pass numbers they keep open for the call, or numbers
        // that are not open at all to see the call fail with EBADF; no Rust
        // object owns them.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
    }

    /// Runs the ignored test `name` of this test binary in a child process (for
    /// tests that change process-wide state: signal dispositions, fd limits,
    /// the map count), returning its exit status and output.
    pub fn in_child(name: &str) -> (std::process::ExitStatus, String) {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                name,
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status, text)
    }

    /// Runs the ignored test `name` in a child process; it must succeed and
    /// print `marker`.
    pub fn child_passes(name: &str, marker: &str) {
        let (status, text) = in_child(name);
        assert!(status.success(), "{text}");
        assert!(text.contains(marker), "{text}");
    }
}
