//! mapped-region core: the memory-mapping primitives a virtual machine monitor
//! needs, modelled on crosvm's `base::mmap`, with tracked overlays.
//!
//! - [`MappedRegion`]: the trait every region implements (`as_ptr`, `size`,
//!   `add_fd_mapping`, `remove_mapping`), with `msync`/`madvise` on `dyn MappedRegion`.
//! - [`MemoryMapping`]: one anonymous or fd mapping.
//! - [`MemoryMappingArena`]: a `PROT_NONE` reservation that overlays are placed
//!   into, with its layout kept in an ordered map.
//! - [`SharedMemory`]: a sealed memfd.
//!
//! This crate has no Node dependency: the napi glue lives in the root crate.

mod arena;
pub mod budget;
pub mod copy;
mod error;
#[cfg(target_arch = "x86_64")]
mod guard;
mod held;
mod layout;
mod mapping;
mod protection;
mod region;
mod shm;
pub mod sys;

pub use arena::{Change, MemoryMappingArena};
pub use error::{errno_name, Error, ErrorClass, Result};
pub use layout::{Backing, Layout, MappingInfo};
pub use mapping::{MappingOptions, MemoryMapping};
pub use protection::Protection;
pub use region::{
    check_advice, check_aligned, check_bounds, check_syscall_range, madvise_range, msync_range,
    populate_range, populate_supported, round_up_to_page, touch_pages, CopyMode, MappedRegion,
    MADV_POPULATE_READ, MADV_POPULATE_WRITE,
};
pub use shm::SharedMemory;
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
