// ReLU and leaky ReLU (Caffe's negative_slope), and the ONNX activations below.

// y = x > 0 ? x : slope * x (strictly positive, as Caffe)
extern "C" __global__ void relu_forward(const float* __restrict__ x, float* __restrict__ y, long long n, float slope) {
    GRID_STRIDE(i, n) { float v = x[i]; y[i] = v > 0.0f ? v : slope * v; }
}

// dx += dy * (x > 0 ? 1 : slope)
extern "C" __global__ void relu_backward(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx, long long n, float slope) {
    GRID_STRIDE(i, n) { float g = dy[i]; dx[i] += x[i] > 0.0f ? g : slope * g; }
}

// The ONNX activations (src/ops/activation/cpu.rs has the same formulas and kink rules).

// y = 1 / (1 + exp(-x))
extern "C" __global__ void sigmoid_forward(const float* __restrict__ x, float* __restrict__ y, long long n) {
    GRID_STRIDE(i, n) { y[i] = 1.0f / (1.0f + expf(-x[i])); }
}

// dx += dy * y * (1 - y), from the output y
extern "C" __global__ void sigmoid_backward(const float* __restrict__ y, const float* __restrict__ dy, float* __restrict__ dx, long long n) {
    GRID_STRIDE(i, n) { float v = y[i]; dx[i] += dy[i] * (v * (1.0f - v)); }
}

// y = max(0, min(1, alpha * x + beta))
extern "C" __global__ void hard_sigmoid_forward(const float* __restrict__ x, float* __restrict__ y, long long n, float alpha, float beta) {
    GRID_STRIDE(i, n) { y[i] = fminf(fmaxf(alpha * x[i] + beta, 0.0f), 1.0f); }
}

// dx += dy * alpha strictly inside (0, 1)
extern "C" __global__ void hard_sigmoid_backward(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx, long long n, float alpha, float beta) {
    GRID_STRIDE(i, n) { float u = alpha * x[i] + beta; if (u > 0.0f && u < 1.0f) dx[i] += dy[i] * alpha; }
}

// y = x * clamp(x + 3, 0, 6) / 6
extern "C" __global__ void hard_swish_forward(const float* __restrict__ x, float* __restrict__ y, long long n) {
    GRID_STRIDE(i, n) { float v = x[i]; y[i] = v * fminf(fmaxf(v + 3.0f, 0.0f), 6.0f) / 6.0f; }
}

// dx += dy * (x < -3 ? 0 : x <= 3 ? x / 3 + 1/2 : 1)
extern "C" __global__ void hard_swish_backward(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx, long long n) {
    GRID_STRIDE(i, n) {
        float v = x[i];
        if (v >= -3.0f) dx[i] += v <= 3.0f ? dy[i] * (v / 3.0f + 0.5f) : dy[i];
    }
}

// y = min(max(x, lo), hi)
extern "C" __global__ void clip_forward(const float* __restrict__ x, float* __restrict__ y, long long n, float lo, float hi) {
    GRID_STRIDE(i, n) { y[i] = fminf(fmaxf(x[i], lo), hi); }
}

// dx += dy on [lo, hi] inclusive (Caffe's Clip)
extern "C" __global__ void clip_backward(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx, long long n, float lo, float hi) {
    GRID_STRIDE(i, n) { float v = x[i]; if (v >= lo && v <= hi) dx[i] += dy[i]; }
}

// y = erf(x)
extern "C" __global__ void erf_forward(const float* __restrict__ x, float* __restrict__ y, long long n) {
    GRID_STRIDE(i, n) { y[i] = erff(x[i]); }
}

// dx += dy * 2 / sqrt(pi) * exp(-x^2)
extern "C" __global__ void erf_backward(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx, long long n) {
    GRID_STRIDE(i, n) { float v = x[i]; dx[i] += dy[i] * (1.1283791670955126f * expf(-v * v)); }
}
