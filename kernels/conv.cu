// im2col / col2im for convolution and deconvolution (Caffe's column layout), over a run of
// `images` consecutive images. For one image the column matrix has rows (c, ki, kj) and
// columns (oh, ow):
//   col[(c*kh + ki)*kw + kj][oh*out_w + ow] = x[c][oh*sh - ph + ki*dh][ow*sw - pw + kj*dw]
// (0 outside the image). Image n's matrix starts at n * channels*kh*kw*out_h*out_w.

extern "C" __global__ void im2col(
    const float* __restrict__ x, float* __restrict__ col, int images,
    int channels, int in_h, int in_w, int out_h, int out_w,
    int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw)
{
    const long long plane = (long long)out_h * out_w;
    const long long total = (long long)images * channels * kh * kw * plane;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
        const int ow = i % out_w;
        const int oh = (i / out_w) % out_h;
        const long long row = i / plane;             // (n, c, ki, kj)
        const int kj = row % kw;
        const int ki = (row / kw) % kh;
        const long long nc = row / ((long long)kw * kh);  // n * channels + c
        const int ih = oh * sh - ph + ki * dh;
        const int iw = ow * sw - pw + kj * dw;
        float v = 0.0f;
        if (ih >= 0 && ih < in_h && iw >= 0 && iw < in_w) v = x[(nc * in_h + ih) * in_w + iw];
        col[i] = v;
    }
}

// The transpose of im2col, as a gather (one thread per image pixel, no atomics):
// x[c][ih][iw] (+)= sum of every column entry im2col read from there. accumulate = 0 overwrites.
extern "C" __global__ void col2im(
    const float* __restrict__ col, float* __restrict__ x, int images, int accumulate,
    int channels, int in_h, int in_w, int out_h, int out_w,
    int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw)
{
    const long long plane = (long long)out_h * out_w;
    const long long total = (long long)images * channels * in_h * in_w;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
        const int iw = i % in_w;
        const int ih = (i / in_w) % in_h;
        const long long nc = i / ((long long)in_w * in_h);
        const float* src = col + nc * kh * kw * plane;  // rows (c, 0, 0).. of image n
        float sum = 0.0f;
        for (int ki = 0; ki < kh; ki++) {
            const int hs = ih + ph - ki * dh;  // = oh * sh
            if (hs < 0 || hs % sh != 0) continue;
            const int oh = hs / sh;
            if (oh >= out_h) continue;
            for (int kj = 0; kj < kw; kj++) {
                const int ws = iw + pw - kj * dw;
                if (ws < 0 || ws % sw != 0) continue;
                const int ow = ws / sw;
                if (ow >= out_w) continue;
                sum += src[(ki * kw + kj) * plane + oh * out_w + ow];
            }
        }
        x[i] = accumulate ? x[i] + sum : sum;
    }
}

// Version 2 of both, without division in the loop over elements (sm_90's SASS of version 1
// spends 150-230 instructions per element on 64-bit div/mod). Dilation 1 only: the host
// runs version 1 otherwise. Same values and, for col2im, the same order of additions as
// version 1, so the two give the same bits.
//
// The grid is 2-D: blockIdx.y walks rows of the column matrix (im2col) or input planes
// (col2im), and the threads of gridDim.x blocks walk one row's positions. A thread splits
// its first position and its stride into (row, column) once, then advances both by
// addition. Every index fits in 32 bits (the host checks). im2col2 asks for 8 blocks per SM
// (at most 32 registers): it is bound by memory, and occupancy hides its latency.

// (q, r) = (v / s, v % s) for v >= 0 and a small divisor s, cheap for strides 1 and 2.
__device__ __forceinline__ void divmod_small(int v, int s, int& q, int& r) {
    if (s == 1) { q = v; r = 0; }
    else if (s == 2) { q = v >> 1; r = v & 1; }
    else { q = v / s; r = v - q * s; }
}

