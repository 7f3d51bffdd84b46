// ReLU and leaky ReLU (Caffe's negative_slope).

// y = x > 0 ? x : slope * x (strictly positive, as Caffe)
extern "C" __global__ void relu_forward(const float* __restrict__ x, float* __restrict__ y, long long n, float slope) {
    GRID_STRIDE(i, n) { float v = x[i]; y[i] = v > 0.0f ? v : slope * v; }
}

// dx += dy * (x > 0 ? 1 : slope)
extern "C" __global__ void relu_backward(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx, long long n, float slope) {
    GRID_STRIDE(i, n) { float g = dy[i]; dx[i] += x[i] > 0.0f ? g : slope * g; }
}
