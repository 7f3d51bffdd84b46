// Element-wise kernels: activations, sums and products of blobs, per-channel bias, Scale and
// BatchNorm (inference), crop, concat and Eltwise MAX. Blobs are viewed as
// [outer, channels, inner] where a per-channel parameter is involved.

#define GRID_STRIDE(i, n) \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); i += (long long)gridDim.x * blockDim.x)

// y = x > 0 ? x : slope * x (strictly positive, as Caffe)
extern "C" __global__ void relu_forward(const float* __restrict__ x, float* __restrict__ y, long long n, float slope) {
    GRID_STRIDE(i, n) { float v = x[i]; y[i] = v > 0.0f ? v : slope * v; }
}

// dx += dy * (x > 0 ? 1 : slope)
extern "C" __global__ void relu_backward(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx, long long n, float slope) {
    GRID_STRIDE(i, n) { float g = dy[i]; dx[i] += x[i] > 0.0f ? g : slope * g; }
}

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

// Concat along one axis: input viewed as [outer, block], output as [outer, row], the input's
// slice starting at `start` of each output row. backward = 1: part += whole's slice.
extern "C" __global__ void concat_copy(
    float* __restrict__ whole, float* __restrict__ part, long long n, long long block, long long row, long long start, int backward)
{
    GRID_STRIDE(i, n) {
        const long long o = i / block, j = o * row + start + i % block;
        if (backward) part[i] += whole[j]; else whole[j] = part[i];
    }
}

// Eltwise MAX, Caffe's loop: inputs 0 and 1 compare with `x0 > x1` (ties go to 1) ...
extern "C" __global__ void eltwise_max_first(
    const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ y, unsigned int* __restrict__ argmax, long long n)
{
    GRID_STRIDE(i, n) {
        const float va = a[i], vb = b[i];
        if (va > vb) { y[i] = va; argmax[i] = 0; } else { y[i] = vb; argmax[i] = 1; }
    }
}

// ... and each later input wins only when strictly greater.
extern "C" __global__ void eltwise_max_next(
    const float* __restrict__ x, float* __restrict__ y, unsigned int* __restrict__ argmax, long long n, unsigned int index)
{
    GRID_STRIDE(i, n) {
        const float v = x[i];
        if (v > y[i]) { y[i] = v; argmax[i] = index; }
    }
}

// dx += dy where input `index` won
extern "C" __global__ void eltwise_max_backward(
    const float* __restrict__ dy, const unsigned int* __restrict__ argmax, float* __restrict__ dx, long long n, unsigned int index)
{
    GRID_STRIDE(i, n) { if (argmax[i] == index) dx[i] += dy[i]; }
}