extern "C" __global__ void __launch_bounds__(256, 8) im2col2(
    const float* __restrict__ x, float* __restrict__ col, int images,
    int channels, int in_h, int in_w, int out_h, int out_w,
    int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw)
{
    const int plane = out_h * out_w, rows = images * channels * kh * kw;
    const int step = blockDim.x * gridDim.x, first = blockIdx.x * blockDim.x + threadIdx.x;
    if (first >= plane) return;
    const int oh0 = first / out_w, ow0 = first - oh0 * out_w;
    const int dq = step / out_w, dr = step - dq * out_w;
    for (int row = blockIdx.y; row < rows; row += gridDim.y) {
        const int kj = row % kw, t = row / kw, ki = t % kh, nc = t / kh;
        const float* xs = x + (long long)nc * in_h * in_w;
        float* out = col + (long long)row * plane;
        const int h_off = ki - ph, w_off = kj - pw;
        int oh = oh0, ow = ow0;
        for (int p = first; p < plane; p += step) {
            const int ih = oh * sh + h_off, iw = ow * sw + w_off;
            out[p] = ((unsigned)ih < (unsigned)in_h && (unsigned)iw < (unsigned)in_w) ? xs[ih * in_w + iw] : 0.0f;
            ow += dr; oh += dq;
            if (ow >= out_w) { ow -= out_w; oh++; }
        }
    }
}

extern "C" __global__ void __launch_bounds__(256) col2im2(
    const float* __restrict__ col, float* __restrict__ x, int images, int accumulate,
    int channels, int in_h, int in_w, int out_h, int out_w,
    int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw)
{
    const int plane = out_h * out_w, in_plane = in_h * in_w, planes = images * channels;
    const int step = blockDim.x * gridDim.x, first = blockIdx.x * blockDim.x + threadIdx.x;
    if (first >= in_plane) return;
    const int ih0 = first / in_w, iw0 = first - ih0 * in_w;
    const int dq = step / in_w, dr = step - dq * in_w;
    for (int nc = blockIdx.y; nc < planes; nc += gridDim.y) {
        const float* src = col + (long long)nc * kh * kw * plane;  // rows (c, 0, 0).. of image n
        float* dst = x + (long long)nc * in_plane;
        int ih = ih0, iw = iw0;
        for (int p = first; p < in_plane; p += step) {
            // Tap ki reads this pixel from output row oh when ih + ph = oh * sh + ki: the first
            // such tap is ki = (ih + ph) mod sh, and each next one (ki + sh) is one row up.
            int oh_first, ki_first, ow_first, kj_first;
            divmod_small(ih + ph, sh, oh_first, ki_first);
            divmod_small(iw + pw, sw, ow_first, kj_first);
            float sum = 0.0f;
            for (int ki = ki_first, oh = oh_first; ki < kh && oh >= 0; ki += sh, oh--) {
                if (oh >= out_h) continue;
                for (int kj = kj_first, ow = ow_first; kj < kw && ow >= 0; kj += sw, ow--) {
                    if (ow >= out_w) continue;
                    sum += src[(ki * kw + kj) * plane + oh * out_w + ow];
                }
            }
            dst[p] = accumulate ? dst[p] + sum : sum;
            iw += dr; ih += dq;
            if (iw >= in_w) { iw -= in_w; ih++; }
        }
    }
}

// The convolution's data gradient computed directly, for narrow inputs (dx of at most
// NARROW_CHANNELS (3) channels, group 1, dilation 1): the 3-channel ends of DGN-AM, deconv0's
// forward pass and conv1's backward-data pass, where the column path multiplies into a
// column matrix 16-121 rows tall per channel and sums it back with col2im.
//
//   dx[n][c][ih][iw] (+)= sum over o, ki, kj of w[o][c][ki][kj] * dy[n][o][oh][ow],
//   where ih + ph = oh*sh + ki and iw + pw = ow*sw + kj.
//
// Block (x, y = phase, z = image): the pixels of dx whose (ih + ph) mod sh and (iw + pw) mod sw
// are the block's phase (rh, rw) read the same taps, ki = rh + t*sh and kj = rw + u*sw, from
// output row qh - t and column qw - u (qh = (ih + ph - rh) / sh). The block copies those
// taps' weights into shared memory once, as one float4 of channels per (tap, o), and each
// thread computes NARROW_PIXELS neighbouring pixels of its phase, all channels. Each sum
// runs over t, u, then o, in that order.
#define NARROW_CHANNELS 3
#define NARROW_PIXELS 4
#define NARROW_WEIGHTS 1024  // float4 entries: taps of one phase x output channels

