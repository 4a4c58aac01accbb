//! `Tensor`: a cheap-to-clone handle to shared storage plus a layout, with autodiff bookkeeping.

use crate::Device;
use crate::autograd::{self, Node, NodeSlot};
use crate::storage::Storage;
use kiln_backend::{DType, Error, HostData, Layout, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

// In-place device moves need the private fields below.
#[path = "relocate.rs"]
mod relocate;

pub(crate) struct Inner {
    pub(crate) id: u64,
    pub(crate) storage: RwLock<Arc<Storage>>,
    pub(crate) layout: Layout,
    pub(crate) dtype: DType,
    device: Device,
    /// Set when `move_to_` relocated this tensor in place; wins over `device`.
    moved: RwLock<Option<&'static Device>>,
    pub(crate) requires_grad: bool,
    pub(crate) is_leaf: bool,
    /// The op that made this tensor (shared with the graph's edges to it; see `autograd`).
    pub(crate) node: NodeSlot,
    pub(crate) grad: Mutex<Option<Tensor>>,
}

/// An n-dimensional array on a [`Device`]. Cloning shares the data; views (`permute`, `narrow`,
/// `expand`, ...) share it too. Every fallible op returns [`Result`].
#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<Inner>);

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Tensor {
    /// A tensor over fresh or shared storage, recording `node` for backward when given.
    pub(crate) fn build(storage: Arc<Storage>, layout: Layout, device: Device, node: Option<Node>) -> Tensor {
        let dtype = storage.dtype();
        let requires_grad = node.is_some();
        Tensor(Arc::new(Inner {
            id: next_id(),
            storage: RwLock::new(storage),
            layout,
            dtype,
            device,
            moved: RwLock::new(None),
            requires_grad,
            is_leaf: !requires_grad,
            node: Arc::new(Mutex::new(node.map(Arc::new))),
            grad: Mutex::new(None),
        }))
    }

    /// A contiguous tensor from fresh backend output; records `backward` when autodiff applies.
    pub(crate) fn from_op(
        storage: Storage,
        shape: &[usize],
        device: &Device,
        op: &'static str,
        inputs: &[&Tensor],
        backward: impl Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
    ) -> Result<Tensor> {
        let node = autograd::node(op, inputs, backward);
        let t = Tensor::build(Arc::new(storage), Layout::contiguous(shape), device.clone(), node);
        crate::anomaly::check(op, "output", &t)?;
        Ok(t)
    }

    /// A tensor with no history.
    pub(crate) fn leaf(storage: Storage, shape: &[usize], device: &Device) -> Tensor {
        Tensor::build(Arc::new(storage), Layout::contiguous(shape), device.clone(), None)
    }

    /// A view of this tensor's storage through another layout.
    pub(crate) fn view_of(
        &self,
        layout: Layout,
        op: &'static str,
        backward: impl Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
    ) -> Tensor {
        let node = autograd::node(op, &[self], backward);
        Tensor::build(self.storage(), layout, self.device().clone(), node)
    }

    pub(crate) fn storage(&self) -> Arc<Storage> {
        self.0.storage.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn id(&self) -> u64 {
        self.0.id
    }

    pub(crate) fn layout(&self) -> &Layout {
        &self.0.layout
    }

    /// The size of each dimension.
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device};
    /// let t = Tensor::zeros(&[2, 3], &Device::cpu()).unwrap();
    /// assert_eq!(t.shape(), &[2, 3]);
    /// ```
    pub fn shape(&self) -> &[usize] {
        self.0.layout.shape()
    }

    /// Element strides of this view over its storage.
    pub fn strides(&self) -> &[usize] {
        self.0.layout.strides()
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape().len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.0.layout.numel()
    }

    pub fn dtype(&self) -> DType {
        self.0.dtype
    }

    pub fn device(&self) -> &Device {
        match *self.0.moved.read().unwrap_or_else(|e| e.into_inner()) {
            Some(d) => d,
            None => &self.0.device,
        }
    }

    /// True when the elements are stored densely in row-major order.
    pub fn is_contiguous(&self) -> bool {
        self.0.layout.is_contiguous()
    }

    /// Where this tensor's first element sits in its storage (non-zero for some views).
    pub fn storage_offset(&self) -> usize {
        self.0.layout.offset()
    }

    /// Size of dimension `dim` (negative counts from the end).
    pub fn dim(&self, dim: isize) -> Result<usize> {
        Ok(self.shape()[self.axis("dim", dim)?])
    }

    /// Normalises a possibly negative axis; an out-of-range axis is an error naming `op`.
    pub(crate) fn axis(&self, op: &'static str, dim: isize) -> Result<usize> {
        axis_in(op, dim, self.rank())
    }

    /// Reads every element into a host vector of `T` (the dtype must match `T`).
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device};
    /// let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3], &Device::cpu()).unwrap();
    /// assert_eq!(t.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0]);
    /// ```
    pub fn to_vec<T: crate::Element>(&self) -> Result<Vec<T>> {
        self.refuse_blocking_read("to_vec", "to_vec_async")?;
        T::from_host(self.to_host()?, "to_vec")
    }

    /// Reads every element without blocking the calling task (GPU readback via `map_async`).
    pub async fn to_vec_async<T: crate::Element>(&self) -> Result<Vec<T>> {
        let data = self.storage().to_host_async(self.layout()).await?;
        T::from_host(data, "to_vec_async")
    }

    /// Every element as host data of the tensor's own dtype.
    pub fn to_host(&self) -> Result<HostData> {
        self.refuse_blocking_read("to_host", "to_host_async")?;
        self.storage().to_host(self.layout())
    }

    /// [`to_host`](Self::to_host) without blocking the calling task.
    pub async fn to_host_async(&self) -> Result<HostData> {
        self.storage().to_host_async(self.layout()).await
    }

    /// Every element converted to f64 (bools as 0/1): handy in tests and metrics.
    pub fn to_f64_vec(&self) -> Result<Vec<f64>> {
        self.refuse_blocking_read("to_f64_vec", "to_f64_vec_async")?;
        Ok(self.to_host()?.to_f64_vec())
    }

    /// [`to_f64_vec`](Self::to_f64_vec) without blocking the calling task.
    pub async fn to_f64_vec_async(&self) -> Result<Vec<f64>> {
        Ok(self.to_host_async().await?.to_f64_vec())
    }

    /// Reading a GPU tensor waits for the GPU, which a browser does not allow: there the
    /// blocking reads return `Error::WouldBlock` naming their async form.
    fn refuse_blocking_read(&self, op: &'static str, alternative: &'static str) -> Result<()> {
        if cfg!(target_arch = "wasm32") && self.device().is_gpu() {
            return Err(Error::WouldBlock { op, alternative });
        }
        Ok(())
    }

    /// The single value of a one-element tensor, as f64.
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device};
    /// let t = Tensor::full(&[1, 1], 4.5, &Device::cpu()).unwrap();
    /// assert_eq!(t.item().unwrap(), 4.5);
    /// ```
    pub fn item(&self) -> Result<f64> {
        if self.numel() != 1 {
            return Err(Error::shape(
                "item",
                format!("needs exactly one element, tensor has shape {:?}", self.shape()),
            ));
        }
        self.refuse_blocking_read("item", "item_async")?;
        Ok(self.to_f64_vec()?[0])
    }

    /// [`item`](Self::item) without blocking the calling task: how a browser reads a loss.
    pub async fn item_async(&self) -> Result<f64> {
        if self.numel() != 1 {
            return Err(Error::shape(
                "item_async",
                format!("needs exactly one element, tensor has shape {:?}", self.shape()),
            ));
        }
        Ok(self.to_f64_vec_async().await?[0])
    }

    /// A copy of this tensor on `device` (a cheap clone when it is already there).
    /// Gradients flow back to the source device.
    ///
    /// ```
    /// # use kiln_core::{Device, Tensor};
    /// let x = Tensor::ones(&[2], &Device::cpu()).unwrap();
    /// let device = Device::best(); // a GPU if there is one, else the CPU
    /// assert_eq!(x.to(&device).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 1.0]);
    /// ```
    pub fn to(&self, device: &Device) -> Result<Tensor> {
        if self.device() == device {
            return Ok(self.clone());
        }
        self.refuse_blocking_read("to", "to_async")?;
        let data = self.to_host()?;
        self.with_data_on(device, data)
    }

    /// [`to`](Self::to) without blocking the calling task: how a browser moves a tensor off
    /// the GPU (uploads never wait; reading the GPU's data back does).
    pub async fn to_async(&self, device: &Device) -> Result<Tensor> {
        if self.device() == device {
            return Ok(self.clone());
        }
        let data = self.to_host_async().await?;
        self.with_data_on(device, data)
    }

    /// This tensor's `data`, read from it, as a tensor on `device` whose gradient flows back.
    fn with_data_on(&self, device: &Device, data: HostData) -> Result<Tensor> {
        let storage = Storage::from_host(device, &data)?;
        let source = self.device().clone();
        Tensor::from_op(storage, self.shape(), device, "to", &[self], move |g| Ok(vec![Some(g.to(&source)?)]))
    }

    /// Does this tensor take part in autodiff?
    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad
    }

    /// A leaf that collects gradients: the same data, tracked by autodiff from here on.
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device};
    /// let x = Tensor::from_vec(vec![3.0f32], &[1], &Device::cpu()).unwrap().with_grad();
    /// let y = (&x * &x).unwrap().sum_all().unwrap();
    /// y.backward().unwrap();
    /// assert_eq!(x.grad().unwrap().to_vec::<f32>().unwrap(), vec![6.0]);
    /// ```
    pub fn with_grad(&self) -> Tensor {
        Tensor(Arc::new(Inner {
            id: next_id(),
            storage: RwLock::new(self.storage()),
            layout: self.layout().clone(),
            dtype: self.dtype(),
            device: self.device().clone(),
            moved: RwLock::new(None),
            requires_grad: true,
            is_leaf: true,
            node: Arc::new(Mutex::new(None)),
            grad: Mutex::new(None),
        }))
    }

    /// The same data with no autodiff history.
    ///
    /// ```
    /// # use kiln_core::{Device, Tensor};
    /// let x = Tensor::ones(&[2], &Device::cpu()).unwrap().with_grad();
    /// let y = x.mul_scalar(2.0).unwrap().detach();
    /// assert!(!y.requires_grad());
    /// ```
    pub fn detach(&self) -> Tensor {
        Tensor::build(self.storage(), self.layout().clone(), self.device().clone(), None)
    }

    /// The gradient accumulated on this leaf by `backward` calls, if any.
    ///
    /// ```
    /// # use kiln_core::{Device, Tensor};
    /// let x = Tensor::from_vec(vec![3.0f32], &[1], &Device::cpu()).unwrap().with_grad();
    /// x.square().unwrap().sum_all().unwrap().backward().unwrap();
    /// assert_eq!(x.grad().unwrap().to_vec::<f32>().unwrap(), vec![6.0]); // d(x²)/dx = 2x
    /// ```
    pub fn grad(&self) -> Option<Tensor> {
        lock(&self.0.grad).clone()
    }

    /// Clears the accumulated gradient.
    pub fn zero_grad(&self) {
        *lock(&self.0.grad) = None;
    }

    /// Replaces the accumulated gradient (gradient clipping, custom updates). The gradient must
    /// have this tensor's shape.
    pub fn set_grad(&self, g: Option<Tensor>) -> Result<()> {
        if let Some(g) = &g
            && g.shape() != self.shape()
        {
            return Err(Error::shape("set_grad", format!("gradient {:?} for tensor {:?}", g.shape(), self.shape())));
        }
        *lock(&self.0.grad) = g;
        Ok(())
    }

    /// True when both handles are the same tensor (not merely equal values): how optimizers
    /// reject a parameter passed twice.
    pub fn same(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Replaces this tensor's data in place with `value`'s (same shape and dtype): how
    /// optimizers update parameters without changing their identity.
    pub fn set_data(&self, value: &Tensor) -> Result<()> {
        if value.shape() != self.shape() || value.dtype() != self.dtype() {
            return Err(Error::shape(
                "set_data",
                format!("{:?} {} into {:?} {}", value.shape(), value.dtype(), self.shape(), self.dtype()),
            ));
        }
        if value.device() != self.device() {
            return Err(Error::DeviceMismatch {
                op: "set_data",
                lhs: self.device().name(),
                rhs: value.device().name(),
            });
        }
        if !self.is_contiguous() || self.layout().offset() != 0 {
            return Err(Error::invalid("set_data", "only tensors that own contiguous storage can be assigned"));
        }
        let fresh = value.detach().contiguous()?;
        let storage = if fresh.layout().offset() == 0 { fresh.storage() } else { fresh.copy()?.storage() };
        *self.0.storage.write().unwrap_or_else(|e| e.into_inner()) = storage;
        Ok(())
    }

    /// The wgpu buffer holding this tensor's elements (GPU only) and the byte offset of its first
    /// element: bind it in your own render or compute passes.
    pub fn wgpu_buffer(&self) -> Option<(wgpu::Buffer, u64)> {
        let s = self.storage();
        let g = s.gpu()?;
        let elem = if self.dtype() == DType::F16 { 2 } else { 4 };
        // The storage may be a block of a pooled buffer: its own offset comes first.
        Some((g.buffer_for_app().clone(), g.offset() + self.layout().offset() as u64 * elem))
    }

    pub(crate) fn check_same_device(&self, op: &'static str, other: &Tensor) -> Result<()> {
        if self.device() != other.device() {
            return Err(Error::DeviceMismatch { op, lhs: self.device().name(), rhs: other.device().name() });
        }
        Ok(())
    }
}

impl Inner {
    pub(crate) fn storage_lock_mut(&mut self) -> &mut Arc<Storage> {
        self.storage.get_mut().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) fn axis_in(op: &'static str, dim: isize, rank: usize) -> Result<usize> {
    let r = rank as isize;
    let d = if dim < 0 { dim + r } else { dim };
    if d < 0 || d >= r.max(0) {
        return Err(Error::IndexOutOfRange { op, index: dim as i64, size: rank, what: "dims".into() });
    }
    Ok(d as usize)
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor[{:?}, {}, {}]", self.shape(), self.dtype(), self.device().name())
    }
}
