//! Second-line validation of numbers that reach native code. The facade has
//! already checked them; these checks make a direct call to the binding safe too.

use mapped_region::{Error, Protection, Result};

/// The largest integer a JS number holds exactly.
const MAX_SAFE: f64 = 9_007_199_254_740_991.0;

/// `value` as an integer when it is one and lies in `[lo, hi]` (both within
/// ±2^53); `None` for fractions, NaN and infinities. The round trip through
/// `i64` is exact in that range and, unlike `f64::fract`, compiles to two
/// instructions instead of a libm `trunc` call on baseline x86-64 — this runs
/// on every hot call.
pub fn int_in(value: f64, lo: f64, hi: f64) -> Option<i64> {
    if !(value >= lo && value <= hi) {
        return None;
    }
    let int = value as i64;
    (int as f64 == value).then_some(int)
}

/// A non-negative safe integer as `usize`.
pub fn index(what: &'static str, value: f64) -> Result<usize> {
    match int_in(value, 0.0, MAX_SAFE) {
        Some(int) => Ok(int as usize),
        None => Err(Error::OutOfRange {
            what,
            reason: format!("must be a non-negative safe integer, got {value}"),
        }),
    }
}

/// A file descriptor: any integer in the `int` range (the kernel judges it).
pub fn fd(value: f64) -> Result<i32> {
    match int_in(value, i32::MIN.into(), i32::MAX.into()) {
        Some(int) => Ok(int as i32),
        None => Err(Error::OutOfRange {
            what: "fd",
            reason: format!("must be a 32-bit integer, got {value}"),
        }),
    }
}

/// A protection bit set.
pub fn protection(value: u32) -> Result<Protection> {
    Protection::from_bits(value).ok_or_else(|| Error::OutOfRange {
        what: "protection",
        reason: format!("{value} has bits other than READ | WRITE | EXEC"),
    })
}

/// A BigInt file offset: non-negative, 64-bit.
pub fn big_offset(sign_bit: bool, value: u64, lossless: bool) -> Result<u64> {
    if sign_bit || !lossless {
        return Err(Error::OutOfRange {
            what: "fdOffset",
            reason: "must be a non-negative 64-bit integer".into(),
        });
    }
    Ok(value)
}
