// Softmax over the middle axis of [outer, channels, inner]: one block per (outer, inner)
// column, its threads striding over the channels, block-wide max and sum reductions.

#define THREADS 256

// Block-wide reduction of one value per thread; every thread gets the result.
template <bool IS_MAX>
__device__ float block_reduce(float v, float* shared) {
    #pragma unroll
    for (int o = 16; o > 0; o /= 2) {
        float other = __shfl_xor_sync(0xffffffffu, v, o);
        v = IS_MAX ? fmaxf(v, other) : v + other;
    }
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < THREADS / 32 ? shared[lane] : (IS_MAX ? -3.402823466e+38f : 0.0f);
        #pragma unroll
        for (int o = 16; o > 0; o /= 2) {
            float other = __shfl_xor_sync(0xffffffffu, v, o);
            v = IS_MAX ? fmaxf(v, other) : v + other;
        }
        if (lane == 0) shared[0] = v;
    }
    __syncthreads();
    v = shared[0];
    __syncthreads();  // shared is reused by the next reduction
    return v;
}

extern "C" __global__ void __launch_bounds__(THREADS) softmax_forward(
    const float* __restrict__ x, float* __restrict__ y, int channels, int inner)
{
    __shared__ float shared[32];
    const int o = blockIdx.x / inner, in = blockIdx.x % inner;
    const long long base = (long long)o * channels * inner + in;
    float m = -3.402823466e+38f;
    for (int c = threadIdx.x; c < channels; c += THREADS) m = fmaxf(m, x[base + (long long)c * inner]);
    m = block_reduce<true>(m, shared);
    float s = 0.0f;
    for (int c = threadIdx.x; c < channels; c += THREADS) {
        float e = expf(x[base + (long long)c * inner] - m);
        y[base + (long long)c * inner] = e;
        s += e;
    }
    s = block_reduce<false>(s, shared);
    const float inv = 1.0f / s;
    for (int c = threadIdx.x; c < channels; c += THREADS) y[base + (long long)c * inner] *= inv;
}

// dx_c += y_c * (dy_c - sum_c' dy_c' * y_c')
extern "C" __global__ void __launch_bounds__(THREADS) softmax_backward(
    const float* __restrict__ y, const float* __restrict__ dy, float* __restrict__ dx, int channels, int inner)
{
    __shared__ float shared[32];
    const int o = blockIdx.x / inner, in = blockIdx.x % inner;
    const long long base = (long long)o * channels * inner + in;
    float d = 0.0f;
    for (int c = threadIdx.x; c < channels; c += THREADS) {
        const long long j = base + (long long)c * inner;
        d += dy[j] * y[j];
    }
    d = block_reduce<false>(d, shared);
    for (int c = threadIdx.x; c < channels; c += THREADS) {
        const long long j = base + (long long)c * inner;
        dx[j] += y[j] * (dy[j] - d);
    }
}
