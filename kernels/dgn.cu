// DGN-AM's own kernels: the center crop or bilinear resize between generator and classifier
// and the change of input space after it, the per-row gradient normalizer and the code update.

// The [dst_h, dst_w] window at (oy, ox) of every plane: dst = window of src (backward = 0),
// or src_grad[window] += dst_grad (backward = 1; then `big` is written and `small` read).
extern "C" __global__ void crop(
    float* __restrict__ big, float* __restrict__ small, long long n, int src_h, int src_w,
    int dst_h, int dst_w, int oy, int ox, int backward)
{
    GRID_STRIDE(i, n) {
        const int x = i % dst_w, y = (i / dst_w) % dst_h;
        const long long plane = i / ((long long)dst_w * dst_h);
        const long long j = (plane * src_h + y + oy) * src_w + x + ox;
        if (backward) big[j] += small[i]; else small[i] = big[j];
    }
}

// out[r] = mean |x| of row r of a rows x cols matrix.
extern "C" __global__ void __launch_bounds__(REDUCE_THREADS) mean_abs_rows(const float* __restrict__ x, float* __restrict__ out, int cols)
{
    __shared__ double shared[32];
    const float* row = x + (long long)blockIdx.x * cols;
    double s = 0.0;
    for (int j = threadIdx.x; j < cols; j += REDUCE_THREADS) s += fabs((double)row[j]);
    s = block_sum(s, shared);
    if (threadIdx.x == 0) out[blockIdx.x] = (float)(s / cols);
}

// DGN-AM's update of a rows x cols code on the device, per row r whose `active[r]` is set:
//   code += step[r] * grad; code = clamp(code, 0, upper[col]) (has_upper); code *= decay (decays)
// Inactive rows (their optimization has stopped) are left exactly as they are.
extern "C" __global__ void dgn_update(
    float* __restrict__ code, const float* __restrict__ grad, const float* __restrict__ step,
    const float* __restrict__ active, const float* __restrict__ upper, int has_upper,
    long long n, int cols, float decay, int decays)
{
    GRID_STRIDE(i, n) {
        const long long r = i / cols;
        if (active[r] == 0.0f) continue;
        float v = code[i] + step[r] * grad[i];
        if (has_upper) v = fminf(fmaxf(v, 0.0f), upper[i % cols]);
        code[i] = decays ? v * decay : v;
    }
}

// The bilinear taps of output coordinate `o` on an axis of `in` inputs resized by
// `ratio` = in / out (half-pixel centres, as torch's interpolate with align_corners=False):
// source coordinate max(0, (o + 0.5) * ratio - 0.5), inputs i0 and i1 = min(i0 + 1, in - 1),
// weight w1 on i1.
__device__ __forceinline__ int bilinear_tap(int o, int in, float ratio, float* w1)
{
    float s = ((float)o + 0.5f) * ratio - 0.5f;
    if (s < 0.0f) s = 0.0f;
    int lo = (int)s;
    if (lo > in - 1) lo = in - 1;
    *w1 = s - (float)lo;
    return lo;
}

// The weight output coordinate `o` gives input `i` on one axis (0 when it does not read it).
__device__ __forceinline__ float bilinear_weight(int o, int i, int in, float ratio)
{
    float w1;
    const int i0 = bilinear_tap(o, in, ratio, &w1), i1 = i0 < in - 1 ? i0 + 1 : i0;
    return (i0 == i ? 1.0f - w1 : 0.0f) + (i1 == i ? w1 : 0.0f);
}