extern "C" __global__ void __launch_bounds__(256, 4) conv_transpose_narrow(
    const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx, int accumulate,
    int channels, int in_h, int in_w, int outputs, int out_h, int out_w,
    int kh, int kw, int sh, int sw, int ph, int pw)
{
    __shared__ float4 ws[NARROW_WEIGHTS];
    const int n = blockIdx.z, rh = blockIdx.y / sw, rw = blockIdx.y - rh * sw;
    // The phase's first row and column of dx, and how many of each it has.
    const int ih0 = ((rh - ph) % sh + sh) % sh, iw0 = ((rw - pw) % sw + sw) % sw;
    if (ih0 >= in_h || iw0 >= in_w) return;  // the whole block: the phase is empty
    const int rows = (in_h - ih0 + sh - 1) / sh, cols = (in_w - iw0 + sw - 1) / sw;
    const int qh0 = (ih0 + ph - rh) / sh, qw0 = (iw0 + pw - rw) / sw;
    const int taps_h = rh < kh ? (kh - rh + sh - 1) / sh : 0, taps_w = rw < kw ? (kw - rw + sw - 1) / sw : 0;
    const int entries = taps_h * taps_w * outputs;  // the host keeps it <= NARROW_WEIGHTS
    for (int e = threadIdx.x; e < entries; e += blockDim.x) {
        const int o = e % outputs, tu = e / outputs, t = tu / taps_w, u = tu - t * taps_w;
        const float* src = w + ((long long)o * channels * kh + rh + t * sh) * kw + rw + u * sw;
        const long long c_step = (long long)kh * kw;
        ws[e] = make_float4(src[0], channels > 1 ? src[c_step] : 0.0f, channels > 2 ? src[2 * c_step] : 0.0f, 0.0f);
    }
    __syncthreads();
    const long long plane = (long long)out_h * out_w, in_plane = (long long)in_h * in_w;
    const float* dyn = dy + n * outputs * plane;
    float* dxn = dx + n * channels * in_plane;
    const int groups = (cols + NARROW_PIXELS - 1) / NARROW_PIXELS;
    for (int item = blockIdx.x * blockDim.x + threadIdx.x; item < rows * groups; item += gridDim.x * blockDim.x) {
        const int a = item / groups, b0 = (item - a * groups) * NARROW_PIXELS;
        float acc[NARROW_CHANNELS][NARROW_PIXELS];
        #pragma unroll
        for (int c = 0; c < NARROW_CHANNELS; c++)
            #pragma unroll
            for (int j = 0; j < NARROW_PIXELS; j++) acc[c][j] = 0.0f;
        for (int t = 0; t < taps_h; t++) {
            const int oh = qh0 + a - t;
            if (oh < 0 || oh >= out_h) continue;
            for (int u = 0; u < taps_w; u++) {
                const int ow0 = qw0 + b0 - u;  // pixel b0 + j reads column ow0 + j
                unsigned inside = 0;  // bit j: pixel b0 + j exists and reads a column of dy
                #pragma unroll
                for (int j = 0; j < NARROW_PIXELS; j++) inside |= (unsigned)(b0 + j < cols && ow0 + j >= 0 && ow0 + j < out_w) << j;
                const float* src = dyn + (long long)oh * out_w + ow0;
                const float4* wt = ws + (t * taps_w + u) * outputs;
                for (int o = 0; o < outputs; o++, src += plane) {
                    const float4 wv = wt[o];
                    #pragma unroll
                    for (int j = 0; j < NARROW_PIXELS; j++) {
                        const float v = (inside >> j) & 1 ? src[j] : 0.0f;
                        acc[0][j] = fmaf(wv.x, v, acc[0][j]);
                        acc[1][j] = fmaf(wv.y, v, acc[1][j]);
                        acc[2][j] = fmaf(wv.z, v, acc[2][j]);
                    }
                }
            }
        }
        const int ih = ih0 + a * sh;
        #pragma unroll
        for (int c = 0; c < NARROW_CHANNELS; c++) {
            if (c >= channels) break;
            #pragma unroll
            for (int j = 0; j < NARROW_PIXELS; j++) {
                if (b0 + j >= cols) break;
                float* d = dxn + c * in_plane + (long long)ih * in_w + iw0 + (b0 + j) * sw;
                *d = accumulate ? *d + acc[c][j] : acc[c][j];
            }
        }
    }
}

