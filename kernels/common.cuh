// Helpers every kernel source can use: compiled in front of each kernels/*.cu (NVRTC) and
// included once before them by the host emulation (tools/kernel_emu).
#pragma once

#define GRID_STRIDE(i, n) \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); i += (long long)gridDim.x * blockDim.x)

// Block-wide reductions run with this many threads per block.
#define REDUCE_THREADS 256

// The sum over a block of one double per thread, partial sums by warp shuffles; every thread
// gets the result. `shared` holds 32 doubles.
__device__ double block_sum(double v, double* shared) {
    #pragma unroll
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < REDUCE_THREADS / 32 ? shared[lane] : 0.0;
        #pragma unroll
        for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) shared[0] = v;
    }
    __syncthreads();
    v = shared[0];
    __syncthreads();
    return v;
}

