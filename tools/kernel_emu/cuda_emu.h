// Minimal host emulation of the CUDA features the kernels use. The threads of a block are
// fibers (ucontext) on one OS thread, run in thread order, each until its next barrier:
// __syncthreads is a block barrier and warp shuffles go through a per-warp exchange buffer
// between two warp barriers. Blocks run one after another. Being cooperative, it is
// deterministic, and a missing barrier shows as a thread reading shared memory that a
// later thread has not written yet; real GPU races (and misaligned vector loads) stay unseen.
#pragma once
#include <ucontext.h>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <functional>
#include <memory>
#include <algorithm>
#include <set>
#include <string>
#include <cstdio>
using std::min; using std::max;
#define DGNAM_HOST_EMU 1
struct dim3 { unsigned x = 1, y = 1, z = 1; };
inline dim3 threadIdx, blockIdx;  // those of the running fiber
inline dim3 blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
struct alignas(16) float4 { float x, y, z, w; };
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }

// Fiber switching: on x86-64 a plain swap of the callee-saved registers and the stack
// pointer (SysV ABI), elsewhere ucontext (slower: it saves the signal mask by a syscall).
void emu_fiber_start();
#if defined(__x86_64__)
extern "C" void emu_switch(void** save_sp, void* load_sp);
asm(".text\n.globl emu_switch\n.type emu_switch,@function\nemu_switch:\n"
    "pushq %rbp\npushq %rbx\npushq %r12\npushq %r13\npushq %r14\npushq %r15\n"
    "movq %rsp, (%rdi)\nmovq %rsi, %rsp\n"
    "popq %r15\npopq %r14\npopq %r13\npopq %r12\npopq %rbx\npopq %rbp\nret\n");
struct EmuContext { void* sp; };
inline void emu_swap(EmuContext& from, EmuContext& to) { emu_switch(&from.sp, to.sp); }
// A new context "returns" into emu_fiber_start with the stack aligned as after a call.
inline void emu_start(EmuContext& c, char* stack, size_t size) {
    auto top = (uintptr_t)(stack + size) & ~(uintptr_t)15;
    void** sp = (void**)(top - 64);
    std::memset(sp, 0, 64);
    sp[6] = (void*)&emu_fiber_start;
    c.sp = sp;
}
#else
struct EmuContext { ucontext_t uc; };
inline void emu_swap(EmuContext& from, EmuContext& to) { swapcontext(&from.uc, &to.uc); }
inline void emu_start(EmuContext& c, char* stack, size_t size) {
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = stack;
    c.uc.uc_stack.ss_size = size;
    c.uc.uc_link = nullptr;
    makecontext(&c.uc, emu_fiber_start, 0);
}
#endif
struct EmuFiber { EmuContext ctx; bool done; };
inline std::vector<EmuFiber> g_fibers;
inline std::vector<std::unique_ptr<char[]>> g_stacks;
inline EmuContext g_scheduler;
inline unsigned g_current;
inline std::function<void()> g_body;
constexpr size_t EMU_STACK = 256 << 10;
inline void emu_yield() { emu_swap(g_fibers[g_current].ctx, g_scheduler); }
// Waits until `n` fibers have arrived; the last one to arrive goes straight on.
struct EmuBarrier {
    unsigned n, count = 0, generation = 0;
    explicit EmuBarrier(unsigned n) : n(n) {}
    void arrive_and_wait() {
        unsigned g = generation;
        if (++count == n) { count = 0; generation++; return; }
        while (generation == g) emu_yield();
    }
};
inline std::unique_ptr<EmuBarrier> g_block_barrier;
inline std::vector<std::unique_ptr<EmuBarrier>> g_warp_barriers;
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
// cp.async: each thread queues its copies (the source read at issue, as the copy may be
// in flight while the thread goes on); commit_group closes the open copies into a group,
// and wait_group N lands every group but the N newest, oldest first. Nothing lands before
// its wait: a kernel that reads shared memory before the wait that covers it (or with no
// wait) reads stale data, and copies never waited on are dropped when the block ends.
// DGNAM_EMU_NO_CP_ASYNC_WAIT (a mutant, tests/cuda.rs) makes every wait a no-op.
struct EmuCopy { unsigned char* dst; unsigned char bytes[16]; int size; };
struct EmuCopyQueue { std::vector<EmuCopy> open; std::vector<std::vector<EmuCopy>> groups; };
inline std::vector<EmuCopyQueue> g_copies;  // per thread of the running block
// cp.async of `size` bytes (4, 8 or 16) of which the first `src_size` are read, the rest zeroed.
inline void emu_cp_async(void* dst, const void* src, int size, int src_size) {
    if ((uintptr_t)dst % size || (src_size > 0 && (uintptr_t)src % size)) { fprintf(stderr, "cp.async: misaligned %d-byte copy\n", size); std::abort(); }
    EmuCopy c{(unsigned char*)dst, {}, size};
    if (src_size > 0) std::memcpy(c.bytes, src, src_size);
    g_copies[threadIdx.x].open.push_back(c);
}
inline void emu_cp_async_commit() {
    auto& q = g_copies[threadIdx.x];
    q.groups.push_back(std::move(q.open));
    q.open.clear();
}
inline void emu_cp_async_wait(int n) {
#if !defined(DGNAM_EMU_NO_CP_ASYNC_WAIT)
    auto& q = g_copies[threadIdx.x];
    while ((int)q.groups.size() > n) {
        for (auto& c : q.groups.front()) std::memcpy(c.dst, c.bytes, c.size);
        q.groups.erase(q.groups.begin());
    }
#endif
}
// ldmatrix.sync.aligned.m8n8.x{1,2,4}[.trans].shared.b16: lanes 8i..8i+7 give the row
// addresses (16 bytes each) of matrix i; lane l receives in r[i] the two b16 elements of
// row l/4, columns 2(l%4) and 2(l%4)+1 of matrix i (low half first), or with .trans those
// of column l/4, rows 2(l%4) and 2(l%4)+1. The addresses go through an exchange buffer
// between two warp barriers, like the shuffles; lanes whose address is unused give none.
inline const void* g_ldmatrix_rows[64][32];
inline void emu_ldmatrix(unsigned* r, int count, bool trans, const void* row) {
    int w = threadIdx.x / 32, l = threadIdx.x % 32;
    g_ldmatrix_rows[w][l] = row;
    g_warp_barriers[w]->arrive_and_wait();
    auto element = [&](int m, int row_, int col) {
        const void* p = g_ldmatrix_rows[w][m * 8 + row_];
        if (!p || (uintptr_t)p % 16) { fprintf(stderr, "ldmatrix: lane %d's row address is missing or misaligned\n", m * 8 + row_); std::abort(); }
        uint16_t v; std::memcpy(&v, (const char*)p + 2 * col, 2);
        return (unsigned)v;
    };
    for (int m = 0; m < count; m++) {
        int a = l / 4, b = 2 * (l % 4);
        r[m] = trans ? element(m, b, a) | element(m, b + 1, a) << 16 : element(m, a, b) | element(m, a, b + 1) << 16;
    }
    g_warp_barriers[w]->arrive_and_wait();
}
// cvt.rn.bf16.f32: keep 7 mantissa bits, round to nearest, ties to even; NaN stays NaN.
inline unsigned short emu_to_bf16(float x) {
    unsigned u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40);
    return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}
