// Eltwise MAX (SUM and PROD use elementwise.cu's axpby and mul_assign).

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
