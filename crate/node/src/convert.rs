//! Conversions from what N-API hands over (doubles, BigInt words) to the
//! core's types. These are the only rules the binding owns: which JavaScript
//! numbers stand for which integers. What the integers may be (aligned, in
//! bounds, …) is the core's rule (`mapped_region::rules`).

use std::os::fd::BorrowedFd;

use mapped_region::{Advice, Error, Protection};

use crate::errors::Result;

/// The largest integer a JS number holds exactly.
const MAX_SAFE: f64 = 9_007_199_254_740_991.0;

/// `value` as an integer when it is one and lies in `[lo, hi]` (both within
/// ±2^53); `None` for fractions, NaN and infinities. The round trip through
/// `i64` is exact in that range and needs no libm call (`f64::fract` calls
/// `trunc` on baseline x86-64).
pub fn int_in(value: f64, lo: f64, hi: f64) -> Option<i64> {
    if !(value >= lo && value <= hi) {
        return None;
    }
    let int = value as i64;
    (int as f64 == value).then_some(int)
}

/// A non-negative safe integer (an offset, a size, a length).
pub fn index(what: &'static str, value: f64) -> Result<usize> {
    match int_in(value, 0.0, MAX_SAFE) {
        Some(int) => Ok(int as usize),
        None => Err(Error::OutOfRange {
            what,
            reason: format!("it must be a non-negative safe integer. Received {value}"),
        }
        .into()),
    }
}

/// A file descriptor number: `0..=INT32_MAX`. Whether it is open is the
/// kernel's answer.
pub fn fd(value: f64) -> Result<i32> {
    match int_in(value, 0.0, i32::MAX.into()) {
        Some(int) => Ok(int as i32),
        None => Err(Error::OutOfRange {
            what: "fd",
            reason: format!(
                "it must be an integer >= 0 and <= {}. Received {value}",
                i32::MAX
            ),
        }
        .into()),
    }
}

/// Protection bits: an integer combination of `READ | WRITE | EXEC`.
pub fn protection(value: f64) -> Result<Protection> {
    int_in(value, 0.0, u32::MAX.into())
        .and_then(|bits| Protection::from_bits(bits as u32))
        .ok_or_else(|| {
            Error::OutOfRange {
                what: "protection",
                reason: format!(
                    "it must be a combination of Protection.READ, WRITE and EXEC (0 to 7). Received {value}"
                ),
            }
            .into()
        })
}

/// An `madvise` advice number, checked by the core's [`Advice::new`].
pub fn advice(value: f64) -> Result<Advice> {
    let raw = int_in(value, i32::MIN.into(), i32::MAX.into()).map_or(-1, |v| v as i32);
    Ok(Advice::new(raw)?)
}

/// A seal bit set as an `int` (the core checks which bits are known).
pub fn seals(value: f64) -> Result<i32> {
    int_in(value, 0.0, i32::MAX.into())
        .map(|v| v as i32)
        .ok_or_else(|| {
            Error::OutOfRange {
                what: "seals",
                reason: format!("it must be a combination of Seal bits. Received {value}"),
            }
            .into()
        })
}

/// A BigInt file offset read as (sign, magnitude, lossless): non-negative and
/// 64-bit (the core checks alignment and `off_t`).
pub fn big_offset(what: &'static str, negative: bool, value: u64, lossless: bool) -> Result<u64> {
    u64_value(what, negative, value, lossless)
}

/// A file descriptor number (`0..=INT32_MAX`, from [`fd`]) borrowed for the
/// system calls of one synchronous binding call.
///
/// # Safety
/// The caller must not let the result outlive the current call into the
/// binding. Within it no JavaScript runs on this thread; if the number is not
/// open, the first system call made with it (fstat) fails with `EBADF`. The
/// core neither closes nor keeps it (overlays that must outlive the call
/// duplicate it).
pub unsafe fn borrow_fd<'a>(fd: i32) -> BorrowedFd<'a> {
    // SAFETY: `fd` is never -1 (it comes from `fd`); its lifetime is the
    // caller's promise above.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// A 32-bit unsigned value (of an atomic operation): an integer in `[0, 2^32)`.
pub fn u32_value(what: &'static str, value: f64) -> Result<u32> {
    int_in(value, 0.0, u32::MAX.into())
        .map(|v| v as u32)
        .ok_or_else(|| {
            Error::OutOfRange {
                what,
                reason: format!("it must be an integer >= 0 and <= 4294967295. Received {value}"),
            }
            .into()
        })
}

/// A 64-bit unsigned value (of an atomic operation) read from a BigInt as
/// (sign, magnitude, lossless).
pub fn u64_value(what: &'static str, negative: bool, value: u64, lossless: bool) -> Result<u64> {
    if negative || !lossless {
        return Err(Error::OutOfRange {
            what,
            reason: "it must be a non-negative 64-bit integer".into(),
        }
        .into());
    }
    Ok(value)
}
