//! An ordered map from offsets to values, for the layout's pieces: sorted
//! chunks of at most [`CHUNK`] entries, with the first key of each chunk in
//! one more sorted array.
//!
//! Each overlay added or removed looks its neighbours up a few times. In a
//! `BTreeMap` every look-up builds a range (two edge searches down every
//! level) and a removal shuffles nodes; here a look-up is a binary search over
//! the chunks' first keys (one array of `usize`) and one inside a chunk — a
//! few cache lines whatever the size — and an insertion or removal moves at
//! most a chunk's entries. A chunk that outgrows [`CHUNK`] is split in two;
//! an emptied one is dropped. Most arenas have a handful of pieces: one chunk,
//! a sorted `Vec`. Look-ups stay O(log n); an insertion or removal moves at
//! most one chunk's entries, plus the array of chunks when one is split or
//! emptied. Chunks are only made by splits, which leave at least
//! [`CHUNK`] / 2 entries in each, so that array holds at most one entry per
//! 32 pieces of the largest the map has been.

/// The most entries in one chunk.
pub const CHUNK: usize = 64;

/// An entry found: its key and its value.
pub type Found<'a, V> = Option<(usize, &'a V)>;

/// An ordered map from `usize` keys to `V`.
#[derive(Debug, Clone)]
pub struct Pieces<V> {
    /// Non-empty chunks, in key order.
    chunks: Vec<Vec<(usize, V)>>,
    /// The first key of each chunk.
    firsts: Vec<usize>,
    len: usize,
}

impl<V> Default for Pieces<V> {
    fn default() -> Self {
        Pieces {
            chunks: Vec::new(),
            firsts: Vec::new(),
            len: 0,
        }
    }
}

/// Entries in key order, from a position on, up to a key.
pub struct Iter<'a, V> {
    chunks: &'a [Vec<(usize, V)>],
    chunk: usize,
    at: usize,
    to: usize,
}

impl<'a, V> Iterator for Iter<'a, V> {
    type Item = (usize, &'a V);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let chunk = self.chunks.get(self.chunk)?;
            match chunk.get(self.at) {
                Some((k, v)) if *k < self.to => {
                    self.at += 1;
                    return Some((*k, v));
                }
                Some(_) => return None,
                None => {
                    self.chunk += 1;
                    self.at = 0;
                }
            }
        }
    }
}

impl<V> Pieces<V> {
    /// The number of entries.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The position (chunk, index) of the first entry with a key at least
    /// `key` (`(chunks.len(), 0)` past the end).
    #[inline]
    fn position_from(&self, key: usize) -> (usize, usize) {
        // The last chunk starting below `key` may hold it; otherwise the next.
        let c = self.firsts.partition_point(|&f| f < key);
        if c == 0 {
            return (0, 0);
        }
        let chunk = &self.chunks[c - 1];
        let i = chunk.partition_point(|e| e.0 < key);
        if i < chunk.len() {
            (c - 1, i)
        } else {
            (c, 0)
        }
    }

    /// The entry just before position `(c, i)`.
    #[inline]
    fn entry_before(&self, (c, i): (usize, usize)) -> Option<(usize, &V)> {
        let (c, i) = if i > 0 {
            (c, i - 1)
        } else {
            let c = c.checked_sub(1)?;
            (c, self.chunks[c].len() - 1)
        };
        let e = &self.chunks[c][i];
        Some((e.0, &e.1))
    }

