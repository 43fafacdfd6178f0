//! Second-line validation of numbers that reach native code. The facade has
//! already checked them; these checks make a direct call to the binding safe too.

use mapped_region::{Error, Protection, Result};

/// The largest integer a JS number holds exactly.
const MAX_SAFE: f64 = 9_007_199_254_740_991.0;

/// A non-negative safe integer as `usize`.
pub fn index(what: &'static str, value: f64) -> Result<usize> {
    if !(value.is_finite() && value.fract() == 0.0 && (0.0..=MAX_SAFE).contains(&value)) {
        return Err(Error::OutOfRange {
            what,
            reason: format!("must be a non-negative safe integer, got {value}"),
        });
    }
    Ok(value as usize)
}

/// A file descriptor: any integer in the `int` range (the kernel judges it).
pub fn fd(value: f64) -> Result<i32> {
    if !(value.is_finite()
        && value.fract() == 0.0
        && value >= i32::MIN as f64
        && value <= i32::MAX as f64)
    {
        return Err(Error::OutOfRange {
            what: "fd",
            reason: format!("must be a 32-bit integer, got {value}"),
        });
    }
    Ok(value as i32)
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