// Version 2 of the forward pass: implicit GEMM, no column matrix. Per group (grid z) it is
// the product C[o][col] = sum over k of W[o][k] * B[k][col], with k = (c, ki, kj) as in the
// column layout and the batch folded into the columns, col = n*out_h*out_w + oh*out_w + ow;
// B[k][col] is read from x as im2col would write it (0 in the padding), while the tile loads.
//   y[n][g*og + o][oh][ow] = (C[o][col] + beta * y) + bias[g*og + o]
// (beta == 0 never reads y; no bias when has_bias == 0): the column path's bits, whose
// bias_add follows its product.
// sgemm's tiling (kernels/gemm.cu): 64 x 64 tiles of C, K by 16 through double-buffered
// shared memory, 64 threads of 8 x 8 accumulators, and the same order of additions, so
// it gives the bits of im2col + sgemm (without split-K). Thread t loads row t of the weight
// tile and column t of the input tile: its column's (n, oh, ow) is split once per block, and
// its (c, ki, kj) advances by additions across the 16 taps of each stage and from stage to
// stage, so there is no division in the loop. Every index fits in 32 bits (the host checks).
#define IG_TILE 64
#define IG_K 16
#define IG_PAD 4
#define IG_THREADS 64

// Where thread t's column of B stands: its pixel's origin in x and the next tap to read.
struct ImplicitColumn {
    const float* x;  // image n, the group's first channel
    int ih0, iw0;    // oh*sh - ph, ow*sw - pw (far negative for columns past the end)
    int coff, hoff, woff;  // the next tap: c*in_h*in_w, ki*dh, kj*dw
};

__device__ __forceinline__ void implicit_fetch_b(ImplicitColumn& s, float (&v)[IG_K], int in_h, int in_w,
                                                 int c_end, int h_end, int w_end, int in_plane, int dh, int dw) {
    #pragma unroll
    for (int i = 0; i < IG_K; i++) {
        const int ih = s.ih0 + s.hoff, iw = s.iw0 + s.woff;
        v[i] = s.coff < c_end && (unsigned)ih < (unsigned)in_h && (unsigned)iw < (unsigned)in_w ? s.x[s.coff + ih * in_w + iw] : 0.0f;
        s.woff += dw;
        if (s.woff == w_end) {
            s.woff = 0;
            s.hoff += dh;
            if (s.hoff == h_end) { s.hoff = 0; s.coff += in_plane; }
        }
    }
}

// 16 weights of row m from k0 (0 past the row's end or past the last row).
__device__ __forceinline__ void implicit_fetch_a(const float* row, bool ok, bool vec, int k0, int K, float (&v)[IG_K]) {
    if (ok && vec && k0 + IG_K <= K) {
        #pragma unroll
        for (int i = 0; i < IG_K; i += 4) {
            const float4 t = *reinterpret_cast<const float4*>(row + k0 + i);
            v[i] = t.x; v[i + 1] = t.y; v[i + 2] = t.z; v[i + 3] = t.w;
        }
    } else {
        #pragma unroll
        for (int i = 0; i < IG_K; i++) v[i] = ok && k0 + i < K ? row[k0 + i] : 0.0f;
    }
}

