// Per-channel and per-row reductions: one block per channel (or row), its threads striding
// over the elements, partial sums in double, a block-wide tree sum.

#define THREADS 256

__device__ double block_sum(double v, double* shared) {
    #pragma unroll
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < THREADS / 32 ? shared[lane] : 0.0;
        #pragma unroll
        for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) shared[0] = v;
    }
    __syncthreads();
    v = shared[0];
    __syncthreads();
    return v;
}

// Over [outer, channels, inner]: out[c] += sum of dy (x null flag: has_x = 0) or of dy * x.
extern "C" __global__ void __launch_bounds__(THREADS) channel_sums(
    const float* __restrict__ dy, const float* __restrict__ x, int has_x, float* __restrict__ out,
    int outer, int channels, int inner)
{
    __shared__ double shared[32];
    const int c = blockIdx.x;
    const long long count = (long long)outer * inner;
    double s = 0.0;
    for (long long e = threadIdx.x; e < count; e += THREADS) {
        const long long i = ((e / inner) * channels + c) * inner + e % inner;
        s += has_x ? (double)dy[i] * x[i] : (double)dy[i];
    }
    s = block_sum(s, shared);
    if (threadIdx.x == 0) out[c] += (float)s;
}

// BatchNorm's gradients with respect to the stored mean and variance (scale factor s fixed):
// with v = variance/s + eps, dmean += -sum(dy) / (s sqrt(v)),
// dvariance += -sum(dy * (x - mean/s)) / (2 s v^1.5).
extern "C" __global__ void __launch_bounds__(THREADS) batch_norm_backward_weights(
    const float* __restrict__ x, const float* __restrict__ dy, const float* __restrict__ mean,
    const float* __restrict__ variance, const float* __restrict__ factor, float* __restrict__ dmean,
    float* __restrict__ dvariance, int outer, int channels, int inner, float eps)
{
    __shared__ double shared[32];
    const int c = blockIdx.x;
    const double inv_s = factor[0] == 0.0f ? 0.0 : 1.0 / (double)factor[0];
    const double m = (double)mean[c] * inv_s;
    const long long count = (long long)outer * inner;
    double sum_dy = 0.0, sum_dy_xc = 0.0;
    for (long long e = threadIdx.x; e < count; e += THREADS) {
        const long long i = ((e / inner) * channels + c) * inner + e % inner;
        sum_dy += dy[i];
        sum_dy_xc += (double)dy[i] * ((double)x[i] - m);
    }
    sum_dy = block_sum(sum_dy, shared);
    sum_dy_xc = block_sum(sum_dy_xc, shared);
    if (threadIdx.x == 0) {
        const double v = (double)variance[c] * inv_s + (double)eps;
        dmean[c] += (float)(-sum_dy * inv_s / sqrt(v));
        dvariance[c] += (float)(-0.5 * sum_dy_xc * inv_s / (v * sqrt(v)));
    }
}

// out[r] = mean |x| of row r of a rows x cols matrix.
extern "C" __global__ void __launch_bounds__(THREADS) mean_abs_rows(const float* __restrict__ x, float* __restrict__ out, int cols)
{
    __shared__ double shared[32];
    const float* row = x + (long long)blockIdx.x * cols;
    double s = 0.0;
    for (int j = threadIdx.x; j < cols; j += THREADS) s += fabs((double)row[j]);
    s = block_sum(s, shared);
    if (threadIdx.x == 0) out[blockIdx.x] = (float)(s / cols);
}
