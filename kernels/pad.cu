// Constant padding of H and W, different on each side, a negative side a crop (src/ops/pad).

// y over [planes, oh, ow]: x's pixel at (r - top, c - left), else value
extern "C" __global__ void pad_forward(
    const float* __restrict__ x, float* __restrict__ y, long long n, int h, int w, int oh, int ow, int top, int left, float value)
{
    GRID_STRIDE(i, n) {
        const int c = (int)(i % ow) - left, r = (int)((i / ow) % oh) - top;
        const long long p = i / ((long long)ow * oh);
        y[i] = r >= 0 && r < h && c >= 0 && c < w ? x[(p * h + r) * w + c] : value;
    }
}

// dx over [planes, h, w] += dy at (r + top, c + left), where that lies inside dy
extern "C" __global__ void pad_backward(
    const float* __restrict__ dy, float* __restrict__ dx, long long n, int h, int w, int oh, int ow, int top, int left)
{
    GRID_STRIDE(i, n) {
        const int c = (int)(i % w) + left, r = (int)((i / w) % h) + top;
        const long long p = i / ((long long)w * h);
        if (r >= 0 && r < oh && c >= 0 && c < ow) dx[i] += dy[(p * oh + r) * ow + c];
    }
}