inline float emu_bf16_value(unsigned short h) { return __uint_as_float((unsigned)h << 16); }
// mma.sync m16n8k16 .bf16 (f32 accumulation), fragments gathered like m16n8k8's: element
// k of a register pair is the low half for even k. A(r, k) is in lane (r % 8) * 4 + (k % 8) / 2,
// register (r >= 8) + 2 (k >= 8); B(k, n) in lane n * 4 + (k % 8) / 2, register (k >= 8).
inline unsigned g_mma16_buf[64][32][6];
inline void emu_mma_m16n8k16_bf16(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
    int w = threadIdx.x / 32, l = threadIdx.x % 32, g = l / 4, t = l % 4;
    for (int i = 0; i < 4; i++) g_mma16_buf[w][l][i] = a[i];
    g_mma16_buf[w][l][4] = b[0];
    g_mma16_buf[w][l][5] = b[1];
    g_warp_barriers[w]->arrive_and_wait();
    auto half = [](unsigned v, int k) { return (double)emu_bf16_value((unsigned short)(k % 2 ? v >> 16 : v & 0xffffu)); };
    auto A = [&](int r, int k) { return half(g_mma16_buf[w][(r % 8) * 4 + (k % 8) / 2][(r >= 8) + 2 * (k >= 8)], k); };
    auto B = [&](int k, int n) { return half(g_mma16_buf[w][n * 4 + (k % 8) / 2][4 + (k >= 8)], k); };
    for (int e = 0; e < 4; e++) {
        int r = g + (e >= 2 ? 8 : 0), c = 2 * t + (e & 1);
        double s = 0;
        for (int k = 0; k < 16; k++) s += A(r, k) * B(k, c);
        d[e] = (float)(d[e] + s);
    }
    g_warp_barriers[w]->arrive_and_wait();
}
// A fiber runs the kernel once, then hands back to the scheduler for good.
inline void emu_fiber_start() {
    g_body();
    g_fibers[g_current].done = true;
    emu_yield();
    std::abort();  // never resumed
}
// Runs every block in turn, each as blockDim fibers scheduled round robin until all return.
template <typename... A, typename... B>
void launch(void (*k)(A...), dim3 grid, dim3 block, B... args) {
    gridDim = grid; blockDim = block;
    unsigned nt = block.x * block.y * block.z;
    g_body = [&] { k(args...); };
    while (g_stacks.size() < nt) g_stacks.emplace_back(new char[EMU_STACK]);
    g_fibers.resize(nt);
    for (unsigned bz = 0; bz < grid.z; bz++) for (unsigned by = 0; by < grid.y; by++) for (unsigned bx = 0; bx < grid.x; bx++) {
        blockIdx = {bx, by, bz};
        g_block_barrier.reset(new EmuBarrier(nt));
        g_copies.assign(nt, {});
        g_warp_barriers.clear();
        for (unsigned w = 0; w < (nt + 31) / 32; w++) g_warp_barriers.emplace_back(new EmuBarrier(std::min(32u, nt - w * 32)));
        for (unsigned t = 0; t < nt; t++) {
            g_fibers[t].done = false;
            emu_start(g_fibers[t].ctx, g_stacks[t].get(), EMU_STACK);
        }
        for (unsigned left = nt; left > 0;) {
            left = 0;
            for (unsigned t = 0; t < nt; t++) {
                if (g_fibers[t].done) continue;
                g_current = t;
                threadIdx = {t, 0, 0};
                emu_swap(g_scheduler, g_fibers[t].ctx);
                left += !g_fibers[t].done;
            }
        }
    }
}
// Every launch goes through LAUNCH, which records the entry point's name: the harness
// prints the set at the end, and the test suite checks it against kernels/*.cu.
inline std::set<std::string> g_launched;
#define LAUNCH(kernel, ...) (g_launched.insert(#kernel), launch(kernel, __VA_ARGS__))
