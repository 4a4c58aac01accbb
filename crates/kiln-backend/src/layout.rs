use smallvec::SmallVec;

/// A layout's shape or strides: inline up to rank 6. Every op builds a few layouts (its
/// output's, each broadcast view's, the copies a fused op keeps of its inputs'); with two heap
/// `Vec`s each, a chain of 1000 scalar adds spent more time in `malloc`/`free` than in Kiln.
type Dims = SmallVec<[usize; 6]>;

/// How a tensor's elements sit in its storage: `element[i0, i1, ..] = storage[offset + Σ ik·stride_k]`.
///
/// Views (transpose, narrow, expand, ...) only build a new `Layout` over the same storage;
/// kernels on both backends read strided inputs directly, so a view costs no copy.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    shape: Dims,
    strides: Dims,
    offset: usize,
}

impl Layout {
    /// Row-major layout of a fresh tensor.
    pub fn contiguous(shape: &[usize]) -> Self {
        Self::contiguous_with_offset(shape, 0)
    }

    pub fn contiguous_with_offset(shape: &[usize], offset: usize) -> Self {
        Layout { shape: Dims::from_slice(shape), strides: strides_of(shape), offset }
    }

    pub fn new(shape: Vec<usize>, strides: Vec<usize>, offset: usize) -> Self {
        debug_assert_eq!(shape.len(), strides.len());
        Layout { shape: Dims::from_vec(shape), strides: Dims::from_vec(strides), offset }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    pub fn offset(&self) -> usize {
        self.offset
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// A shape with a 0 dim holds nothing, whatever its other dims (which may then multiply
    /// past `usize`); a non-empty layout's count fits, as every op that builds one checks.
    pub fn numel(&self) -> usize {
        numel_of(&self.shape)
    }

    /// True when the elements are exactly `storage[offset .. offset + numel]` in row-major order.
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for (&d, &s) in self.shape.iter().zip(&self.strides).rev() {
            if d != 1 && s != expected {
                return false;
            }
            expected = expected.saturating_mul(d);
        }
        true
    }

    /// One past the largest storage index this layout can touch (0 for an empty tensor).
    pub fn storage_extent(&self) -> usize {
        if self.numel() == 0 {
            return 0;
        }
        self.offset + self.shape.iter().zip(&self.strides).map(|(&d, &s)| (d - 1) * s).sum::<usize>() + 1
    }

    pub fn permute(&self, dims: &[usize]) -> Layout {
        Layout {
            shape: dims.iter().map(|&d| self.shape[d]).collect(),
            strides: dims.iter().map(|&d| self.strides[d]).collect(),
            offset: self.offset,
        }
    }

    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Layout {
        let mut l = self.clone();
        // Saturating: only an empty view can get here with an offset past usize, and it reads nothing.
        l.offset = l.offset.saturating_add(start.saturating_mul(self.strides[dim]));
        l.shape[dim] = len;
        l
    }

    /// Every `step`-th element of `dim`, starting at `start`, `len` of them.
    pub fn step(&self, dim: usize, start: usize, len: usize, step: usize) -> Layout {
        let mut l = self.narrow(dim, start, len);
        // With at most one entry the stride is never followed, so a huge step must not overflow it.
        l.strides[dim] = if len <= 1 { l.strides[dim] } else { l.strides[dim].saturating_mul(step) };
        l
    }

    /// Broadcast view: size-1 (or missing leading) dims get stride 0. Caller checks compatibility.
    pub fn broadcast_to(&self, shape: &[usize]) -> Layout {
        let extra = shape.len() - self.rank();
        let mut strides = Dims::from_elem(0, shape.len());
        for i in 0..self.rank() {
            strides[extra + i] = if self.shape[i] == 1 && shape[extra + i] != 1 { 0 } else { self.strides[i] };
        }
        Layout { shape: Dims::from_slice(shape), strides, offset: self.offset }
    }

    pub fn unsqueeze(&self, dim: usize) -> Layout {
        let mut l = self.clone();
        let stride = if dim < self.rank() { self.strides[dim].saturating_mul(self.shape[dim]) } else { 1 };
        l.shape.insert(dim, 1);
        l.strides.insert(dim, stride);
        l
    }

    pub fn squeeze(&self, dim: usize) -> Layout {
        let mut l = self.clone();
        l.shape.remove(dim);
        l.strides.remove(dim);
        l
    }

    /// A view with a new shape over the same storage, when the strides allow it (`None` means
    /// the caller must copy). Splits and merges dims the way `torch.view` does.
    pub fn reshape_view(&self, new_shape: &[usize]) -> Option<Layout> {
        // An empty tensor reads nothing: any layout of the new shape views it (and its dims,
        // which may multiply past usize, are never multiplied out).
        if self.is_contiguous() || self.numel() == 0 {
            return Some(Layout::contiguous_with_offset(new_shape, self.offset));
        }
        // Group old dims into runs that are contiguous among themselves, then map new dims onto them.
        let old: Vec<(usize, usize)> =
            self.shape.iter().copied().zip(self.strides.iter().copied()).filter(|&(d, _)| d != 1).collect();
        let mut strides = Dims::from_elem(0, new_shape.len());
        let (mut oi, mut ni) = (0, 0);
        while ni < new_shape.len() {
            if new_shape[ni] == 1 {
                strides[ni] = 0;
                ni += 1;
                continue;
            }
            if oi >= old.len() {
                return None;
            }
            // Take old dims until their product matches new dims' product.
            let (mut op, mut np) = (old[oi].0, new_shape[ni]);
            let mut oj = oi;
            let mut nj = ni;
            while op != np {
                if op < np {
                    oj += 1;
                    if oj >= old.len() || Some(old[oj - 1].1) != old[oj].1.checked_mul(old[oj].0) {
                        return None;
                    }
                    op = op.checked_mul(old[oj].0)?;
                } else {
                    nj += 1;
                    if nj >= new_shape.len() {
                        return None;
                    }
                    np = np.checked_mul(new_shape[nj])?;
                }
            }
            // New dims ni..=nj cover old dims oi..=oj, which are mutually contiguous.
            let mut stride = old[oj].1;
            for k in (ni..=nj).rev() {
                strides[k] = stride;
                stride = stride.saturating_mul(new_shape[k]);
            }
            oi = oj + 1;
            ni = nj + 1;
        }
        if oi != old.len() {
            return None;
        }
        Some(Layout { shape: Dims::from_slice(new_shape), strides, offset: self.offset })
    }

    /// Storage indices of every element in row-major order.
    pub fn indices(&self) -> StridedIndex<'_> {
        StridedIndex::new(self)
    }
}

