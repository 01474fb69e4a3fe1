//! The CUDA runtime for the `kernels` crate: one device, the embedded PTX loaded once, a caching
//! allocation pool, host <-> device copies, and launches of the kernels' typed argument structs
//! (`kernels::abi`); [`launch`] adds checked wrappers on whole buffers (tests and benchmarks).
//!
//! It talks to the driver API through `cudarc` with dynamic loading, so building needs no CUDA
//! toolkit and a machine without a GPU gets an error from [`CudaDevice::new`], never a panic.
//! Work goes to one stream per device (created at start), so launches and copies run in order;
//! copies back to the host and `synchronize` wait for that stream.

pub mod launch;
#[cfg(test)]
mod tests;

use cudarc::driver::result::{self, DriverError};
use cudarc::driver::{sys, CudaContext};
use std::collections::HashMap;
use std::ffi::CString;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

/// What can go wrong on the device: no driver or GPU, or a driver call that failed (named).
#[derive(Debug, Clone, PartialEq)]
pub enum CudaError {
    /// libcuda could not be loaded or there is no device: the caller falls back to the CPU.
    Unavailable(String),
    /// A driver call failed.
    Driver { call: &'static str, error: String },
    /// Arguments a kernel cannot take (sizes, alignment), naming the kernel and the shapes.
    Invalid { kernel: &'static str, reason: String },
}

impl std::fmt::Display for CudaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CudaError::Unavailable(why) => write!(f, "CUDA unavailable: {why}"),
            CudaError::Driver { call, error } => write!(f, "CUDA driver call {call} failed: {error}"),
            CudaError::Invalid { kernel, reason } => write!(f, "CUDA kernel {kernel}: {reason}"),
        }
    }
}
impl std::error::Error for CudaError {}

pub type CudaResult<T> = std::result::Result<T, CudaError>;

/// Names the driver call in its error.
fn drv<T>(call: &'static str, r: std::result::Result<T, DriverError>) -> CudaResult<T> {
    r.map_err(|e| CudaError::Driver { call, error: e.to_string() })
}

/// One GPU with the kernels module loaded.
pub struct CudaDevice {
    ctx: Arc<CudaContext>,
    functions: HashMap<&'static str, sys::CUfunction>,
    pool: Mutex<HashMap<usize, Vec<sys::CUdeviceptr>>>,
    /// Every launch, copy and event of this device goes to this stream.
    stream: sys::CUstream,
    name: String,
}

// The raw handles are used only with the context bound to the calling thread (see `bind`).
unsafe impl Send for CudaDevice {}
unsafe impl Sync for CudaDevice {}

