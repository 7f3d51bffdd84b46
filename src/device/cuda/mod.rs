//! The CUDA device: one context and stream on GPU 0, buffers as `CudaSlice<f32>`, and the
//! launch machinery. Kernel sources belong to the ops; each is compiled by NVRTC (cached on
//! disk) and loaded the first time one of its kernels is launched. cudarc loads the driver
//! and NVRTC at run time, so a build without CUDA works; `probe` checks for both before any
//! CUDA call.

pub mod compile;
pub mod cubin;
pub mod occupancy;
pub mod resources;
pub mod tune;

use super::{Backend, FromMapped};
use anyhow::{anyhow, bail, Context, Result};
use compile::{Design, KernelSource, Launch, ParamKind};
use cudarc::driver::{result as drv, sys, CudaContext, CudaFunction, CudaSlice, CudaStream, CudaView, CudaViewMut, LaunchConfig};
use cudarc::nvrtc::Ptx;
use std::cell::{RefCell, RefMut};
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;

/// The GPU a run would use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub name: String,
    /// Compute capability (major, minor).
    pub capability: (i32, i32),
    pub memory_bytes: usize,
    /// Streaming multiprocessors (sizes split-K).
    pub sms: usize,
}

impl DeviceInfo {
    /// The NVRTC target, e.g. "sm_90".
    pub fn arch(&self) -> String {
        format!("sm_{}{}", self.capability.0, self.capability.1)
    }

    /// "NVIDIA H200, sm_90", with ", tf32" (", bf16") when matrix products run in TF32 (BF16).
    pub fn describe(&self, precision: Precision) -> String {
        match precision {
            Precision::F32 => self.to_string(),
            p => format!("{self}, {p}"),
        }
    }
}

impl fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, {}", self.name, self.arch())
    }
}

/// How the matrix products (convolution, deconvolution, inner product) compute. Everything
/// else is f32 either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32 FMA on the CUDA cores (the default; matches the CPU to 1e-4 relative).
    #[default]
    F32,
    /// Tensor cores: inputs rounded to TF32 (10-bit mantissa), f32 accumulation. Needs
    /// compute capability 8.0 or newer.
    Tf32,
    /// Tensor cores: inputs rounded to BF16 (7-bit mantissa, to nearest even) as they enter
    /// shared memory, f32 accumulation (mma m16n8k16). Storage stays f32: BF16 storage is
    /// future work. Needs compute capability 8.0 or newer.
    Bf16,
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "tf32" => Ok(Precision::Tf32),
            "bf16" => Ok(Precision::Bf16),
            _ => Err(format!("unknown precision '{s}' (use f32, tf32 or bf16)")),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
        })
    }
}

/// Device scratch, grown to the largest size asked for and then reused: steady state
/// allocates nothing.
#[derive(Default)]
pub(crate) struct Scratch {
    /// Column matrices of a run of images (convolutions).
    pub(crate) col: RefCell<Option<CudaSlice<f32>>>,
    /// One blob's worth of temporaries (Eltwise PROD backward).
    pub(crate) tmp: RefCell<Option<CudaSlice<f32>>>,
    /// Small per-row values (reductions to the host).
    pub(crate) small: RefCell<Option<CudaSlice<f32>>>,
    /// Split-K partial products.
    pub(crate) splitk: RefCell<Option<CudaSlice<f32>>>,
}

/// The kernels of each source loaded so far, by source name, with their PTX signatures.
type Loaded = HashMap<&'static str, HashMap<String, (CudaFunction, Vec<ParamKind>)>>;

pub struct Cuda {
    pub info: DeviceInfo,
    ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    loaded: Rc<RefCell<Loaded>>,
    pub(crate) scratch: Scratch,
    precision: Precision,
    /// Which version of each versioned kernel runs, per shape (shared by `share`d handles).
    pub(crate) tuner: Rc<RefCell<tune::Tuner>>,
}

