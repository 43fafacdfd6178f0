//! Page protection bits, independent of the platform's `PROT_*` values.

use std::fmt;

/// Page protection: any combination of [`Protection::READ`], [`Protection::WRITE`]
/// and [`Protection::EXEC`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Protection(u32);

impl Protection {
    /// No access: a reserved range.
    pub const NONE: Protection = Protection(0);
    /// Readable.
    pub const READ: Protection = Protection(1);
    /// Writable.
    pub const WRITE: Protection = Protection(2);
    /// Executable.
    pub const EXEC: Protection = Protection(4);
    /// `READ | WRITE`.
    pub const READ_WRITE: Protection = Protection(3);
    const ALL: u32 = 7;

    /// Parses the public bit value; `None` for unknown bits.
    pub fn from_bits(bits: u32) -> Option<Protection> {
        (bits & !Self::ALL == 0).then_some(Protection(bits))
    }

    /// The public bit value.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// Whether every bit of `other` is set in `self`.
    pub fn contains(self, other: Protection) -> bool {
        self.0 & other.0 == other.0
    }

    /// The `prot` argument of `mmap`.
    pub fn to_prot(self) -> libc::c_int {
        let mut prot = libc::PROT_NONE;
        if self.contains(Self::READ) {
            prot |= libc::PROT_READ;
        }
        if self.contains(Self::WRITE) {
            prot |= libc::PROT_WRITE;
        }
        if self.contains(Self::EXEC) {
            prot |= libc::PROT_EXEC;
        }
        prot
    }
}

impl std::ops::BitOr for Protection {
    type Output = Protection;

    /// Both sets of bits.
    fn bitor(self, other: Protection) -> Protection {
        Protection(self.0 | other.0)
    }
}

impl fmt::Display for Protection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("NONE");
        }
        let names = [
            (Self::READ, "READ"),
            (Self::WRITE, "WRITE"),
            (Self::EXEC, "EXEC"),
        ];
        let mut first = true;
        for (bit, name) in names {
            if self.contains(bit) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_round_trip_and_reject_unknown() {
        assert_eq!(Protection::from_bits(3), Some(Protection::READ_WRITE));
        assert_eq!(Protection::from_bits(8), None);
        assert_eq!(
            Protection::READ_WRITE.to_prot(),
            libc::PROT_READ | libc::PROT_WRITE
        );
        assert_eq!(Protection::NONE.to_prot(), libc::PROT_NONE);
        assert!(Protection::READ_WRITE.contains(Protection::READ));
        assert!(!Protection::READ.contains(Protection::WRITE));
        assert_eq!(
            Protection::from_bits(7).unwrap().to_string(),
            "READ|WRITE|EXEC"
        );
        assert_eq!(Protection::NONE.to_string(), "NONE");
    }
}