// Bilinear resize of every [in_h, in_w] plane of `src` to [out_h, out_w]; n output values.
extern "C" __global__ void resize_bilinear(
    const float* __restrict__ src, float* __restrict__ dst, long long n, int in_h, int in_w, int out_h, int out_w)
{
    const float ry = (float)in_h / (float)out_h, rx = (float)in_w / (float)out_w;
    GRID_STRIDE(i, n) {
        const long long row = i / out_w, plane = row / out_h;
        const int x = (int)(i - row * out_w), y = (int)(row - plane * out_h);
        const float* p = src + plane * in_h * in_w;
        float wy, wx;
        const int y0 = bilinear_tap(y, in_h, ry, &wy), x0 = bilinear_tap(x, in_w, rx, &wx);
        const int y1 = y0 < in_h - 1 ? y0 + 1 : y0, x1 = x0 < in_w - 1 ? x0 + 1 : x0;
        const float top = (1.0f - wx) * p[y0 * in_w + x0] + wx * p[y0 * in_w + x1];
        const float bottom = (1.0f - wx) * p[y1 * in_w + x0] + wx * p[y1 * in_w + x1];
        dst[i] = (1.0f - wy) * top + wy * bottom;
    }
}

// The first and last output coordinates that can read input `i` of an axis resized by
// `inverse` = out / in, with a margin of one each side: the weights themselves decide.
__device__ __forceinline__ int first_reader(int i, float inverse)
{
    const int a = (int)floorf(((float)i - 0.5f) * inverse - 0.5f) - 1;
    return a < 0 ? 0 : a;
}
__device__ __forceinline__ int last_reader(int i, int out, float inverse)
{
    const int b = (int)ceilf(((float)i + 1.5f) * inverse - 0.5f) + 1;
    return b > out - 1 ? out - 1 : b;
}

// The resize's adjoint, one thread per input value (n of them): dx += sum over the outputs
// that read it of weight * dy. Gathered, so no two threads write the same value. 32-bit
// indices (the launcher checks n < 2^30): 64-bit division would spill at 8 CTAs per SM.
extern "C" __global__ void __launch_bounds__(256, 8) resize_bilinear_backward(
    const float* __restrict__ dy, float* __restrict__ dx, int n, int in_h, int in_w, int out_h, int out_w)
{
    const float ry = (float)in_h / (float)out_h, rx = (float)in_w / (float)out_w;
    const float sy = (float)out_h / (float)in_h, sx = (float)out_w / (float)in_w;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const int row = i / in_w, plane = row / in_h;
        const int x = i - row * in_w, y = row - plane * in_h;
        const float* g = dy + plane * out_h * out_w;
        const int ox0 = first_reader(x, sx), ox1 = last_reader(x, out_w, sx);
        float sum = 0.0f;
        #pragma unroll 1
        for (int oy = first_reader(y, sy), oy1 = last_reader(y, out_h, sy); oy <= oy1; oy++) {
            const float wy = bilinear_weight(oy, y, in_h, ry);
            if (wy == 0.0f) continue;
            float part = 0.0f;
            #pragma unroll 1
            for (int ox = ox0; ox <= ox1; ox++) part += bilinear_weight(ox, x, in_w, rx) * g[oy * out_w + ox];
            sum += wy * part;
        }
        dx[i] += sum;
    }
}

// A per-channel affine map with a channel permutation over [N, 3, plane] blobs (a change of
// input space: BGR minus the mean to torchvision's normalized RGB). Forward (backward = 0):
// y[n, c] = a_c * x[n, p_c] + b_c. Backward (backward = 1; x is then dx, y is dy):
// dx[n, p_c] += a_c * dy[n, c], each dx value written by one thread (p is a permutation).
extern "C" __global__ void channel_affine(
    float* __restrict__ x, float* __restrict__ y, int n, int plane,
    int p0, int p1, int p2, float a0, float a1, float a2, float b0, float b1, float b2, int backward)
{
    // 32-bit indices (the launcher checks n < 2^30). i = (sample * 3 + c) * plane + at, and
    // x's index has p_c in place of c.
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const int c = (i / plane) % 3;
        const int p = c == 0 ? p0 : c == 1 ? p1 : p2;
        const float a = c == 0 ? a0 : c == 1 ? a1 : a2;
        const int j = i + (p - c) * plane;
        if (backward) x[j] += a * y[i]; else y[i] = a * x[j] + (c == 0 ? b0 : c == 1 ? b1 : b2);
    }
}
