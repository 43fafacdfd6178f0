//! An ordered map from offsets to values, for the layout's pieces: a sorted
//! `Vec` while it is small, a `BTreeMap` once it is large.
//!
//! Most arenas hold a handful of overlays, and each overlay added or removed
//! looks its neighbours up a few times. In a `BTreeMap` every look-up builds a
//! range (two edge searches) and every removal shuffles a node; in a short
//! sorted `Vec` the same is a binary search over a few cache lines and a
//! small `memmove`. Past [`SMALL_MAX`] entries a `Vec`'s insertions in the
//! middle would cost O(n), so the map becomes a `BTreeMap` (O(log n)), and
//! goes back below [`SMALL_MIN`] (the gap keeps a map that hovers around one
//! size from converting back and forth: each conversion, O(n), is paid for by
//! at least `SMALL_MAX - SMALL_MIN` operations since the last).

use std::collections::{btree_map, BTreeMap};

/// The most entries kept in a `Vec`.
pub const SMALL_MAX: usize = 64;
/// A `BTreeMap` with fewer entries than this becomes a `Vec` again.
pub const SMALL_MIN: usize = 32;

#[derive(Debug, Clone)]
enum Repr<V> {
    Small(Vec<(usize, V)>),
    Large(BTreeMap<usize, V>),
}

/// An ordered map from `usize` keys to `V`.
#[derive(Debug, Clone)]
pub struct Pieces<V> {
    repr: Repr<V>,
}

impl<V> Default for Pieces<V> {
    fn default() -> Self {
        Pieces {
            repr: Repr::Small(Vec::new()),
        }
    }
}

/// Entries in key order (a sub-range of them).
pub enum Iter<'a, V> {
    Small(std::slice::Iter<'a, (usize, V)>),
    Large(btree_map::Range<'a, usize, V>),
}

impl<'a, V> Iterator for Iter<'a, V> {
    type Item = (usize, &'a V);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Small(i) => i.next().map(|(k, v)| (*k, v)),
            Iter::Large(i) => i.next().map(|(k, v)| (*k, v)),
        }
    }
}

impl<'a, V> DoubleEndedIterator for Iter<'a, V> {
    #[inline]
    fn next_back(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Small(i) => i.next_back().map(|(k, v)| (*k, v)),
            Iter::Large(i) => i.next_back().map(|(k, v)| (*k, v)),
        }
    }
}

impl<V> Pieces<V> {
    /// The number of entries.
    #[inline]
    pub fn len(&self) -> usize {
        match &self.repr {
            Repr::Small(v) => v.len(),
            Repr::Large(m) => m.len(),
        }
    }

