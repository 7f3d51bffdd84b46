"""dgnam: the preferred inputs of neurons in trained image classifiers, by activation
maximization through a deep generator network (DGN-AM, Nguyen et al., NIPS 2016).

Every call is one of dgnam's commands with NumPy arrays in and out, and gives the numbers
the command gives for the same arguments. The GIL is released while a call computes.
Errors are exceptions carrying the command's one-line message: ``FileNotFoundError`` for
a missing input file, ``RuntimeError`` for the device (no usable GPU, NVRTC, out of GPU
memory) and for a run that went non-finite, ``ValueError`` for everything else.
"""

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, TypedDict, Union

import numpy as np
import numpy.typing as npt

__version__: str
"""dgnam's version (the crate's)."""

_Path = Union[str, "os.PathLike[str]"]
_Units = Union[str, int, Sequence[Union[int, str, Tuple[int, int]]]]

class LayerInfo(TypedDict):
    name: str
    type: str
    outputs: List[List[int]]
    parameters: int
    mflop: float

class InputInfo(TypedDict):
    name: str
    shape: List[int]

class NetInfo(TypedDict):
    name: str
    path: str
    batch: int
    inputs: List[InputInfo]
    layers: List[LayerInfo]
    parameters: int
    gflop: float
    weights: Optional[int]
    input_space: Optional[str]
    text: str

class Net:
    """A net file opened once: a ``.dgnw`` weights file (``dgnam.convert`` writes one), or
    a bare ``.prototxt``, which gets seeded random weights at its real shapes (seed 0, as
    ``dgnam gradcheck`` gives it).

    ``device``: ``"auto"`` (a usable GPU, else the CPU), ``"cpu"`` or ``"cuda"``.
    ``precision``: ``"f32"``, or ``"tf32"`` (tensor cores; GPU only).

    A net runs at any batch: each call builds it for the batch of its input (on the CPU
    over the mapped weights, without copying them).

    Raises ``FileNotFoundError`` when ``path`` is missing, ``ValueError`` when it is not a
    net, ``RuntimeError`` when ``device="cuda"`` finds no usable GPU.
    """

    def __init__(self, path: _Path, device: str = "auto", precision: str = "f32") -> None: ...
    def forward(
        self, x: npt.ArrayLike, layers: Union[str, Sequence[str], None] = None
    ) -> Dict[str, npt.NDArray[np.float32]]:
        """The outputs of ``layers`` (one name or several; default: the last layer) for
        ``x``, an N x C x H x W array in the net's input space (any batch N; converted to
        float32 unless it already is C-contiguous float32), as ``dgnam forward`` writes them.

        A layer's output is what the layer itself produced, before any later in-place layer
        (a ReLU) rewrote its blob: ``"conv5"`` is pre-ReLU.

        Raises ``ValueError`` for an unknown layer, an input of the wrong shape, or one with a
        NaN or infinity.
        """
    def backward(
        self, x: npt.ArrayLike, layer: str, unit: int, xy: Optional[Tuple[int, int]] = None
    ) -> npt.NDArray[np.float32]:
        """d(sum over the batch of ``layer[n, unit (, y, x)]``) / d ``x``, an array shaped
        like ``x``, as ``dgnam backward`` writes it. ``xy``: the position (x, y) of a unit of
        a convolutional layer (default: the center of its map).

        Raises ``ValueError`` for an unknown layer, a unit out of range, or a bad input.
        """
    def info(self) -> NetInfo:
        """What ``dgnam info`` reports, as data: the inputs, every layer with its output
        shapes, parameter count and MFLOP at the declared batch, the totals, the number of
        stored tensors and the input space (both None for a bare prototxt); ``"text"`` is
        exactly what ``dgnam info`` prints."""
    @property
    def path(self) -> str:
        """The file the net was read from."""
    @property
    def device(self) -> str:
        """Where it runs: ``"cpu"`` or ``"cuda"`` (``"auto"`` resolved)."""
    @property
    def device_info(self) -> str:
        """The line the command line prints about its device, e.g.
        ``"device: cpu (no CUDA driver found)"``."""
    @property
    def precision(self) -> str:
        """``"f32"`` or ``"tf32"``."""
    @property
    def input_shape(self) -> List[int]:
        """The input shape the net declares (its batch is only a default)."""

class ConvertResult(TypedDict):
    path: str
    tensors: int
    parameters: int

def convert(
    prototxt: Optional[_Path] = None,
    caffemodel: Optional[_Path] = None,
    out: Optional[_Path] = None,
    *,
    onnx: Optional[_Path] = None,
    input_space: Optional[str] = None,
    random_weights: Optional[int] = None,
) -> ConvertResult:
    """``dgnam-convert``: a deploy ``prototxt`` with its trained ``caffemodel`` (layers
    matched by name, every blob's shape checked), a ``prototxt`` with seeded
    ``random_weights``, or an ``onnx`` model (``input_space`` ``"torchvision"``, the
    default, or ``"caffe"``) into the weights file ``out``. The file is byte for byte the
    one ``dgnam-convert`` writes; nothing is written unless the whole model converts.

    Raises ``FileNotFoundError`` for a missing input, ``ValueError`` for anything that does
    not convert (one line naming the layer, blob or ONNX node).
    """

