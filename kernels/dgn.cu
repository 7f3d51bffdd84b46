// DGN-AM's own kernels: the center crop between generator and classifier, the per-row
// gradient normalizer and the code update.

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
