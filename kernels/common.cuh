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


// ---------------------------------------------------------------------------------------
// Asynchronous copies global -> shared (cp.async, sm_80+) and warp-wide fragment loads
// from shared memory (ldmatrix), for the tensor-core kernels; emulated on the host
// (tools/kernel_emu/cuda_emu.h). Below sm_80, cp.async falls back to a plain copy (its
// waits then have nothing to wait for) and ldmatrix traps: no kernel using it is launched
// there.

// 16 bytes from gmem to smem (both 16-byte aligned); zeros instead when !pred (gmem is
// not read then, but must still be a valid address).
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool pred) {
#if defined(DGNAM_HOST_EMU)
    emu_cp_async(smem, gmem, 16, pred ? 16 : 0);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(s), "l"(gmem), "r"(pred ? 16 : 0) : "memory");
#else
    *reinterpret_cast<float4*>(smem) = pred ? *reinterpret_cast<const float4*>(gmem) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#endif
}

// The same for 4 bytes (4-byte aligned).
__device__ __forceinline__ void cp_async4(void* smem, const void* gmem, bool pred) {
#if defined(DGNAM_HOST_EMU)
    emu_cp_async(smem, gmem, 4, pred ? 4 : 0);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(s), "l"(gmem), "r"(pred ? 4 : 0) : "memory");
#else
    *reinterpret_cast<float*>(smem) = pred ? *reinterpret_cast<const float*>(gmem) : 0.0f;
#endif
}

// Closes this thread's copies issued since the last commit into one group.
__device__ __forceinline__ void cp_async_commit() {
#if defined(DGNAM_HOST_EMU)
    emu_cp_async_commit();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}

// Waits until at most N of this thread's groups are in flight. Other threads' copies are
// visible only after a __syncthreads that follows their own wait.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(DGNAM_HOST_EMU)
    emu_cp_async_wait(N);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}

// ldmatrix .m8n8 .b16, COUNT (1, 2 or 4) matrices: lane 8i + j gives the address of row j
// of matrix i (16 bytes, 16-byte aligned); lane l gets in r[i] row l / 4, b16 columns
// 2 (l % 4) and 2 (l % 4) + 1 of matrix i (with TRANS: column l / 4, rows 2 (l % 4), +1).
// Seen as 32-bit words, an untransposed 8 x 4 matrix of floats arrives as word l % 4 of
// row l / 4: the tf32 mma fragments of a k-contiguous tile.
template <int COUNT, bool TRANS>
__device__ __forceinline__ void ldmatrix(unsigned (&r)[COUNT], const void* row) {
#if defined(DGNAM_HOST_EMU)
    emu_ldmatrix(r, COUNT, TRANS, row);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned s = (unsigned)__cvta_generic_to_shared(row);
    if constexpr (COUNT == 4 && !TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s));
    else if constexpr (COUNT == 4)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s));
    else if constexpr (COUNT == 2 && !TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];" : "=r"(r[0]), "=r"(r[1]) : "r"(s));
    else if constexpr (COUNT == 2)
        asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];" : "=r"(r[0]), "=r"(r[1]) : "r"(s));
    else if constexpr (!TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];" : "=r"(r[0]) : "r"(s));
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];" : "=r"(r[0]) : "r"(s));
#else
    __trap();
#endif
}
