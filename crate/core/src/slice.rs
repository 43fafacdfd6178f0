//! Memory that may change under the process: guest memory (written by a KVM
//! guest, other threads, other processes sharing a memfd) and JavaScript
//! buffers, which may be views of it. A Rust reference asserts that the bytes
//! behind it do not change (`&[u8]`) or that nothing else reaches them
//! (`&mut [u8]`); neither holds here, so such memory travels as a pointer and
//! a length ([`MemSlice`] to read, [`MemSliceMut`] to write) and is only ever
//! touched through raw copies: `ptr::copy` (memmove, as two slices may
//! overlap), the guarded copy, or the kernel (`pread`, `process_vm_readv`, …).
//!
//! No reference is formed over it anywhere in the core or the binding but for
//! one atomic word at a time (`any.rs`): `scripts/check-raw-refs.mjs` (run by
//! `npm run lint`) fails on code that makes a reference from a raw pointer
//! without a `raw-ref:` comment saying why. Memory Rust owns (a `Vec`, an
//! array) converts into these types safely, for its borrow.

use std::cell::Cell;
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use crate::rules::check_bounds;
use crate::Result;

/// `len` bytes at `ptr` that may be read but may change at any time, for the
/// lifetime `'a`. `Copy`: several may cover the same bytes.
#[derive(Clone, Copy, Debug)]
pub struct MemSlice<'a> {
    ptr: *const u8,
    len: usize,
    _memory: PhantomData<&'a [Cell<u8>]>,
}

/// `len` bytes at `ptr` that may be read and written, and may change at any
/// time, for the lifetime `'a`. `Copy`: unlike `&mut [u8]` it claims no
/// exclusive access, and several (and [`MemSlice`]s) may cover the same bytes.
#[derive(Clone, Copy, Debug)]
pub struct MemSliceMut<'a> {
    ptr: *mut u8,
    len: usize,
    _memory: PhantomData<&'a [Cell<u8>]>,
}

/// The length of a copy from a slice of `src` bytes into one of `dst`.
///
/// # Panics
/// If they differ.
#[track_caller]
#[inline]
pub(crate) fn copy_len(dst: usize, src: usize) -> usize {
    assert_eq!(dst, src, "copy between slices of different lengths");
    src
}

/// A pointer any copy of zero bytes may take (`ptr::copy` wants one non-null).
#[inline]
fn start<T>(ptr: *mut T, len: usize) -> *mut T {
    if len == 0 || ptr.is_null() {
        NonNull::dangling().as_ptr()
    } else {
        ptr
    }
}

/// What both slice types have: `len`, `is_empty`, `as_ptr` and `sub`.
macro_rules! slice_methods {
    ($slice:ident, $ptr:ty) => {
        impl<'a> $slice<'a> {
            /// The length in bytes.
            #[inline]
            pub fn len(self) -> usize {
                self.len
            }

            /// Whether it is empty.
            #[inline]
            pub fn is_empty(self) -> bool {
                self.len == 0
            }

            /// The first byte (never null).
            #[inline]
            pub fn as_ptr(self) -> $ptr {
                self.ptr
            }

            /// `len` bytes from `offset`:
            /// [`Error::OutOfBounds`](crate::Error::OutOfBounds) past the end.
            pub fn sub(self, offset: usize, len: usize) -> Result<Self> {
                check_bounds(offset, len, self.len)?;
                // SAFETY: inside `self` (checked above), so as valid as it for `'a`.
                Ok(unsafe { Self::new(self.ptr.add(offset), len) })
            }
        }
    };
}

slice_methods!(MemSlice, *const u8);
slice_methods!(MemSliceMut, *mut u8);

impl<'a> MemSlice<'a> {
    /// The `len` bytes at `ptr` (a null `ptr` only with `len` 0).
    ///
    /// # Safety
    /// For `'a`, `[ptr, ptr + len)` must lie in this process's address space
    /// and stay mapped readable. Its bytes may change at any time; a page may
    /// vanish under a file mapping (touched, it raises `SIGBUS`, which only the
    /// fault-safe copies turn into an error).
    #[inline]
    pub unsafe fn new(ptr: *const u8, len: usize) -> Self {
        MemSlice {
            ptr: start(ptr.cast_mut(), len),
            len: if ptr.is_null() { 0 } else { len },
            _memory: PhantomData,
        }
    }

    /// A copy of the bytes as they are now, in memory Rust owns.
    pub fn to_vec(self) -> Vec<u8> {
        let mut out = vec![0u8; self.len];
        MemSliceMut::from(out.as_mut_slice()).copy_from(self);
        out
    }
}

