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
