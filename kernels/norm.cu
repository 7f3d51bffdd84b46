// Scale and BatchNorm (inference, Caffe's stored statistics): forward, data and parameter
// gradients. Blobs are viewed as [outer, channels, inner].

// Scale layer: y = x * gamma[c] (+ beta[c])
extern "C" __global__ void scale_forward(
    const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta, int has_beta,
    float* __restrict__ y, long long n, int channels, int inner)
{
    GRID_STRIDE(i, n) {
        const int c = (i / inner) % channels;
        y[i] = x[i] * gamma[c] + (has_beta ? beta[c] : 0.0f);
    }
}

// dx += dy * gamma[c]
extern "C" __global__ void scale_backward_data(
    const float* __restrict__ gamma, const float* __restrict__ dy, float* __restrict__ dx, long long n, int channels, int inner)
{
    GRID_STRIDE(i, n) { dx[i] += dy[i] * gamma[(i / inner) % channels]; }
}

// Caffe stores running sums and a scale factor s: statistics are blob / s, 1/s = 0 when s == 0.
__device__ __forceinline__ float inverse_scale_factor(const float* s) {
    return s[0] == 0.0f ? 0.0f : 1.0f / s[0];
}

// BatchNorm at inference: y = (x - mean/s) / sqrt(variance/s + eps)
extern "C" __global__ void batch_norm_forward(
    const float* __restrict__ x, const float* __restrict__ mean, const float* __restrict__ variance,
    const float* __restrict__ factor, float* __restrict__ y, long long n, int channels, int inner, float eps)
{
    const float inv_s = inverse_scale_factor(factor);
    GRID_STRIDE(i, n) {
        const int c = (i / inner) % channels;
        y[i] = (x[i] - mean[c] * inv_s) * (1.0f / sqrtf(variance[c] * inv_s + eps));
    }
}

// dx += dy / sqrt(variance/s + eps)
extern "C" __global__ void batch_norm_backward_data(
    const float* __restrict__ variance, const float* __restrict__ factor, const float* __restrict__ dy,
    float* __restrict__ dx, long long n, int channels, int inner, float eps)
{
    const float inv_s = inverse_scale_factor(factor);
    GRID_STRIDE(i, n) {
        const int c = (i / inner) % channels;
        dx[i] += dy[i] * (1.0f / sqrtf(variance[c] * inv_s + eps));
    }
}

// BatchNorm's gradients with respect to the stored mean and variance (scale factor s fixed):
// with v = variance/s + eps, dmean += -sum(dy) / (s sqrt(v)),
// dvariance += -sum(dy * (x - mean/s)) / (2 s v^1.5).
extern "C" __global__ void __launch_bounds__(REDUCE_THREADS) batch_norm_backward_weights(
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
    for (long long e = threadIdx.x; e < count; e += REDUCE_THREADS) {
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