/// The largest column buffer a convolution uses before it splits the batch into runs of
/// images (floats; 256 MiB).
pub(crate) const COL_BUDGET: usize = 64 << 20;

/// A GPU allocation that did not fit. It is its own type so that callers can find it in an
/// error chain and retry with less work (a smaller batch).
#[derive(Debug)]
pub struct OutOfMemory(pub String);

impl fmt::Display for OutOfMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OutOfMemory {}

pub(crate) fn driver_err(what: &str) -> impl Fn(drv::DriverError) -> anyhow::Error + '_ {
    move |e| {
        if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
            anyhow::Error::new(OutOfMemory(format!("CUDA {what}: out of GPU memory")))
        } else {
            anyhow!("CUDA {what}: {e}")
        }
    }
}

impl Cuda {
    /// The first GPU, when the driver, a device and NVRTC are all there. `Ok(None)`: no CUDA
    /// driver is installed; `Err`: the reason a present driver gives no usable GPU. Never
    /// panics.
    pub fn probe() -> Result<Option<DeviceInfo>> {
        Cuda::probe_on(0)
    }

    /// As `probe`, for GPU `ordinal` (`--device cuda:K`).
    pub fn probe_on(ordinal: usize) -> Result<Option<DeviceInfo>> {
        std::panic::catch_unwind(|| probe_driver(ordinal)).unwrap_or_else(|_| bail!("the CUDA driver could not be queried"))
    }

    /// A context and stream on the first GPU whose matrix products compute in `precision`.
    /// Kernels are compiled by NVRTC on first use (from the disk cache on later runs).
    pub fn new(precision: Precision) -> Result<Cuda> {
        Cuda::on(0, precision)
    }

    /// As `new`, on GPU `ordinal`.
    pub fn on(ordinal: usize, precision: Precision) -> Result<Cuda> {
        let info = Cuda::probe_on(ordinal)?.context("no CUDA driver found")?;
        let mut cuda = std::panic::catch_unwind(|| Cuda::open(ordinal, info)).unwrap_or_else(|_| bail!("CUDA initialization failed"))?;
        cuda.set_precision(precision)?;
        Ok(cuda)
    }

    fn open(ordinal: usize, info: DeviceInfo) -> Result<Cuda> {
        let ctx = CudaContext::new(ordinal).map_err(driver_err("context"))?;
        // SAFETY: everything runs on one stream, so cudarc's cross-stream events are not needed.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        let forced = tune::parse_forced(&std::env::var("DGNAM_KERNEL_VERSIONS").unwrap_or_default())?;
        let mut driver = 0;
        // SAFETY: writes one int; the driver is loaded (the context exists).
        unsafe { sys::cuDriverGetVersion(&mut driver) };
        let device = format!("{} {} {} SMs | driver {driver}", info.name, info.arch(), info.sms);
        let tuner = Rc::new(RefCell::new(tune::Tuner::new(tune::Tuner::default_path(), device, forced)));
        Ok(Cuda { info, ctx, stream, loaded: Rc::default(), scratch: Scratch::default(), precision: Precision::F32, tuner })
    }

    /// Seconds of one run of `f` on the GPU: one warm-up, then the best of three.
    pub(crate) fn time_runs(&self, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
        f()?;
        self.synchronize()?;
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let t = std::time::Instant::now();
            f()?;
            self.synchronize()?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        Ok(best)
    }

    /// Forces every versioned kernel to `version` (None: back to measured choices), for
    /// `dgnam bench --versions`.
    pub fn force_versions(&self, version: Option<usize>) {
        self.tuner.borrow_mut().force("all", version);
    }

    /// Forces one versioned kernel (by its name in `DGNAM_KERNEL_VERSIONS`, e.g. `transpose`)
    /// to `version` (None: back to the measured or otherwise forced choice).
    pub fn force_kernel_version(&self, kernel: &str, version: Option<usize>) {
        self.tuner.borrow_mut().force(kernel, version);
    }

    /// How many (kernel, shape) choices this device measured in this process.
    pub fn versions_measured(&self) -> usize {
        self.tuner.borrow().measured
    }