extern "C" __global__ void __launch_bounds__(IG_THREADS) conv_forward_implicit(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias, int has_bias,
    float* __restrict__ y, float beta,
    int images, int channels, int in_h, int in_w, int outputs, int out_h, int out_w,
    int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw, int group)
{
    __shared__ __align__(16) float As[2][IG_K][IG_TILE + IG_PAD];
    __shared__ __align__(16) float Bs[2][IG_K][IG_TILE + IG_PAD];
    const int cg = channels / group, og = outputs / group, gz = blockIdx.z;
    const int K = cg * kh * kw, plane = out_h * out_w, in_plane = in_h * in_w, N = images * plane;
    const int m0 = blockIdx.y * IG_TILE, n0 = blockIdx.x * IG_TILE, tid = threadIdx.x;

    const bool a_ok = m0 + tid < og;
    const float* a_row = w + (long long)(gz * og + (a_ok ? m0 + tid : 0)) * K;
    const bool a_vec = (K & 3) == 0 && ((unsigned long long)w & 15ull) == 0;

    ImplicitColumn col;
    {
        const int c = n0 + tid;
        const int n = c < N ? c / plane : 0, p = c - n * plane, oh = p / out_w, ow = p - oh * out_w;
        col.x = x + (n * channels + gz * cg) * in_plane;
        col.ih0 = c < N ? oh * sh - ph : -(1 << 30);
        col.iw0 = ow * sw - pw;
        col.coff = 0; col.hoff = 0; col.woff = 0;
    }
    const int c_end = cg * in_plane, h_end = kh * dh, w_end = kw * dw;

    const int tx = tid % 8, ty = tid / 8;
    float acc[8][8];
    #pragma unroll
    for (int i = 0; i < 8; i++)
        #pragma unroll
        for (int j = 0; j < 8; j++) acc[i][j] = 0.0f;

    float fa[IG_K], fb[IG_K];
    implicit_fetch_a(a_row, a_ok, a_vec, 0, K, fa);
    implicit_fetch_b(col, fb, in_h, in_w, c_end, h_end, w_end, in_plane, dh, dw);
    #pragma unroll
    for (int i = 0; i < IG_K; i++) { As[0][i][tid] = fa[i]; Bs[0][i][tid] = fb[i]; }
    __syncthreads();

    int buf = 0;
    for (int k0 = 0; k0 < K; k0 += IG_K) {
        const bool more = k0 + IG_K < K;
        if (more) {
            implicit_fetch_a(a_row, a_ok, a_vec, k0 + IG_K, K, fa);
            implicit_fetch_b(col, fb, in_h, in_w, c_end, h_end, w_end, in_plane, dh, dw);
        }
        #pragma unroll
        for (int kk = 0; kk < IG_K; kk++) {
            float4 a0 = *reinterpret_cast<const float4*>(&As[buf][kk][ty * 4]);
            float4 a1 = *reinterpret_cast<const float4*>(&As[buf][kk][32 + ty * 4]);
            float4 b0 = *reinterpret_cast<const float4*>(&Bs[buf][kk][tx * 4]);
            float4 b1 = *reinterpret_cast<const float4*>(&Bs[buf][kk][32 + tx * 4]);
            float av[8] = { a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w };
            float bv[8] = { b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w };
            #pragma unroll
            for (int i = 0; i < 8; i++)
                #pragma unroll
                for (int j = 0; j < 8; j++) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
        }
        if (more) {
            // The other buffer was last read before the previous barrier: safe to fill.
            #pragma unroll
            for (int i = 0; i < IG_K; i++) { As[buf ^ 1][i][tid] = fa[i]; Bs[buf ^ 1][i][tid] = fb[i]; }
            __syncthreads();
            buf ^= 1;
        }
    }

    // Column j's offset in y without its channel (-1 past the end): split once here.
    int yoff[8];
    #pragma unroll
    for (int j = 0; j < 8; j++) {
        const int c = n0 + (j < 4 ? tx * 4 + j : 32 + tx * 4 + j - 4);
        const int n = c / plane;
        yoff[j] = c < N ? n * outputs * plane + (c - n * plane) : -1;
    }
    #pragma unroll
    for (int i = 0; i < 8; i++) {
        const int m = m0 + (i < 4 ? ty * 4 + i : 32 + ty * 4 + i - 4);
        if (m >= og) continue;
        float* yc = y + (gz * og + m) * plane;
        const float b = has_bias ? bias[gz * og + m] : 0.0f;
        #pragma unroll
        for (int j = 0; j < 8; j++) {
            if (yoff[j] < 0) continue;
            float* d = yc + yoff[j];
            const float v = beta == 0.0f ? acc[i][j] : fmaf(beta, *d, acc[i][j]);
            *d = has_bias ? v + b : v;
        }
    }
}