/// Row-major strides. They saturate: only a shape with a 0 dim can overflow them (a non-empty
/// shape's strides are at most its element count), and such a tensor never follows a stride.
fn strides_of(shape: &[usize]) -> Dims {
    let mut strides = Dims::from_elem(1, shape.len());
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1].saturating_mul(shape[i + 1]);
    }
    strides
}

/// Element count of `shape`: 0 when any dim is 0 (without multiplying the others), else the
/// product.
pub fn numel_of(shape: &[usize]) -> usize {
    if shape.contains(&0) { 0 } else { shape.iter().product() }
}

/// Element count of `shape`, or `None` when it does not fit a `usize`.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    if shape.contains(&0) {
        return Some(0);
    }
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// Iterates the storage index of each element of a layout, in row-major order.
pub struct StridedIndex<'a> {
    layout: &'a Layout,
    pos: Dims,
    next: Option<usize>,
}

impl<'a> StridedIndex<'a> {
    fn new(layout: &'a Layout) -> Self {
        let next = if layout.numel() == 0 { None } else { Some(layout.offset) };
        StridedIndex { layout, pos: Dims::from_elem(0, layout.rank()), next }
    }
}

impl Iterator for StridedIndex<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let current = self.next?;
        let mut idx = current;
        let mut d = self.layout.rank();
        loop {
            if d == 0 {
                self.next = None;
                break;
            }
            d -= 1;
            self.pos[d] += 1;
            idx += self.layout.strides[d];
            if self.pos[d] < self.layout.shape[d] {
                self.next = Some(idx);
                break;
            }
            idx -= self.layout.strides[d] * self.pos[d];
            self.pos[d] = 0;
        }
        Some(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_index_of_transpose() {
        let l = Layout::contiguous(&[2, 3]).permute(&[1, 0]);
        assert_eq!(l.indices().collect::<Vec<_>>(), vec![0, 3, 1, 4, 2, 5]);
        assert!(!l.is_contiguous());
    }

    #[test]
    fn reshape_view_merges_and_refuses() {
        let l = Layout::contiguous(&[4, 6]).narrow(1, 0, 3); // [4,3] strides [6,1]
        assert!(l.reshape_view(&[12]).is_none());
        let v = l.reshape_view(&[4, 3, 1]).expect("split with unit dim");
        assert_eq!(v.strides()[..2], [6, 1]);
        let t = Layout::contiguous(&[2, 3, 4]).permute(&[1, 0, 2]); // [3,2,4] strides [4,12,1]
        assert!(t.reshape_view(&[3, 8]).is_none());
        let s = t.reshape_view(&[3, 2, 2, 2]).expect("split last dim");
        assert_eq!(s.strides(), &[4, 12, 2, 1]);
        let e = Layout::contiguous(&[0, 3]);
        assert_eq!(e.indices().count(), 0);
    }
}