    /// Chooses how matrix products compute; TF32 and BF16 need compute capability 8.0 or newer.
    pub fn set_precision(&mut self, p: Precision) -> Result<()> {
        if p != Precision::F32 && self.info.capability.0 < 8 {
            bail!(
                "--precision {p} needs tensor cores with {} (compute capability 8.0 or newer); {} is {}",
                p.to_string().to_uppercase(),
                self.info.name,
                self.info.arch()
            );
        }
        self.precision = p;
        Ok(())
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Compiles (or takes from the disk cache) and loads every kernel of `source`, once.
    pub fn load(&self, source: &KernelSource) -> Result<()> {
        if self.loaded.borrow().contains_key(source.name) {
            return Ok(());
        }
        let (arch, name) = (self.info.arch(), source.name);
        let ptx = compile::compile_cached(name, source.text, &arch)?;
        let module = self.ctx.load_module(Ptx::from_src(ptx.clone())).map_err(|e| anyhow!("CUDA cannot load {name} for {arch}: {e}"))?;
        let mut funcs = HashMap::new();
        for (entry, params) in compile::entry_points(&ptx) {
            let f = module.load_function(&entry).map_err(|e| anyhow!("CUDA kernel {entry} of {name}: {e}"))?;
            funcs.insert(entry, (f, params));
        }
        self.loaded.borrow_mut().insert(name, funcs);
        Ok(())
    }

    /// A second handle on the same context, stream and kernels (with its own scratch), for
    /// nets that exchange buffers: DGN-AM's generator and classifier.
    pub fn share(&self) -> Cuda {
        Cuda {
            info: self.info.clone(),
            ctx: self.ctx.clone(),
            stream: self.stream.clone(),
            loaded: self.loaded.clone(),
            scratch: Scratch::default(),
            precision: self.precision,
            tuner: self.tuner.clone(),
        }
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Waits for every kernel launched so far (benchmarks; downloads synchronize by themselves).
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(driver_err("synchronize"))
    }

    /// Kernel `name` of `source` (loading the source on first use), after checking the kinds
    /// of the launch's arguments against its PTX signature (a mismatch is an error, never a
    /// launch with garbage arguments).
    pub(crate) fn func(&self, source: &KernelSource, name: &str, args: &[ParamKind]) -> Result<CudaFunction> {
        self.load(source)?;
        let loaded = self.loaded.borrow();
        let (f, params) =
            loaded.get(source.name).and_then(|m| m.get(name)).with_context(|| format!("CUDA kernel '{name}' is not in {}", source.name))?;
        if params.as_slice() != args {
            bail!("CUDA kernel {name} takes {params:?}, the launch passes {args:?}");
        }
        Ok(f.clone())
    }

    /// A scratch buffer of at least `len` floats, grown (never shrunk) on demand.
    pub(crate) fn scratch<'s>(&self, cell: &'s RefCell<Option<CudaSlice<f32>>>, len: usize) -> Result<RefMut<'s, CudaSlice<f32>>> {
        let mut slot = cell.try_borrow_mut().map_err(|_| anyhow!("CUDA scratch buffer is already in use"))?;
        if slot.as_ref().is_none_or(|b| b.len() < len) {
            *slot = None; // free the old one first
            *slot = Some(self.stream.alloc_zeros::<f32>(len.max(1)).map_err(driver_err("allocation"))?);
        }
        Ok(RefMut::map(slot, |s| s.as_mut().expect("just allocated")))
    }
}

