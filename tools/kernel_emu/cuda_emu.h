// Minimal host emulation of the CUDA features the kernels use: one std::thread per CUDA
// thread, blocks run one after another, __syncthreads as a block barrier, warp shuffles
// through a per-warp exchange buffer.
#pragma once
#include <barrier>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>
#include <functional>
#include <memory>
#include <algorithm>
using std::min; using std::max;
#define DGNAM_HOST_EMU 1
struct dim3 { unsigned x = 1, y = 1, z = 1; };
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __restrict__
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
struct alignas(16) float4 { float x, y, z, w; };
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
inline std::barrier<>* g_block_barrier;
inline std::vector<std::unique_ptr<std::barrier<>>> g_warp_barriers;
inline double g_warp_buf[64][32];
inline void __syncthreads() { g_block_barrier->arrive_and_wait(); }
template <typename T> T __shfl_xor_sync(unsigned, T v, int o) {
    int t = threadIdx.x, w = t / 32, l = t % 32;
    g_warp_buf[w][l] = (double)v;
    g_warp_barriers[w]->arrive_and_wait();
    T r = (T)g_warp_buf[w][l ^ o];
    g_warp_barriers[w]->arrive_and_wait();
    return r;
}
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline void __trap() { std::abort(); }
// cvt.rna.tf32.f32: keep 10 mantissa bits, round to nearest, ties away from zero.
inline float emu_to_tf32(float x) {
    unsigned u = __float_as_uint(x);
    if ((u & 0x7f800000u) == 0x7f800000u) return x;
    return __uint_as_float((u + 0x1000u) & ~0x1fffu);
}
// mma.sync m16n8k8 .tf32: the warp's fragments gathered through an exchange buffer.
inline float g_mma_buf[64][32][6];
inline void emu_mma_m16n8k8(float (&d)[4], const float (&a)[4], const float (&b)[2]) {
    int w = threadIdx.x / 32, l = threadIdx.x % 32, g = l / 4, t = l % 4;
    for (int i = 0; i < 4; i++) g_mma_buf[w][l][i] = a[i];
    g_mma_buf[w][l][4] = b[0];
    g_mma_buf[w][l][5] = b[1];
    g_warp_barriers[w]->arrive_and_wait();
    auto A = [&](int r, int k) { return (double)g_mma_buf[w][(r % 8) * 4 + k % 4][(r >= 8) + 2 * (k >= 4)]; };
    auto B = [&](int k, int n) { return (double)g_mma_buf[w][n * 4 + k % 4][4 + (k >= 4)]; };
    for (int e = 0; e < 4; e++) {
        int r = g + (e >= 2 ? 8 : 0), c = 2 * t + (e & 1);
        double s = 0;
        for (int k = 0; k < 8; k++) s += A(r, k) * B(k, c);
        d[e] = (float)(d[e] + s);
    }
    g_warp_barriers[w]->arrive_and_wait();
}
template <typename... A, typename... B>
void launch(void (*k)(A...), dim3 grid, dim3 block, B... args) {
    gridDim = grid; blockDim = block;
    unsigned nt = block.x * block.y * block.z;
    for (unsigned bz = 0; bz < grid.z; bz++) for (unsigned by = 0; by < grid.y; by++) for (unsigned bx = 0; bx < grid.x; bx++) {
        std::barrier<> bar(nt);
        g_block_barrier = &bar;
        g_warp_barriers.clear();
        for (unsigned w = 0; w < (nt + 31) / 32; w++) g_warp_barriers.emplace_back(new std::barrier<>(std::min(32u, nt - w * 32)));
        std::vector<std::thread> ts;
        for (unsigned t = 0; t < nt; t++) ts.emplace_back([&, t] { threadIdx = {t, 0, 0}; blockIdx = {bx, by, bz}; k(args...); });
        for (auto& th : ts) th.join();
    }
}
