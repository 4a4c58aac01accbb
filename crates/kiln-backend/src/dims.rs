//! `Dims`: a layout's shape or strides, held inline up to `INLINE` dims. Every op builds a few
//! layouts (its output's, each broadcast view's, the copies a fused op keeps of its inputs'), and
//! with two `Vec`s each that was most of the allocations of a small op: a chain of 1000 scalar
//! adds spent more time in `malloc`/`free` than in anything Kiln does.

use std::ops::{Deref, DerefMut};

/// Dims held without a heap allocation; higher ranks (rare) spill to a `Vec`.
const INLINE: usize = 6;

#[derive(Clone)]
pub(crate) enum Dims {
    Inline { len: u8, buf: [usize; INLINE] },
    Heap(Vec<usize>),
}

impl Dims {
    pub(crate) fn new() -> Dims {
        Dims::Inline { len: 0, buf: [0; INLINE] }
    }

    /// `len` copies of `value`.
    pub(crate) fn filled(value: usize, len: usize) -> Dims {
        if len <= INLINE { Dims::Inline { len: len as u8, buf: [value; INLINE] } } else { Dims::Heap(vec![value; len]) }
    }

    pub(crate) fn push(&mut self, value: usize) {
        match self {
            Dims::Inline { len, buf } if (*len as usize) < INLINE => {
                buf[*len as usize] = value;
                *len += 1;
            }
            Dims::Inline { .. } => {
                let mut v = self.to_vec();
                v.push(value);
                *self = Dims::Heap(v);
            }
            Dims::Heap(v) => v.push(value),
        }
    }

    /// Inserts `value` at `index`, shifting the rest up (`Vec::insert`; panics past the end).
    pub(crate) fn insert(&mut self, index: usize, value: usize) {
        assert!(index <= self.len(), "Dims::insert at {index} of {}", self.len());
        self.push(value);
        self[index..].rotate_right(1);
    }

    /// Removes the entry at `index`, shifting the rest down (`Vec::remove`; panics past the end).
    pub(crate) fn remove(&mut self, index: usize) -> usize {
        match self {
            Dims::Inline { len, buf } => {
                assert!(index < *len as usize, "Dims::remove at {index} of {len}");
                let value = buf[index];
                buf[index..*len as usize].rotate_left(1);
                *len -= 1;
                value
            }
            Dims::Heap(v) => v.remove(index),
        }
    }
}

impl Deref for Dims {
    type Target = [usize];

    fn deref(&self) -> &[usize] {
        match self {
            Dims::Inline { len, buf } => &buf[..*len as usize],
            Dims::Heap(v) => v,
        }
    }
}

impl DerefMut for Dims {
    fn deref_mut(&mut self) -> &mut [usize] {
        match self {
            Dims::Inline { len, buf } => &mut buf[..*len as usize],
            Dims::Heap(v) => v,
        }
    }
}

impl<'a> IntoIterator for &'a Dims {
    type Item = &'a usize;
    type IntoIter = std::slice::Iter<'a, usize>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl From<&[usize]> for Dims {
    fn from(s: &[usize]) -> Dims {
        if s.len() <= INLINE {
            let mut buf = [0; INLINE];
            buf[..s.len()].copy_from_slice(s);
            Dims::Inline { len: s.len() as u8, buf }
        } else {
            Dims::Heap(s.to_vec())
        }
    }
}

impl From<Vec<usize>> for Dims {
    fn from(v: Vec<usize>) -> Dims {
        if v.len() <= INLINE { Dims::from(v.as_slice()) } else { Dims::Heap(v) }
    }
}

impl FromIterator<usize> for Dims {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> Dims {
        let mut d = Dims::new();
        for x in iter {
            d.push(x);
        }
        d
    }
}

// Equality, hashing and printing see only the dims, as they did for the `Vec`s: the same dims
// compare equal whether inline or spilled, and a layout prints as `shape: [2, 3]`.
impl PartialEq for Dims {
    fn eq(&self, other: &Dims) -> bool {
        **self == **other
    }
}

impl Eq for Dims {}

impl std::hash::Hash for Dims {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (**self).hash(state)
    }
}

impl std::fmt::Debug for Dims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every operation against `Vec<usize>` as the oracle, across the inline/heap boundary.
    #[test]
    fn behaves_like_a_vec() {
        for n in 0..=INLINE + 3 {
            let src: Vec<usize> = (10..10 + n).collect();
            let mut d = Dims::from(src.as_slice());
            assert_eq!(&*d, src.as_slice());
            assert_eq!(Dims::from(src.clone()), d);
            assert_eq!(src.iter().copied().collect::<Dims>(), d);
            for at in 0..=n {
                let (mut v, mut e) = (src.clone(), d.clone());
                v.insert(at, 99);
                e.insert(at, 99);
                assert_eq!(&*e, v.as_slice(), "insert at {at} of {n}");
            }
            for at in 0..n {
                let (mut v, mut e) = (src.clone(), d.clone());
                assert_eq!(v.remove(at), e.remove(at));
                assert_eq!(&*e, v.as_slice(), "remove at {at} of {n}");
            }
            if n > 0 {
                d[n - 1] = 7;
                assert_eq!(d[n - 1], 7);
            }
            assert_eq!(&*Dims::filled(3, n), vec![3; n].as_slice());
            assert_eq!(format!("{:?}", Dims::filled(1, n)), format!("{:?}", vec![1; n]));
        }
        // Equal dims are equal (and hash alike) however they are held.
        let mut spilled = Dims::from((0..INLINE + 1).collect::<Vec<_>>());
        spilled.remove(INLINE);
        let inline = Dims::from((0..INLINE).collect::<Vec<_>>());
        assert!(matches!(spilled, Dims::Heap(_)) && matches!(inline, Dims::Inline { .. }));
        assert_eq!(spilled, inline);
        use std::hash::{BuildHasher, RandomState};
        let s = RandomState::new();
        assert_eq!(s.hash_one(&spilled), s.hash_one(&inline));
    }

    #[test]
    #[should_panic(expected = "Dims::insert")]
    fn insert_past_the_end_panics_like_vec() {
        Dims::from(&[1usize, 2][..]).insert(3, 0);
    }
}