fn probe_driver(ordinal: usize) -> Result<Option<DeviceInfo>> {
    // SAFETY: only tries to dlopen the driver library by its usual names.
    if !unsafe { sys::is_culib_present() } {
        return Ok(None);
    }
    drv::init().map_err(|e| anyhow!("the CUDA driver found no usable GPU ({e})"))?;
    let count = drv::device::get_count().map_err(driver_err("device count"))?;
    if count < 1 {
        bail!("the CUDA driver reports no GPU");
    }
    if ordinal >= count as usize {
        bail!("there is no GPU {ordinal}: the CUDA driver reports {count} (0 to {})", count - 1);
    }
    let dev = drv::device::get(ordinal as i32).map_err(driver_err("device"))?;
    let name = drv::device::get_name(dev).map_err(driver_err("device name"))?;
    use sys::CUdevice_attribute::{
        CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR as MAJOR, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR as MINOR,
        CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT as SMS,
    };
    // SAFETY: `dev` is a valid device handle from cuDeviceGet.
    let (major, minor, sms, memory_bytes) = unsafe {
        (
            drv::device::get_attribute(dev, MAJOR).map_err(driver_err("compute capability"))?,
            drv::device::get_attribute(dev, MINOR).map_err(driver_err("compute capability"))?,
            drv::device::get_attribute(dev, SMS).map_err(driver_err("multiprocessor count"))?,
            drv::device::total_mem(dev).map_err(driver_err("memory size"))?,
        )
    };
    if !compile::nvrtc_present() {
        bail!("a GPU ({name}) is present but NVRTC (libnvrtc.so.13) was not found; put its directory on LD_LIBRARY_PATH");
    }
    Ok(Some(DeviceInfo { name, capability: (major, minor), memory_bytes, sms: sms.max(1) as usize }))
}

/// Threads per block of the grid-stride kernels (`grid_for`).
pub const GRID_THREADS: u32 = 256;

/// Threads per block of the one-block-per-item reductions (`blocks_of`); the kernels'
/// `REDUCE_THREADS` (kernels/common.cuh) and softmax's `THREADS`.
pub const REDUCE_THREADS: u32 = 256;

/// A launch over `n` elements for the grid-stride kernels.
pub(crate) fn grid_for(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(GRID_THREADS as usize).clamp(1, 1 << 16) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (GRID_THREADS, 1, 1), shared_mem_bytes: 0 }
}

/// One block of REDUCE_THREADS per item (reductions).
pub(crate) fn blocks_of(items: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (items as u32, 1, 1), block_dim: (REDUCE_THREADS, 1, 1), shared_mem_bytes: 0 }
}

/// The declaration of a kernel launched by `grid_for`. Grid-stride kernels are memory-bound and
/// hide latency with resident warps: they are designed for full occupancy.
pub(crate) const fn grid_stride(function: &'static str) -> Launch {
    Launch::new(function, GRID_THREADS, Design::Full)
}

/// The declaration of a kernel launched by `blocks_of`, designed for full occupancy too.
pub(crate) const fn block_per_item(function: &'static str) -> Launch {
    Launch::new(function, REDUCE_THREADS, Design::Full)
}

/// What a launch argument is to PTX.
pub(crate) trait KernelArg {
    const KIND: ParamKind;
}

impl<T> KernelArg for &CudaSlice<T> {
    const KIND: ParamKind = ParamKind::B64;
}
impl<T> KernelArg for &mut CudaSlice<T> {
    const KIND: ParamKind = ParamKind::B64;
}
impl<T> KernelArg for &CudaView<'_, T> {
    const KIND: ParamKind = ParamKind::B64;
}
impl<T> KernelArg for &mut CudaViewMut<'_, T> {
    const KIND: ParamKind = ParamKind::B64;
}
impl KernelArg for &i32 {
    const KIND: ParamKind = ParamKind::B32;
}
impl KernelArg for &u32 {
    const KIND: ParamKind = ParamKind::B32;
}
impl KernelArg for &i64 {
    const KIND: ParamKind = ParamKind::B64;
}
impl KernelArg for &f32 {
    const KIND: ParamKind = ParamKind::F32;
}

pub(crate) fn kind_of<A: KernelArg>(_: &A) -> ParamKind {
    A::KIND
}

