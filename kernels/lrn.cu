// Local response normalization, both Caffe regions (see src/ops/lrn.rs), one thread per
// element summing its window directly (local_size is small).
//   across channels: scale = k + alpha/n * sum_{|c'-c| <= half} x_c'^2
//   within channel:  scale = 1 + alpha/(n*n) * sum_{n x n window} x^2
//   y = x * scale^-beta
// backward: dx += dy * scale^-beta - 2*alpha*beta/N * x * sum_{q in window} dy_q*y_q/scale_q
// with N = n (across) or n*n (within). `within` selects the region; `add` and `mul` are the
// scale's constant and window-sum multiplier, `coef` the backward's 2*alpha*beta/N.

// Sum over the window around element i of f(j), j an element index of the same blob.
template <typename F>
__device__ __forceinline__ float window_sum(long long i, int channels, int h, int w, int half, int within, F f) {
    const int x = i % w, y = (i / w) % h;
    const int c = (i / ((long long)w * h)) % channels;
    float sum = 0.0f;
    if (!within) {
        const long long plane = (long long)h * w;
        const int c0 = max(c - half, 0), c1 = min(c + half, channels - 1);
        for (int cc = c0; cc <= c1; cc++) sum += f(i + (cc - c) * plane);
    } else {
        const int y0 = max(y - half, 0), y1 = min(y + half, h - 1);
        const int x0 = max(x - half, 0), x1 = min(x + half, w - 1);
        for (int yy = y0; yy <= y1; yy++)
            for (int xx = x0; xx <= x1; xx++) sum += f(i + (long long)(yy - y) * w + (xx - x));
    }
    return sum;
}

extern "C" __global__ void lrn_forward(
    const float* __restrict__ x, float* __restrict__ y, float* __restrict__ scale, long long total,
    int channels, int h, int w, int half, int within, float add, float mul, float beta)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
        const float sum = window_sum(i, channels, h, w, half, within, [&](long long j) { float v = x[j]; return v * v; });
        const float s = add + mul * sum;
        scale[i] = s;
        y[i] = x[i] * powf(s, -beta);
    }
}

extern "C" __global__ void lrn_backward(
    const float* __restrict__ x, const float* __restrict__ y, const float* __restrict__ scale,
    const float* __restrict__ dy, float* __restrict__ dx, long long total,
    int channels, int h, int w, int half, int within, float beta, float coef)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
        const float sum = window_sum(i, channels, h, w, half, within, [&](long long j) { return dy[j] * y[j] / scale[j]; });
        dx[i] += dy[i] * powf(scale[i], -beta) - coef * x[i] * sum;
    }
}
