// MAX and AVE pooling with Caffe's window rules (see src/ops/pool.rs): along each axis the
// window of output o starts at o*s - p and ends at min(start + k, size + p); the AVE divisor
// is that padded extent (at least 1), the real window is it clipped to the image; the
// `_exclude_pad` entry points (ONNX's count_include_pad 0) divide by the real window's area
// instead (at least 1). MAX ignores padding, the first maximum wins, and an empty window
// yields -FLT_MAX with no winner.

#define NO_ARGMAX 0xffffffffu

// `padded`: the window's share of the AVE divisor along one axis (with EXCLUDE_PAD, of the
// real window only).
struct Window { int start, end, padded; };

template <bool EXCLUDE_PAD = false>
__device__ __forceinline__ Window window(int o, int size, int k, int s, int p) {
    int start = o * s - p;
    int end = min(start + k, size + p);
    Window w;
    w.padded = max(end - start, 1);
    w.start = min(max(start, 0), size);
    w.end = max(min(end, size), w.start);
    if (EXCLUDE_PAD) w.padded = max(w.end - w.start, 1);
    return w;
}

// Outputs whose window may contain input coordinate i: o*s - p <= i < o*s - p + k.
__device__ __forceinline__ void candidates(int i, int k, int s, int p, int out, int* lo, int* hi) {
    *lo = (i + p < k) ? 0 : (i + p - k) / s + 1;
    *hi = min((i + p) / s + 1, out);
}

extern "C" __global__ void max_pool_forward(
    const float* __restrict__ x, float* __restrict__ y, unsigned int* __restrict__ argmax, int planes,
    int in_h, int in_w, int out_h, int out_w, int kh, int kw, int sh, int sw, int ph, int pw)
{
    const long long total = (long long)planes * out_h * out_w;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
        const int ow = i % out_w, oh = (i / out_w) % out_h;
        const long long plane = i / ((long long)out_w * out_h);
        const Window wh = window(oh, in_h, kh, sh, ph), ww = window(ow, in_w, kw, sw, pw);
        const float* xp = x + plane * in_h * in_w;
        float best = -3.402823466e+38f;
        unsigned int arg = NO_ARGMAX;
        for (int h = wh.start; h < wh.end; h++)
            for (int w = ww.start; w < ww.end; w++) {
                float v = xp[h * in_w + w];
                if (arg == NO_ARGMAX || v > best) { best = v; arg = h * in_w + w; }
            }
        y[i] = best;
        argmax[i] = arg;
    }
}

// dx[winner] += dy, gathered per input pixel (overlapping windows may share a winner).
extern "C" __global__ void max_pool_backward(
    const float* __restrict__ dy, const unsigned int* __restrict__ argmax, float* __restrict__ dx, int planes,
    int in_h, int in_w, int out_h, int out_w, int kh, int kw, int sh, int sw, int ph, int pw)
{
    const long long total = (long long)planes * in_h * in_w;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
        const int w = i % in_w, h = (i / in_w) % in_h;
        const long long plane = i / ((long long)in_w * in_h);
        const unsigned int me = h * in_w + w;
        int oh0, oh1, ow0, ow1;
        candidates(h, kh, sh, ph, out_h, &oh0, &oh1);
        candidates(w, kw, sw, pw, out_w, &ow0, &ow1);
        const long long base = plane * out_h * out_w;
        float sum = 0.0f;
        for (int oh = oh0; oh < oh1; oh++)
            for (int ow = ow0; ow < ow1; ow++) {
                const long long o = base + oh * out_w + ow;
                if (argmax[o] == me) sum += dy[o];
            }
        dx[i] += sum;
    }
}

#define AVE_POOL_ARGS int planes, int in_h, int in_w, int out_h, int out_w, int kh, int kw, int sh, int sw, int ph, int pw
#define AVE_POOL_PASS planes, in_h, in_w, out_h, out_w, kh, kw, sh, sw, ph, pw

template <bool EXCLUDE_PAD>
__device__ __forceinline__ void ave_pool_forward_body(const float* __restrict__ x, float* __restrict__ y, AVE_POOL_ARGS)
{
    const long long total = (long long)planes * out_h * out_w;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
        const int ow = i % out_w, oh = (i / out_w) % out_h;
        const long long plane = i / ((long long)out_w * out_h);
        const Window wh = window<EXCLUDE_PAD>(oh, in_h, kh, sh, ph), ww = window<EXCLUDE_PAD>(ow, in_w, kw, sw, pw);
        const float* xp = x + plane * in_h * in_w;
        float sum = 0.0f;
        for (int h = wh.start; h < wh.end; h++)
            for (int w = ww.start; w < ww.end; w++) sum += xp[h * in_w + w];
        y[i] = sum / (float)(wh.padded * ww.padded);
    }
}

extern "C" __global__ void ave_pool_forward(const float* __restrict__ x, float* __restrict__ y, AVE_POOL_ARGS)
{
    ave_pool_forward_body<false>(x, y, AVE_POOL_PASS);
}

extern "C" __global__ void ave_pool_forward_exclude_pad(const float* __restrict__ x, float* __restrict__ y, AVE_POOL_ARGS)
{
    ave_pool_forward_body<true>(x, y, AVE_POOL_PASS);
}

// dx[window] += dy / divisor, gathered per input pixel.
template <bool EXCLUDE_PAD>
__device__ __forceinline__ void ave_pool_backward_body(const float* __restrict__ dy, float* __restrict__ dx, AVE_POOL_ARGS)
{
    const long long total = (long long)planes * in_h * in_w;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
        const int w = i % in_w, h = (i / in_w) % in_h;
        const long long plane = i / ((long long)in_w * in_h);
        int oh0, oh1, ow0, ow1;
        candidates(h, kh, sh, ph, out_h, &oh0, &oh1);
        candidates(w, kw, sw, pw, out_w, &ow0, &ow1);
        const long long base = plane * out_h * out_w;
        float sum = 0.0f;
        for (int oh = oh0; oh < oh1; oh++) {
            const Window wh = window<EXCLUDE_PAD>(oh, in_h, kh, sh, ph);
            if (h < wh.start || h >= wh.end) continue;
            for (int ow = ow0; ow < ow1; ow++) {
                const Window ww = window<EXCLUDE_PAD>(ow, in_w, kw, sw, pw);
                if (w < ww.start || w >= ww.end) continue;
                sum += dy[base + oh * out_w + ow] / (float)(wh.padded * ww.padded);
            }
        }
        dx[i] += sum;
    }
}

extern "C" __global__ void ave_pool_backward(const float* __restrict__ dy, float* __restrict__ dx, AVE_POOL_ARGS)
{
    ave_pool_backward_body<false>(dy, dx, AVE_POOL_PASS);
}

extern "C" __global__ void ave_pool_backward_exclude_pad(const float* __restrict__ dy, float* __restrict__ dx, AVE_POOL_ARGS)
{
    ave_pool_backward_body<true>(dy, dx, AVE_POOL_PASS);
}