impl<'a> MemSliceMut<'a> {
    /// The `len` bytes at `ptr` (a null `ptr` only with `len` 0).
    ///
    /// # Safety
    /// As [`MemSlice::new`], with the range mapped writable too, at memory the
    /// caller may overwrite.
    #[inline]
    pub unsafe fn new(ptr: *mut u8, len: usize) -> Self {
        MemSliceMut {
            ptr: start(ptr, len),
            len: if ptr.is_null() { 0 } else { len },
            _memory: PhantomData,
        }
    }

    /// The same bytes, to read.
    #[inline]
    pub fn as_const(self) -> MemSlice<'a> {
        MemSlice {
            ptr: self.ptr,
            len: self.len,
            _memory: PhantomData,
        }
    }

    /// Copies `src` into `self` like `memmove` (they may overlap). A page of
    /// either that vanishes under a file mapping raises `SIGBUS`: memory that
    /// may do so is copied with the fault-safe copies instead.
    ///
    /// # Panics
    /// If the lengths differ.
    #[inline]
    pub fn copy_from(self, src: MemSlice<'_>) {
        let len = copy_len(self.len, src.len);
        // Both are mapped for their lifetimes (their constructors' contracts),
        // `self` writable, neither null; `ptr::copy` is memmove, so an overlap
        // is copied right. No reference is formed: bytes another agent changes
        // meanwhile are copied as they are found.
        // SAFETY: as just said.
        unsafe { ptr::copy(src.ptr, self.ptr, len) }
    }
}

impl<'a> From<&'a [u8]> for MemSlice<'a> {
    #[inline]
    fn from(bytes: &'a [u8]) -> Self {
        // SAFETY: a borrowed slice is readable for `'a`, and does not change.
        unsafe { MemSlice::new(bytes.as_ptr(), bytes.len()) }
    }
}

impl<'a, const N: usize> From<&'a [u8; N]> for MemSlice<'a> {
    #[inline]
    fn from(bytes: &'a [u8; N]) -> Self {
        MemSlice::from(&bytes[..])
    }
}

impl<'a> From<&'a Vec<u8>> for MemSlice<'a> {
    #[inline]
    fn from(bytes: &'a Vec<u8>) -> Self {
        MemSlice::from(bytes.as_slice())
    }
}

impl<'a> From<MemSliceMut<'a>> for MemSlice<'a> {
    #[inline]
    fn from(bytes: MemSliceMut<'a>) -> Self {
        bytes.as_const()
    }
}

impl<'a> From<&'a mut [u8]> for MemSliceMut<'a> {
    #[inline]
    fn from(bytes: &'a mut [u8]) -> Self {
        // SAFETY: a slice borrowed exclusively is ours to read and write for
        // `'a`; the copies `MemSliceMut` allows are all through its pointer.
        unsafe { MemSliceMut::new(bytes.as_mut_ptr(), bytes.len()) }
    }
}

impl<'a, const N: usize> From<&'a mut [u8; N]> for MemSliceMut<'a> {
    #[inline]
    fn from(bytes: &'a mut [u8; N]) -> Self {
        MemSliceMut::from(&mut bytes[..])
    }
}

impl<'a> From<&'a mut Vec<u8>> for MemSliceMut<'a> {
    #[inline]
    fn from(bytes: &'a mut Vec<u8>) -> Self {
        MemSliceMut::from(bytes.as_mut_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn copies_like_memmove_within_one_buffer() {
        let mut buf: Vec<u8> = (0..32).collect();
        let mut want = buf.clone();
        let all = MemSliceMut::from(&mut buf);
        all.sub(4, 16)
            .unwrap()
            .copy_from(all.sub(0, 16).unwrap().as_const());
        want.copy_within(0..16, 4);
        all.sub(0, 16)
            .unwrap()
            .copy_from(all.sub(10, 16).unwrap().as_const());
        want.copy_within(10..26, 0);
        assert_eq!(all.as_const().to_vec(), want);
        assert_eq!(buf, want);
    }

    #[test]
    fn sub_slices_stay_inside_and_empty_ones_have_a_pointer() {
        let bytes = [1u8, 2, 3];
        let s = MemSlice::from(&bytes);
        assert_eq!(s.sub(1, 2).unwrap().to_vec(), [2, 3]);
        assert!(matches!(s.sub(2, 2), Err(Error::OutOfBounds { .. })));
        assert!(matches!(
            s.sub(usize::MAX, 2),
            Err(Error::OutOfBounds { .. })
        ));
        // SAFETY: an empty slice touches nothing.
        let empty = unsafe { MemSliceMut::new(ptr::null_mut(), 0) };
        assert!(empty.is_empty() && !empty.as_ptr().is_null());
        empty.copy_from(s.sub(3, 0).unwrap());
    }
}