/// Launches kernel `$name` of the kernel source `$source` with the given arguments. Buffers are passed as `&buf` or
/// `&mut buf`, scalars as `&(value as type)`: each is bound to a local that outlives the
/// launch, and their kinds are checked against the kernel's PTX signature first.
macro_rules! launch {
    ($cuda:expr, $source:expr, $name:expr, $cfg:expr; $($arg:expr),* $(,)?) => {{
        use cudarc::driver::PushKernelArg as _;
        let cfg: cudarc::driver::LaunchConfig = $cfg;
        let kinds = [$($crate::device::cuda::kind_of(&$arg)),*];
        let func = $cuda.func(&$source, $name, &kinds)?;
        let mut builder = $cuda.stream.launch_builder(&func);
        launch!(@push builder; $($arg),*);
        // SAFETY: argument kinds match the kernel's PTX signature (checked above), and callers
        // check every buffer against the sizes the kernel touches.
        unsafe { builder.launch(cfg) }.map(|_| ()).map_err(|e| anyhow::anyhow!("CUDA kernel {}: {e}", $name))
    }};
    (@push $b:ident;) => {};
    (@push $b:ident; $a:expr $(, $rest:expr)*) => {
        let arg = $a;
        $b.arg(arg);
        launch!(@push $b; $($rest),*);
    };
}
pub(crate) use launch;

pub(crate) fn ensure_len<T>(buf: &CudaSlice<T>, want: usize, what: &str) -> Result<()> {
    if buf.len() != want {
        bail!("{what} has {} values, expected {want}", buf.len());
    }
    Ok(())
}

impl<'w> FromMapped<'w> for Cuda {
    /// Uploads mapped weights once.
    fn param_from_mapped(&self, data: &'w [f32]) -> Result<CudaSlice<f32>> {
        self.param_from_host(data)
    }
}

type Buf = CudaSlice<f32>;

impl Backend for Cuda {
    type Scalar = f32;
    type Buf = Buf;
    type Param = Buf;
    type Index = CudaSlice<u32>;

    fn name(&self) -> String {
        format!("cuda ({})", self.info.describe(self.precision))
    }

    fn alloc(&self, len: usize) -> Result<Buf> {
        if len == 0 {
            return self.stream.null().map_err(driver_err("allocation"));
        }
        self.stream.alloc_zeros::<f32>(len).map_err(driver_err("allocation"))
    }

    fn alloc_index(&self, len: usize) -> Result<CudaSlice<u32>> {
        self.stream.alloc_zeros::<u32>(len.max(1)).map_err(driver_err("allocation"))
    }

    fn len(&self, buf: &Buf) -> usize {
        buf.len()
    }

    fn index_len(&self, index: &CudaSlice<u32>) -> usize {
        index.len()
    }

    fn zero(&self, buf: &mut Buf) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.stream.memset_zeros(buf).map_err(driver_err("memset"))
    }

    fn param_from_host(&self, data: &[f32]) -> Result<Buf> {
        let mut buf = self.alloc(data.len())?;
        self.upload(&mut buf, data)?;
        Ok(buf)
    }

    fn upload(&self, buf: &mut Buf, data: &[f32]) -> Result<()> {
        if buf.len() != data.len() {
            bail!("upload of {} values into a buffer of {}", data.len(), buf.len());
        }
        if data.is_empty() {
            return Ok(());
        }
        self.stream.memcpy_htod(data, buf).map_err(driver_err("upload"))
    }

    fn download(&self, buf: &Buf) -> Result<Vec<f32>> {
        if buf.is_empty() {
            return Ok(Vec::new());
        }
        let host = self.stream.clone_dtoh(buf).map_err(driver_err("download"))?;
        self.synchronize()?;
        Ok(host)
    }

    fn copy(&self, src: &Buf, dst: &mut Buf) -> Result<()> {
        if src.len() != dst.len() {
            bail!("copy of {} values into a buffer of {}", src.len(), dst.len());
        }
        if src.is_empty() {
            return Ok(());
        }
        self.stream.memcpy_dtod(src, dst).map_err(driver_err("copy"))
    }
}