impl CudaDevice {
    /// Opens GPU `ordinal` and loads the kernels. `Err(Unavailable)` when there is no driver or no
    /// such device.
    pub fn new(ordinal: usize) -> CudaResult<Arc<CudaDevice>> {
        // cudarc panics if libcuda is missing, so look for it first.
        if !unsafe { sys::is_culib_present() } {
            return Err(CudaError::Unavailable("libcuda not found".into()));
        }
        result::init().map_err(|e| CudaError::Unavailable(format!("cuInit: {e}")))?;
        let count = result::device::get_count().map_err(|e| CudaError::Unavailable(e.to_string()))?;
        if ordinal >= count as usize {
            return Err(CudaError::Unavailable(format!("device {ordinal} requested, {count} present")));
        }
        let ctx = drv("cuDevicePrimaryCtxRetain", CudaContext::new(ordinal))?;
        let name = drv("cuDeviceGetName", ctx.name())?;
        let src = CString::new(kernels::PTX).expect("PTX has no NUL");
        let module = drv("cuModuleLoadData", unsafe { result::module::load_data(src.as_ptr() as *const _) })?;
        let mut functions = HashMap::new();
        // Every entry point the kernels crate describes (`kernels::abi`), looked up once.
        for k in kernels::abi::ENTRIES {
            let name = CString::new(k.name).unwrap();
            let f = drv("cuModuleGetFunction", unsafe { result::module::get_function(module, name) })?;
            functions.insert(k.name, f);
        }
        let stream = drv("cuStreamCreate", result::stream::create(result::stream::StreamKind::NonBlocking))?;
        Ok(Arc::new(CudaDevice { ctx, functions, pool: Mutex::new(HashMap::new()), stream, name }))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Makes this device's context current on the calling thread (tests run on many threads).
    fn bind(&self) -> CudaResult<()> {
        drv("cuCtxSetCurrent", self.ctx.bind_to_thread())
    }

    pub(crate) fn function(&self, name: &'static str) -> sys::CUfunction {
        self.functions[name]
    }

    /// An uninitialised buffer of `len` elements, from the pool when a block of that size is free.
    pub fn alloc<T: Copy>(self: &Arc<Self>, len: usize) -> CudaResult<DeviceBuffer<T>> {
        self.bind()?;
        // Round to 256 bytes (and to 1 MiB steps above 16 MiB) so freed blocks get reused.
        let bytes = (len.max(1) * std::mem::size_of::<T>()).next_multiple_of(256);
        let bytes = if bytes > 16 << 20 { bytes.next_multiple_of(1 << 20) } else { bytes };
        let cached = self.pool.lock().unwrap().get_mut(&bytes).and_then(|v| v.pop());
        let ptr = match cached {
            Some(p) => p,
            None => drv("cuMemAlloc", unsafe { result::malloc_sync(bytes) })?,
        };
        Ok(DeviceBuffer { ptr, len, bytes, dev: self.clone(), _t: PhantomData })
    }

    /// Copies `data` to a new device buffer.
    pub fn upload<T: Copy>(self: &Arc<Self>, data: &[T]) -> CudaResult<DeviceBuffer<T>> {
        let buf = self.alloc(data.len())?;
        if !data.is_empty() {
            // Asynchronous on our stream (ordered with the kernels), then waited for: `data` is
            // borrowed only for this call.
            drv("cuMemcpyHtoDAsync", unsafe { result::memcpy_htod_async(buf.ptr, data, self.stream) })?;
            self.synchronize()?;
        }
        Ok(buf)
    }

    /// Copies a device buffer back (waits for the work queued before it).
    pub fn download<T: Copy + Default>(&self, buf: &DeviceBuffer<T>) -> CudaResult<Vec<T>> {
        self.bind()?;
        let mut out = vec![T::default(); buf.len];
        if !out.is_empty() {
            drv("cuMemcpyDtoHAsync", unsafe { result::memcpy_dtoh_async(&mut out, buf.ptr, self.stream) })?;
        }
        self.synchronize()?;
        Ok(out)
    }

    /// Copies `bytes` bytes from device address `ptr` back to the host (waits for the work
    /// queued before it). The caller keeps `ptr..ptr + bytes` inside one of its buffers.
    pub fn download_bytes(&self, ptr: u64, bytes: usize) -> CudaResult<Vec<u8>> {
        self.bind()?;
        let mut out = vec![0u8; bytes];
        if bytes > 0 {
            drv("cuMemcpyDtoHAsync", unsafe { result::memcpy_dtoh_async(&mut out, ptr, self.stream) })?;
        }
        self.synchronize()?;
        Ok(out)
    }

    /// Fills a buffer with the byte `b` (0xff makes every f32/bf16 a NaN: poison for tests).
    pub fn fill_bytes<T>(&self, buf: &DeviceBuffer<T>, b: u8) -> CudaResult<()> {
        self.bind()?;
        let n = buf.len * std::mem::size_of::<T>();
        drv("cuMemsetD8Async", unsafe { result::memset_d8_async(buf.ptr, b, n, self.stream) })
    }

    /// Device-to-device copy of `n` bytes (used to measure the memory bandwidth ceiling).
    pub fn copy_bytes<T, U>(&self, dst: &DeviceBuffer<T>, src: &DeviceBuffer<U>, n: usize) -> CudaResult<()> {
        self.bind()?;
        assert!(n <= dst.bytes && n <= src.bytes);
        drv("cuMemcpyDtoDAsync", unsafe { result::memcpy_dtod_async(dst.ptr, src.ptr, n, self.stream) })
    }

    /// Waits for everything queued on this device's stream.
    pub fn synchronize(&self) -> CudaResult<()> {
        self.bind()?;
        drv("cuStreamSynchronize", unsafe { result::stream::synchronize(self.stream) })
    }

    pub(crate) fn stream(&self) -> sys::CUstream {
        self.stream
    }

    /// Times `f` (which queues work) with device events: the median over `reps` runs after one
    /// warm-up, in milliseconds.
    pub fn time_ms(&self, reps: usize, mut f: impl FnMut() -> CudaResult<()>) -> CudaResult<f32> {
        self.bind()?;
        f()?;
        self.synchronize()?;
        let flags = sys::CUevent_flags::CU_EVENT_DEFAULT;
        let (start, end) =
            (drv("cuEventCreate", result::event::create(flags))?, drv("cuEventCreate", result::event::create(flags))?);
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps {
            drv("cuEventRecord", unsafe { result::event::record(start, self.stream) })?;
            f()?;
            drv("cuEventRecord", unsafe { result::event::record(end, self.stream) })?;
            drv("cuEventSynchronize", unsafe { result::event::synchronize(end) })?;
            times.push(drv("cuEventElapsedTime", unsafe { result::event::elapsed(start, end) })?);
        }
        unsafe {
            let _ = result::event::destroy(start);
            let _ = result::event::destroy(end);
        }
        times.sort_by(f32::total_cmp);
        Ok(times[times.len() / 2])
    }
}

/// A typed device allocation; returns to the device's pool when dropped.
pub struct DeviceBuffer<T> {
    ptr: sys::CUdeviceptr,
    len: usize,
    bytes: usize,
    dev: Arc<CudaDevice>,
    _t: PhantomData<T>,
}

impl<T> DeviceBuffer<T> {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The raw device address (a kernel argument).
    pub fn ptr(&self) -> u64 {
        self.ptr
    }
}

impl<T> Drop for DeviceBuffer<T> {
    fn drop(&mut self) {
        self.dev.pool.lock().unwrap().entry(self.bytes).or_default().push(self.ptr);
    }
}

impl Drop for CudaDevice {
    fn drop(&mut self) {
        if self.bind().is_ok() {
            unsafe {
                let _ = result::stream::synchronize(self.stream);
                let _ = result::stream::destroy(self.stream);
            }
            for (_, ptrs) in self.pool.lock().unwrap().drain() {
                for p in ptrs {
                    unsafe {
                        let _ = result::free_sync(p);
                    }
                }
            }
        }
    }
}
