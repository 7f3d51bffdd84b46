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

// The bilinear taps of output coordinate `o` on an axis of `in` inputs resized to `out`
// (half-pixel centres, as torch's interpolate with align_corners=False): source coordinate
// max(0, (o + 0.5) * in / out - 0.5), inputs i0 and i1 = min(i0 + 1, in - 1), weight w1 on i1.
__device__ __forceinline__ void bilinear_tap(int o, int in, int out, int* i0, int* i1, float* w1)
{
    float s = ((float)o + 0.5f) * ((float)in / (float)out) - 0.5f;
    if (s < 0.0f) s = 0.0f;
    int lo = (int)s;
    if (lo > in - 1) lo = in - 1;
    *i0 = lo;
    *i1 = lo < in - 1 ? lo + 1 : lo;
    *w1 = s - (float)lo;
}

// The weight output coordinate `o` gives input `i` on one axis (0 when it does not read it).
__device__ __forceinline__ float bilinear_weight(int o, int i, int in, int out)
{
    int i0, i1;
    float w1;
    bilinear_tap(o, in, out, &i0, &i1, &w1);
    return (i0 == i ? 1.0f - w1 : 0.0f) + (i1 == i ? w1 : 0.0f);
}

// Bilinear resize of every [in_h, in_w] plane of `src` to [out_h, out_w]; n output values.
extern "C" __global__ void resize_bilinear(
    const float* __restrict__ src, float* __restrict__ dst, long long n, int in_h, int in_w, int out_h, int out_w)
{
    GRID_STRIDE(i, n) {
        const int x = i % out_w, y = (i / out_w) % out_h;
        const float* p = src + (i / ((long long)out_w * out_h)) * in_h * in_w;
        int y0, y1, x0, x1;
        float wy, wx;
        bilinear_tap(y, in_h, out_h, &y0, &y1, &wy);
        bilinear_tap(x, in_w, out_w, &x0, &x1, &wx);
        const float top = (1.0f - wx) * p[y0 * in_w + x0] + wx * p[y0 * in_w + x1];
        const float bottom = (1.0f - wx) * p[y1 * in_w + x0] + wx * p[y1 * in_w + x1];
        dst[i] = (1.0f - wy) * top + wy * bottom;
    }
}

// The output rows (or columns) that can read input `i` of an axis resized from `in` to
// `out`, with a margin of one each side: the weights themselves decide (bilinear_weight).
__device__ __forceinline__ void bilinear_readers(int i, int in, int out, int* first, int* last)
{
    const float scale = (float)out / (float)in;
    int a = (int)floorf(((float)i - 0.5f) * scale - 0.5f) - 1, b = (int)ceilf(((float)i + 1.5f) * scale - 0.5f) + 1;
    *first = a < 0 ? 0 : a;
    *last = b > out - 1 ? out - 1 : b;
}

// The resize's adjoint, one thread per input value (n of them): dx += sum over the outputs
// that read it of weight * dy. Gathered, so no two threads write the same value.
extern "C" __global__ void resize_bilinear_backward(
    const float* __restrict__ dy, float* __restrict__ dx, long long n, int in_h, int in_w, int out_h, int out_w)
{
    GRID_STRIDE(i, n) {
        const int x = i % in_w, y = (i / in_w) % in_h;
        const float* g = dy + (i / ((long long)in_w * in_h)) * out_h * out_w;
        int oy0, oy1, ox0, ox1;
        bilinear_readers(y, in_h, out_h, &oy0, &oy1);
        bilinear_readers(x, in_w, out_w, &ox0, &ox1);
        float sum = 0.0f;
        for (int oy = oy0; oy <= oy1; oy++) {
            const float wy = bilinear_weight(oy, y, in_h, out_h);
            if (wy == 0.0f) continue;
            float row = 0.0f;
            for (int ox = ox0; ox <= ox1; ox++) {
                const float wx = bilinear_weight(ox, x, in_w, out_w);
                if (wx != 0.0f) row += wx * g[oy * out_w + ox];
            }
            sum += wy * row;
        }
        dx[i] += sum;
    }
}

// A per-channel affine map with a channel permutation over [N, 3, plane] blobs (a change of
// input space: BGR minus the mean to torchvision's normalized RGB). Forward (backward = 0):
// y[n, c] = a_c * x[n, p_c] + b_c. Backward (backward = 1; x is then dx, y is dy):
// dx[n, p_c] += a_c * dy[n, c], each dx value written by one thread (p is a permutation).
extern "C" __global__ void channel_affine(
    float* __restrict__ x, float* __restrict__ y, long long n, long long plane,
    int p0, int p1, int p2, float a0, float a1, float a2, float b0, float b1, float b2, int backward)
{
    GRID_STRIDE(i, n) {
        const int c = (int)((i / plane) % 3);
        const long long sample = i / (3 * plane), at = i % plane;
        const int p = c == 0 ? p0 : c == 1 ? p1 : p2;
        const float a = c == 0 ? a0 : c == 1 ? a1 : a2, b = c == 0 ? b0 : c == 1 ? b1 : b2;
        const long long j = (sample * 3 + p) * plane + at;
        if (backward) x[j] += a * y[i]; else y[i] = a * x[j] + b;
    }
}