// Version 3 of the transpose pass (the convolution's data gradient, the deconvolution's
// forward): an implicit GEMM split into sub-pixel phases, with no column matrix, no zero
// taps and no col2im.
//   dx[n][g*cg + c][ih][iw] = ((accumulate ? dx : 0) + S) + bias[g*cg + c]   (bias optional)
//   S = sum over the taps (ki, kj) with ih + ph = oh*sh + ki, iw + pw = ow*sw + kj, in
//       col2im's order (ki, then kj, ascending), of P = sum over o of w[g*og + o][c][ki][kj]
//       * dy[n][g*og + o][oh][ow], in sgemm's order (o ascending, one fmaf chain per tap).
// That is the column path's arithmetic, value for value: sgemm makes P for every tap into
// the column matrix, col2im adds the taps, bias_add follows. So it gives the bits of
// sgemm + col2im (+ bias_add). The one difference is a tap that falls outside dy: col2im
// skips it and here it is a product with zeros (+0, which changes no sum), so only a weight
// that is inf or NaN could tell the two apart.
//
// Block (x, y, z = group * sh*sw + phase): the pixels of dx whose (ih + ph) mod sh and
// (iw + pw) mod sw are the phase (rh, rw) read exactly the taps ki = rh + t*sh, kj = rw + u*sw,
// t < ceil((kh - rh) / sh), from output row qh - t and column qw - u, where (qh, qw) is the
// pixel's place in its phase's grid shifted by the phase's first (qh0, qw0). So a phase is
// a dense GEMM per tap: C[c][col] = sum over o of Wt[o][c] * dy[o][col shifted by the tap],
// the columns being every image's pixels of the phase. The grid's x covers the largest
// phase; a block past its own phase's end returns at once.
// sgemm's tiling, as conv_forward_implicit: 64 x 64 tiles, K = o by 16 through
// double-buffered shared memory, 8 x 8 accumulators per thread. The stages run over (tap,
// o); when a tap's last stage is done its P is added into the running sums S, which live in
// shared memory (each thread's own 64 values: registers could not hold P and S both at 6
// CTAs per SM), and P starts again from 0. Wt is the weights by tap (conv_weights_by_tap),
// one og x cg matrix per (ki, kj) with the channels contiguous, so the weight tile loads
// whole rows of 64 channels as sgemm's do; thread t owns column t of the dy tile, splits its
// (n, qh, qw) once per block, and a tap moves it by a subtraction. No division in the loop.
// Every index fits in 32 bits (the host checks).

// wt[g][ki][kj][o][c] = w[g*og + o][c][ki][kj]: each tap's weights as one og x cg matrix.
extern "C" __global__ void conv_weights_by_tap(const float* __restrict__ w, float* __restrict__ wt, int outputs, int cg, int taps, int group)
{
    const int og = outputs / group, total = outputs * cg * taps;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        const int c = i % cg, t = i / cg, o = t % og, t2 = t / og, tap = t2 % taps, gz = t2 / taps;
        wt[i] = w[((gz * og + o) * cg + c) * taps + tap];
    }
}

// 16 rows (o0..o0+15) x 64 channels (m0..) of one tap's og x cg weight matrix, as sgemm
// loads a K x M operand: thread t takes 4 chunks of 4 channels, rows t/16 + 4i.
__device__ __forceinline__ void transpose_fetch_a(const float* mat, int og, int cg, int m0, int o0, bool vec, int tid, float4 (&v)[4]) {
    #pragma unroll
    for (int i = 0; i < 4; i++) {
        const int o = o0 + tid / 16 + 4 * i, c = m0 + (tid % 16) * 4;
        const float* q = mat + o * cg + c;
        if (vec && o < og && c + 3 < cg) v[i] = *reinterpret_cast<const float4*>(q);
        else {
            const bool row = o < og;
            v[i] = make_float4(row && c < cg ? q[0] : 0.0f, row && c + 1 < cg ? q[1] : 0.0f,
                               row && c + 2 < cg ? q[2] : 0.0f, row && c + 3 < cg ? q[3] : 0.0f);
        }
    }
}

