// Element-wise arithmetic on blobs: sums and products, per-channel bias and its gradient.
// Blobs are viewed as [outer, channels, inner] where a per-channel value is involved.

// y = a * x + b * y (b == 0 never reads y)
extern "C" __global__ void axpby(const float* __restrict__ x, float* __restrict__ y, long long n, float a, float b) {
    GRID_STRIDE(i, n) { y[i] = b == 0.0f ? a * x[i] : a * x[i] + b * y[i]; }
}

// y *= x
extern "C" __global__ void mul_assign(const float* __restrict__ x, float* __restrict__ y, long long n) {
    GRID_STRIDE(i, n) { y[i] *= x[i]; }
}

// y[o][c][p] += bias[c]
extern "C" __global__ void bias_add(float* __restrict__ y, const float* __restrict__ bias, long long n, int channels, int inner) {
    GRID_STRIDE(i, n) { y[i] += bias[(i / inner) % channels]; }
}

// Over [outer, channels, inner]: out[c] += sum of dy (x null flag: has_x = 0) or of dy * x.
extern "C" __global__ void __launch_bounds__(REDUCE_THREADS) channel_sums(
    const float* __restrict__ dy, const float* __restrict__ x, int has_x, float* __restrict__ out,
    int outer, int channels, int inner)
{
    __shared__ double shared[32];
    const int c = blockIdx.x;
    const long long count = (long long)outer * inner;
    double s = 0.0;
    for (long long e = threadIdx.x; e < count; e += REDUCE_THREADS) {
        const long long i = ((e / inner) * channels + c) * inner + e % inner;
        s += has_x ? (double)dy[i] * x[i] : (double)dy[i];
    }
    s = block_sum(s, shared);
    if (threadIdx.x == 0) out[c] += (float)s;
}