class UnitResult(TypedDict):
    layer: str
    unit: Union[int, Tuple[int, int]]
    seed: int
    xy: Optional[Tuple[int, int]]
    label: str
    image: npt.NDArray[np.float32]
    rgb: npt.NDArray[np.uint8]
    code: npt.NDArray[np.float32]
    activations: npt.NDArray[np.float64]
    probability: Optional[float]
    stopped_at: Optional[int]
    seconds: float
    files: Optional[Dict[str, str]]

def synthesize(
    net: Union[_Path, Net],
    generator: Union[_Path, Net, None],
    layer: str = "fc8",
    units: Optional[_Units] = None,
    iters: int = 200,
    lr: Optional[float] = None,
    lr_end: float = 1e-10,
    decay: float = 0.99,
    bounds: Optional[_Path] = None,
    seed: int = 0,
    batch: Optional[int] = None,
    init_code: Union[_Path, npt.ArrayLike, None] = None,
    out_dir: Optional[_Path] = None,
    progress: bool = True,
    *,
    xy: Optional[Tuple[int, int]] = None,
    objective: str = "activation",
    gamma: float = 0.0,
    seeds: Union[str, Sequence[int], None] = None,
    init_image: Optional[_Path] = None,
    encoder_layer: Optional[str] = None,
    labels: Optional[_Path] = None,
    render: str = "paper",
    save_every: Optional[int] = None,
    device: Optional[str] = None,
    precision: Optional[str] = None,
) -> List[UnitResult]:
    """``dgnam synthesize``: the preferred image of each of ``units`` of ``layer`` of the
    classifier ``net``, by the DGN-AM loop through ``generator``; bit for bit what the
    command computes with the same arguments. Each argument is the command's flag of the
    same name, with the command's default:

    - ``net``, ``generator``: ``.dgnw`` files, or ``dgnam.Net`` objects (their device and
      precision are then the default). ``generator=None`` or ``"none"``: pixel-space AM
      with hand-designed priors (``--generator none``).
    - ``units``: None (945, the command's default), an int, ``"all"``, ``"945,643"``, or a
      list of ints, ``"a+b"`` strings and ``(a, b)`` pairs (two units at once, paper eq. 2,
      weighted by ``gamma``).
    - ``lr``: None gives the paper's step for the net: 8, or 2 for GoogLeNet.
    - ``bounds``: None gives the shipped bounds of the generator's code layer
      (``weights/act_range/3x/<layer>.txt``, else 2x); ``"none"``: no clamping.
    - ``batch``: None gives 8 on the CPU, 128 on a GPU; results do not depend on it.
    - ``init_code``: an (N, code) ``.npy`` file or array (row i starts unit i, one row starts
      all); an array is saved as ``out_dir/init_code.npy`` for the run to read.
    - ``out_dir``: where the command's files go (PNGs, ``.image.npy``, ``.code.npy``,
      ``summary.json``, the montage and the gallery), exactly as ``--out-dir`` writes them;
      units already there are not run again. None: a temporary folder, removed afterwards.
    - ``progress``: a counter and the run's notes on ``sys.stderr``; False prints nothing.
    - ``device``: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:K"``.

    Returns one dict per unit (and seed), in the order given: ``unit``, ``label``, ``image``
    (the final crop, C x H x W float32 in the net's input space, 3 x 227 x 227 for
    CaffeNet), ``rgb`` (H x W x 3 uint8, exactly the PNG's pixels), ``code`` (the code that
    made ``image``), ``activations`` (the objective at each iteration), ``probability``
    (the softmax of the unit where the net has one), and ``files`` (the unit's written
    files, or None without ``out_dir``).

    Raises ``ValueError`` for bad arguments (the command's message, which names its flag),
    ``FileNotFoundError`` for a missing input file, ``RuntimeError`` for the device or a
    unit that went non-finite (the others are written first).
    """

class DigitResult(TypedDict, total=False):
    digit: int
    image: npt.NDArray[np.float32]
    rgb: npt.NDArray[np.uint8]
    activation: float
    probability: float
    nearest: Tuple[int, float]
    code: npt.NDArray[np.float32]

class DemoResult(TypedDict):
    pixel_am: List[DigitResult]
    dgn_am: List[DigitResult]
    montage: npt.NDArray[np.uint8]
    summary: str

def demo(out_dir: Optional[_Path] = None, iters: int = 200, seed: int = 0, progress: bool = True) -> DemoResult:
    """``dgnam demo``: the preferred image of each of the shipped LeNet's ten digits (its
    ``ip2`` units) by pixel-space AM (``"pixel_am"``) and by DGN-AM through the shipped prior
    (``"dgn_am"``), offline, in seconds on a CPU. Each digit has its ``image`` (1 x 28 x 28 in
    LeNet's input space), ``rgb`` (its PNG's pixels, 224 x 224 x 3), the final
    ``activation`` and ``probability``, the ``nearest`` real digit (index into
    ``weights/demo/digits.npy``, distance after normalizing both) and, for DGN-AM, its
    ``code``. ``montage`` is ``montage.png``'s pixels (pixel AM above, DGN-AM below) and
    ``summary`` the lines ``dgnam demo`` prints. With ``out_dir`` it writes what
    ``dgnam demo --out-dir`` writes; without, into a temporary folder removed afterwards.
    """