// 16 values of thread t's column of dy for the tap (t, u) at (oh, ow) = (qa - t, qb - u),
// channels o0..o0+15 (0 outside dy, past og or past the last column).
__device__ __forceinline__ void transpose_fetch_b(const float* dyc, int qa, int qb, int t, int u, int o0, int og,
                                                  int out_h, int out_w, int out_plane, float (&v)[IG_K]) {
    const int oh = qa - t, ow = qb - u;
    const bool ok = (unsigned)oh < (unsigned)out_h && (unsigned)ow < (unsigned)out_w;
    const int off = ok ? oh * out_w + ow + o0 * out_plane : 0;
    #pragma unroll
    for (int i = 0; i < IG_K; i++) v[i] = ok && o0 + i < og ? dyc[off + i * out_plane] : 0.0f;
}

extern "C" __global__ void __launch_bounds__(IG_THREADS) conv_transpose_implicit(
    const float* __restrict__ dy, const float* __restrict__ wt, const float* __restrict__ bias, int has_bias,
    float* __restrict__ dx, int accumulate,
    int images, int channels, int in_h, int in_w, int outputs, int out_h, int out_w,
    int kh, int kw, int sh, int sw, int ph, int pw, int group)
{
    __shared__ __align__(16) float As[2][IG_K][IG_TILE + IG_PAD];
    __shared__ __align__(16) float Bs[2][IG_K][IG_TILE + IG_PAD];
    __shared__ float4 Ss[16][IG_THREADS];  // S: thread t's 8 x 8 sums in Ss[*][t]
    const int phases = sh * sw, gz = blockIdx.z / phases, phase = blockIdx.z - gz * phases;
    const int rh = phase / sw, rw = phase - rh * sw;
    const int cg = channels / group, og = outputs / group;
    // The phase's first row and column of dx, how many of each, and the columns in all.
    const int ih0 = ((rh - ph) % sh + sh) % sh, iw0 = ((rw - pw) % sw + sw) % sw;
    if (ih0 >= in_h || iw0 >= in_w) return;  // the whole block: the phase has no pixel
    const int rows = (in_h - ih0 + sh - 1) / sh, cols = (in_w - iw0 + sw - 1) / sw, pp = rows * cols;
    const int N = images * pp, m0 = blockIdx.y * IG_TILE, n0 = blockIdx.x * IG_TILE, tid = threadIdx.x;
    if (n0 >= N) return;  // the whole block: past this phase's columns
    const int qh0 = (ih0 + ph - rh) / sh, qw0 = (iw0 + pw - rw) / sw;
    const int taps_h = rh < kh ? (kh - rh + sh - 1) / sh : 0, taps_w = rw < kw ? (kw - rw + sw - 1) / sw : 0;
    const int chunks = (og + IG_K - 1) / IG_K, stages = taps_h * taps_w * chunks;
    const int out_plane = out_h * out_w, in_plane = in_h * in_w, tap_len = og * cg;

    const float* wg = wt + gz * kh * kw * tap_len;
    const bool a_vec = (cg & 3) == 0 && ((unsigned long long)wt & 15ull) == 0;
    // Thread t's column of dy: image n, the group's first channel, and (qh, qw) for tap 0.
    const float* dyc;
    int qa, qb;
    {
        const int c = n0 + tid;
        const int n = c < N ? c / pp : 0, r = c - n * pp, a = r / cols, b = r - a * cols;
        dyc = dy + (n * outputs + gz * og) * out_plane;
        qa = c < N ? qh0 + a : -(1 << 30);
        qb = qw0 + b;
    }

    const int tx = tid % 8, ty = tid / 8;
    float acc[8][8];
    #pragma unroll
    for (int i = 0; i < 8; i++)
        #pragma unroll
        for (int j = 0; j < 8; j++) acc[i][j] = 0.0f;
    #pragma unroll
    for (int q = 0; q < 16; q++) Ss[q][tid] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);

    // The next stage to fetch: tap (ft, fu), channels from fo.
    int ft = 0, fu = 0, fo = 0;
    float4 fa[4];
    float fb[IG_K];
    auto fetch = [&]() {
        transpose_fetch_a(wg + ((rh + ft * sh) * kw + rw + fu * sw) * tap_len, og, cg, m0, fo, a_vec, tid, fa);
        transpose_fetch_b(dyc, qa, qb, ft, fu, fo, og, out_h, out_w, out_plane, fb);
        fo += IG_K;
        if (fo >= og) { fo = 0; if (++fu == taps_w) { fu = 0; ft++; } }
    };
    auto store = [&](int to) {
        #pragma unroll
        for (int i = 0; i < 4; i++) *reinterpret_cast<float4*>(&As[to][tid / 16 + 4 * i][(tid % 16) * 4]) = fa[i];
        #pragma unroll
        for (int i = 0; i < IG_K; i++) Bs[to][i][tid] = fb[i];
    };
    if (stages > 0) { fetch(); store(0); }
    __syncthreads();

    int buf = 0, chunk = 0;
    for (int s = 0; s < stages; s++) {
        const bool more = s + 1 < stages;
        if (more) fetch();
        #pragma unroll
        for (int kk = 0; kk < IG_K; kk++) {
            float4 a0 = *reinterpret_cast<const float4*>(&As[buf][kk][ty * 4]);
            float4 a1 = *reinterpret_cast<const float4*>(&As[buf][kk][32 + ty * 4]);
            float4 b0 = *reinterpret_cast<const float4*>(&Bs[buf][kk][tx * 4]);
            float4 b1 = *reinterpret_cast<const float4*>(&Bs[buf][kk][32 + tx * 4]);
            float av[8] = { a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w };
            float bv[8] = { b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w };
            #pragma unroll
            for (int i = 0; i < 8; i++)
                #pragma unroll
                for (int j = 0; j < 8; j++) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
        }
        if (++chunk == chunks) {
            // The tap's P is complete: S += P, as col2im adds it, and P restarts from 0.
            chunk = 0;
            #pragma unroll
            for (int i = 0; i < 8; i++) {
                #pragma unroll
                for (int h = 0; h < 2; h++) {
                    float4 v = Ss[i * 2 + h][tid];
                    v.x += acc[i][h * 4]; v.y += acc[i][h * 4 + 1]; v.z += acc[i][h * 4 + 2]; v.w += acc[i][h * 4 + 3];
                    Ss[i * 2 + h][tid] = v;
                    #pragma unroll
                    for (int j = 0; j < 4; j++) acc[i][h * 4 + j] = 0.0f;
                }
            }
        }
        if (more) {
            // The other buffer was last read before the previous barrier: safe to fill.
            store(buf ^ 1);
            __syncthreads();
            buf ^= 1;
        }
    }

    // Column j's offset in dx without its channel (-1 past the end): split once here.
    int xoff[8];
    #pragma unroll
    for (int j = 0; j < 8; j++) {
        const int c = n0 + (j < 4 ? tx * 4 + j : 32 + tx * 4 + j - 4);
        const int n = c / pp, r = c - n * pp, a = r / cols, b = r - a * cols;
        xoff[j] = c < N ? n * channels * in_plane + (ih0 + a * sh) * in_w + iw0 + b * sw : -1;
    }
    #pragma unroll
    for (int i = 0; i < 8; i++) {
        const int m = m0 + (i < 4 ? ty * 4 + i : 32 + ty * 4 + i - 4);
        if (m >= cg) continue;
        float* xc = dx + (gz * cg + m) * in_plane;
        const float bv = has_bias ? bias[gz * cg + m] : 0.0f;
        const float4 s0 = Ss[i * 2][tid], s1 = Ss[i * 2 + 1][tid];
        const float sv[8] = { s0.x, s0.y, s0.z, s0.w, s1.x, s1.y, s1.z, s1.w };
        #pragma unroll
        for (int j = 0; j < 8; j++) {
            if (xoff[j] < 0) continue;
            float* d = xc + xoff[j];
            const float v = accumulate ? *d + sv[j] : sv[j];
            *d = has_bias ? v + bv : v;
        }
    }
}