    /// Whether there are none.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries with keys in `[from, to)`, in order.
    #[inline]
    pub fn range(&self, from: usize, to: usize) -> Iter<'_, V> {
        match &self.repr {
            Repr::Small(v) => {
                let lo = v.partition_point(|e| e.0 < from);
                // Keys from `lo` on are >= from: none below a `to` <= from.
                let hi = lo + v[lo..].partition_point(|e| e.0 < to);
                Iter::Small(v[lo..hi].iter())
            }
            Repr::Large(m) if from < to => Iter::Large(m.range(from..to)),
            // An empty range (BTreeMap::range refuses one that is backwards).
            Repr::Large(m) => Iter::Large(m.range(from..from)),
        }
    }

    /// The entries with keys below `to`, in order (the last first with `rev`).
    #[inline]
    pub fn below(&self, to: usize) -> Iter<'_, V> {
        self.range(0, to)
    }

    /// The entry with the largest key below `to`.
    #[inline]
    pub fn before(&self, to: usize) -> Option<(usize, &V)> {
        match &self.repr {
            Repr::Small(v) => {
                let i = v.partition_point(|e| e.0 < to);
                i.checked_sub(1).map(|i| (v[i].0, &v[i].1))
            }
            Repr::Large(m) => m.range(..to).next_back().map(|(k, v)| (*k, v)),
        }
    }

    /// The entry with the largest key at most `at`.
    #[inline]
    pub fn at_or_before(&self, at: usize) -> Option<(usize, &V)> {
        match &self.repr {
            Repr::Small(v) => {
                let i = v.partition_point(|e| e.0 <= at);
                i.checked_sub(1).map(|i| (v[i].0, &v[i].1))
            }
            Repr::Large(m) => m.range(..=at).next_back().map(|(k, v)| (*k, v)),
        }
    }

    /// The entry with the smallest key at least `from`.
    #[inline]
    pub fn from(&self, from: usize) -> Option<(usize, &V)> {
        match &self.repr {
            Repr::Small(v) => {
                let i = v.partition_point(|e| e.0 < from);
                v.get(i).map(|e| (e.0, &e.1))
            }
            Repr::Large(m) => m.range(from..).next().map(|(k, v)| (*k, v)),
        }
    }

    /// The first entry.
    #[inline]
    pub fn first(&self) -> Option<(usize, &V)> {
        match &self.repr {
            Repr::Small(v) => v.first().map(|e| (e.0, &e.1)),
            Repr::Large(m) => m.first_key_value().map(|(k, v)| (*k, v)),
        }
    }

    /// The last entry.
    #[inline]
    pub fn last(&self) -> Option<(usize, &V)> {
        match &self.repr {
            Repr::Small(v) => v.last().map(|e| (e.0, &e.1)),
            Repr::Large(m) => m.last_key_value().map(|(k, v)| (*k, v)),
        }
    }

    /// Every entry, in order.
    #[inline]
    pub fn iter(&self) -> Iter<'_, V> {
        match &self.repr {
            Repr::Small(v) => Iter::Small(v.iter()),
            Repr::Large(m) => Iter::Large(m.range(..)),
        }
    }

    /// The value at `key`, to change in place.
    #[inline]
    pub fn get_mut(&mut self, key: usize) -> Option<&mut V> {
        match &mut self.repr {
            Repr::Small(v) => {
                let i = v.partition_point(|e| e.0 < key);
                v.get_mut(i).filter(|e| e.0 == key).map(|e| &mut e.1)
            }
            Repr::Large(m) => m.get_mut(&key),
        }
    }

    /// Puts `value` at `key` (replacing what was there).
    #[inline]
    pub fn insert(&mut self, key: usize, value: V) {
        match &mut self.repr {
            Repr::Small(v) => {
                let i = v.partition_point(|e| e.0 < key);
                match v.get_mut(i) {
                    Some(e) if e.0 == key => e.1 = value,
                    _ => v.insert(i, (key, value)),
                }
                if v.len() > SMALL_MAX {
                    let large = std::mem::take(v).into_iter().collect();
                    self.repr = Repr::Large(large);
                }
            }
            Repr::Large(m) => {
                m.insert(key, value);
            }
        }
    }

    /// Takes out the value at `key`.
    #[inline]
    pub fn remove(&mut self, key: usize) -> Option<V> {
        match &mut self.repr {
            Repr::Small(v) => {
                let i = v.partition_point(|e| e.0 < key);
                if v.get(i).is_some_and(|e| e.0 == key) {
                    Some(v.remove(i).1)
                } else {
                    None
                }
            }
            Repr::Large(m) => {
                let value = m.remove(&key);
                if m.len() < SMALL_MIN {
                    let small = std::mem::take(m).into_iter().collect();
                    self.repr = Repr::Small(small);
                }
                value
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Random operations on a `Pieces` and a `BTreeMap` give the same answers,
    /// across the conversions both ways.
    #[test]
    fn agrees_with_a_btreemap() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut pieces = Pieces::default();
        let mut model = BTreeMap::new();
        let mut conversions = 0;
        let mut was_small = true;
        for step in 0..200_000 {
            // Grow for a while, then shrink, so that both conversions happen often.
            let phase = (step / 500) % 2 == 0;
            let key = (next() % 100) as usize;
            match next() % 8 {
                0..=3 if phase => {
                    pieces.insert(key, step);
                    model.insert(key, step);
                }
                0..=3 => {
                    assert_eq!(pieces.remove(key), model.remove(&key));
                }
                4 => {
                    assert_eq!(pieces.remove(key), model.remove(&key));
                }
                5 => {
                    if let Some(v) = pieces.get_mut(key) {
                        *v += 1;
                    }
                    if let Some(v) = model.get_mut(&key) {
                        *v += 1;
                    }
                }
                _ => {}
            }
            let to = (next() % 110) as usize;
            let from = (next() % 110) as usize;
            let pair = |(k, v): (&usize, &usize)| (*k, *v);
            assert_eq!(
                pieces.before(to).map(|(k, v)| (k, *v)),
                model.range(..to).next_back().map(pair)
            );
            assert_eq!(
                pieces.at_or_before(to).map(|(k, v)| (k, *v)),
                model.range(..=to).next_back().map(pair)
            );
            assert_eq!(
                pieces.from(from).map(|(k, v)| (k, *v)),
                model.range(from..).next().map(pair)
            );
            let got: Vec<(usize, usize)> = pieces.range(from, to).map(|(k, v)| (k, *v)).collect();
            let want: Vec<(usize, usize)> = if from < to {
                model.range(from..to).map(pair).collect()
            } else {
                Vec::new()
            };
            assert_eq!(got, want);
            let got: Vec<(usize, usize)> = pieces
                .below(to)
                .rev()
                .take(2)
                .map(|(k, v)| (k, *v))
                .collect();
            let want: Vec<(usize, usize)> = model.range(..to).rev().take(2).map(pair).collect();
            assert_eq!(got, want);
            assert_eq!(pieces.len(), model.len());
            assert_eq!(
                pieces.first().map(|(k, v)| (k, *v)),
                model.first_key_value().map(pair)
            );
            assert_eq!(
                pieces.last().map(|(k, v)| (k, *v)),
                model.last_key_value().map(pair)
            );
            let small = matches!(pieces.repr, Repr::Small(_));
            conversions += usize::from(small != was_small);
            was_small = small;
        }
        let all: Vec<(usize, usize)> = pieces.iter().map(|(k, v)| (k, *v)).collect();
        let want: Vec<(usize, usize)> = model.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(all, want);
        assert!(conversions > 20, "only {conversions} conversions");
    }
}