    /// The entries with keys in `[from, to)`, in order.
    #[inline]
    pub fn range(&self, from: usize, to: usize) -> Iter<'_, V> {
        let (chunk, at) = self.position_from(from);
        Iter {
            chunks: &self.chunks,
            chunk,
            at,
            to,
        }
    }

    /// The entry with the largest key below `to`.
    #[inline]
    pub fn before(&self, to: usize) -> Option<(usize, &V)> {
        self.entry_before(self.position_from(to))
    }

    /// The entries with the largest and the second largest key below `to`.
    #[inline]
    pub fn before_two(&self, to: usize) -> (Found<'_, V>, Found<'_, V>) {
        let (c, i) = self.position_from(to);
        let Some(last) = self.entry_before((c, i)) else {
            return (None, None);
        };
        let (c, i) = if i > 0 {
            (c, i - 1)
        } else {
            (c - 1, self.chunks[c - 1].len() - 1)
        };
        (Some(last), self.entry_before((c, i)))
    }

    /// The entry with the largest key at most `at`.
    #[inline]
    pub fn at_or_before(&self, at: usize) -> Option<(usize, &V)> {
        match at.checked_add(1) {
            Some(to) => self.before(to),
            None => self.last(),
        }
    }

    /// The entry with the smallest key at least `from`.
    #[inline]
    pub fn from(&self, from: usize) -> Option<(usize, &V)> {
        let (c, i) = self.position_from(from);
        self.chunks.get(c).map(|chunk| (chunk[i].0, &chunk[i].1))
    }

    /// The first entry.
    #[inline]
    pub fn first(&self) -> Option<(usize, &V)> {
        self.chunks.first().map(|c| (c[0].0, &c[0].1))
    }

    /// The last entry.
    #[inline]
    pub fn last(&self) -> Option<(usize, &V)> {
        let e = self.chunks.last()?.last()?;
        Some((e.0, &e.1))
    }

    /// Every entry, in order.
    #[inline]
    pub fn iter(&self) -> impl Iterator<Item = (usize, &V)> {
        self.chunks.iter().flatten().map(|(k, v)| (*k, v))
    }

    /// The chunk that holds `key` or would: the last one starting at or
    /// below it (the first if none does). None when there are no chunks.
    #[inline]
    fn chunk_for(&self, key: usize) -> Option<usize> {
        if self.chunks.is_empty() {
            return None;
        }
        Some(self.firsts.partition_point(|&f| f <= key).saturating_sub(1))
    }

    /// The value at `key`, to change in place.
    #[inline]
    pub fn get_mut(&mut self, key: usize) -> Option<&mut V> {
        let c = self.chunk_for(key)?;
        let chunk = &mut self.chunks[c];
        let i = chunk.partition_point(|e| e.0 < key);
        chunk.get_mut(i).filter(|e| e.0 == key).map(|e| &mut e.1)
    }

    /// Puts `value` at `key` (replacing what was there).
    #[inline]
    pub fn insert(&mut self, key: usize, value: V) {
        let Some(c) = self.chunk_for(key) else {
            self.chunks.push(vec![(key, value)]);
            self.firsts.push(key);
            self.len = 1;
            return;
        };
        let chunk = &mut self.chunks[c];
        let i = chunk.partition_point(|e| e.0 < key);
        match chunk.get_mut(i) {
            Some(e) if e.0 == key => {
                e.1 = value;
                return;
            }
            _ => chunk.insert(i, (key, value)),
        }
        self.len += 1;
        self.firsts[c] = chunk[0].0;
        if chunk.len() > CHUNK {
            let second = chunk.split_off(CHUNK / 2);
            self.firsts.insert(c + 1, second[0].0);
            self.chunks.insert(c + 1, second);
        }
    }

    /// Takes out the value at `key`.
    #[inline]
    pub fn remove(&mut self, key: usize) -> Option<V> {
        let c = self.chunk_for(key)?;
        let chunk = &mut self.chunks[c];
        let i = chunk.partition_point(|e| e.0 < key);
        if chunk.get(i).is_none_or(|e| e.0 != key) {
            return None;
        }
        let (_, value) = chunk.remove(i);
        self.len -= 1;
        if let Some(e) = chunk.first() {
            self.firsts[c] = e.0;
        } else {
            self.chunks.remove(c);
            self.firsts.remove(c);
        }
        Some(value)
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
        let mut most_chunks = 0;
        for step in 0..200_000 {
            // Grow for a while, then shrink, so that both conversions happen often.
            let phase = (step / 3000) % 2 == 0;
            let key = (next() % 400) as usize;
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
            let to = (next() % 420) as usize;
            let from = (next() % 420) as usize;
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
            let (last, second) = pieces.before_two(to);
            let got: Vec<(usize, usize)> = last
                .into_iter()
                .chain(second)
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
            assert_eq!(
                pieces.firsts,
                pieces.chunks.iter().map(|c| c[0].0).collect::<Vec<_>>()
            );
            assert!(pieces
                .chunks
                .iter()
                .all(|c| !c.is_empty() && c.len() <= CHUNK));
            most_chunks = most_chunks.max(pieces.chunks.len());
        }
        let all: Vec<(usize, usize)> = pieces.iter().map(|(k, v)| (k, *v)).collect();
        let want: Vec<(usize, usize)> = model.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(all, want);
        assert!(most_chunks >= 3, "at most {most_chunks} chunks");
    }
}
