// Host check of kernels/*.cu: see run.sh. The cases come one per line from the file named
// as the first argument, or from stdin ('#' starts a comment):
//   gemm M N K trans_a trans_b batch zdiv extra_ld alpha beta kernel  (0 sgemm, 1 sgemm_tf32, 2 sgemm_tf32_2, 3 sgemm_bf16)
//   conv C H W O kh kw sh sw ph pw dh dw group N
//   pool planes H W kh kw sh sw ph pw exclude_pad
//   lrn N C H W local_size within
//   softmax outer channels inner
//   reduce outer channels inner        (channel_sums, batch_norm_backward_weights, mean_abs_rows)
//   elementwise outer channels inner   (relu, the activations, axpby, mul_assign, bias_add, scale, batch_norm, eltwise max)
//   dgn rows cols
//   crop N C H W crop_h crop_w oy ox
//   resize N C H W out_h out_w         (resize_bilinear and its backward)
//   affine N plane                     (channel_affine over N x 3 x plane, forward and backward)
//   concat outer inner c0 c1 ...
//   pad N C H W top left bottom right value
//   shuffle outer channels group inner
//   splitk M N splits ldc
//   emu_self_test                      (the emulation's cp.async and ldmatrix themselves)
// Each case launches its kernels with the arguments src/backend/cuda passes (grid-stride
// kernels on a few blocks, so each thread takes several turns) and checks every output
// against a double-precision reference written from Caffe's definitions. Backward kernels
// add into their gradients: each runs once from zeroed gradients and once from random ones.
// Kernels that overwrite run on NaN-filled outputs, which they must never read.
// Prints "ok"/"FAIL" per check, then "launched: <entry points>" and "<n> failures".
#include "cuda_emu.h"
#include <cstdarg>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include "../../kernels/common.cuh"
#include "../../kernels/gemm.cu"
#include "../../kernels/conv.cu"
#include "../../kernels/pool.cu"
#include "../../kernels/lrn.cu"
#include "../../kernels/softmax.cu"
#include "../../kernels/elementwise.cu"
#include "../../kernels/activation.cu"
#include "../../kernels/norm.cu"
#include "../../kernels/concat.cu"
#include "../../kernels/eltwise.cu"
#include "../../kernels/dgn.cu"
#include "../../kernels/pad.cu"
#include "../../kernels/shuffle.cu"

using Vf = std::vector<float>;
using Vd = std::vector<double>;
static std::mt19937 rng(1);
Vf rnd(size_t n) { std::uniform_real_distribution<float> d(-1, 1); Vf v(n); for (auto& x : v) x = d(rng); return v; }
Vf nans(size_t n) { return Vf(n, NAN); }
Vd absd(const Vf& v) { Vd m(v.size()); for (size_t i = 0; i < v.size(); i++) m[i] = std::fabs(v[i]); return m; }
Vd dbl(const Vf& v) { return Vd(v.begin(), v.end()); }
// Backward passes start from zeroed gradients, then from random ones (accumulation).
std::vector<Vf> starts(size_t n) { return {Vf(n, 0.0f), rnd(n)}; }
const char* start_name(const Vf& s) { return s.empty() || s[0] == 0.0f ? "from 0" : "from random"; }
dim3 d3(unsigned x, unsigned y = 1, unsigned z = 1) { dim3 d; d.x = x; d.y = y; d.z = z; return d; }
std::string fmt(const char* f, ...) { char b[300]; va_list a; va_start(a, f); vsnprintf(b, sizeof b, f, a); va_end(a); return b; }

// Per element: |got - want| <= RTOL * |want| + ATOL * mag, mag being the sum of the absolute
// values of the terms that make up want (the accumulator it was added to included). f32
// summation of K terms is off by at most K * 2^-24 * mag; the longest f32 sum here has
// K = 200 (1.2e-5 * mag), so ATOL = 2e-5 holds it without flakiness, yet any missing, extra
// or misplaced term larger than 2e-5 of its sum fails. RTOL = 1e-4 covers the few-ulp error of
// expf/powf/sqrtf and softmax's normalization. An element whose terms are all 0 (zeroed
// accumulators, pixels no window touches) must be exactly 0; NaN matches only NaN.
const double RTOL = 1e-4, ATOL = 2e-5;
int failures = 0;

void report(const std::string& what, size_t n, size_t bad, size_t worst, double got, double want, double tol, double ratio) {
    if (bad) { failures++; printf("FAIL %s: %zu of %zu differ; worst at %zu: got %.9g want %.9g (tolerance %.3g)\n", what.c_str(), bad, n, worst, got, want, tol); }
    else printf("ok   %s (worst error %.2g of tolerance, %zu values)\n", what.c_str(), ratio, n);
}

void check(const std::string& what, const Vf& got, const Vd& want, const Vd& mag) {
    if (got.size() != want.size() || mag.size() != want.size()) { failures++; printf("FAIL %s: %zu values, want %zu\n", what.c_str(), got.size(), want.size()); return; }
    size_t bad = 0, worst = 0; double worst_ratio = -1;
    for (size_t i = 0; i < want.size(); i++) {
        double g = got[i], w = want[i], tol = RTOL * std::fabs(w) + ATOL * mag[i], e = std::fabs(g - w), ratio;
        if (std::isnan(g) || std::isnan(w)) ratio = std::isnan(g) && std::isnan(w) ? 0 : INFINITY;
        else ratio = e == 0 ? 0 : tol == 0 ? INFINITY : e / tol;
        if (ratio > 1) bad++;
        if (ratio > worst_ratio) { worst_ratio = ratio; worst = i; }
    }
    report(what, want.size(), bad, worst, got[worst], want[worst], RTOL * std::fabs(want[worst]) + ATOL * mag[worst], worst_ratio);
}

// Element-wise results with no sum behind them.
void check(const std::string& what, const Vf& got, const Vd& want) {
    Vd mag(want.size());
    for (size_t i = 0; i < want.size(); i++) mag[i] = std::fabs(want[i]);
    check(what, got, want, mag);
}

// Copies and selections (crop, concat, max, winners): bit for bit (NaN matches NaN).
template <typename T> void check_exact(const std::string& what, const std::vector<T>& got, const std::vector<T>& want) {
    if (got.size() != want.size()) { failures++; printf("FAIL %s: %zu values, want %zu\n", what.c_str(), got.size(), want.size()); return; }
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < want.size(); i++)
        if (std::memcmp(&got[i], &want[i], sizeof(T)) != 0 && !(got[i] != got[i] && want[i] != want[i])) { if (!bad) first = i; bad++; }
    report(what, want.size(), bad, first, bad ? (double)got[first] : 0, bad ? (double)want[first] : 0, 0, 0);
}

void test_gemm(int M, int N, int K, int ta, int tb, int batch, int zdiv, int extra_ld, float alpha, float beta, int kernel) {
    const bool tf32 = kernel == 1 || kernel == 2, bf16 = kernel == 3;
    int lda = (ta ? M : K) + extra_ld, ldb = (tb ? K : N) + extra_ld, ldc = N + extra_ld;
    long long asz = (long long)(ta ? K : M) * lda, bsz = (long long)(tb ? N : K) * ldb, csz = (long long)M * ldc;
    // batch strides: z1 steps whole runs of zdiv matrices, z2 a matrix within a run
    long long a1 = asz * zdiv, a2 = asz, b1 = bsz * zdiv, b2 = bsz, c1 = csz * zdiv, c2 = csz;
    int nz1 = (batch + zdiv - 1) / zdiv;
    auto A = rnd(asz * zdiv * nz1 + 3), B = rnd(bsz * zdiv * nz1 + 3), C = rnd(csz * zdiv * nz1 + 3);
    if (beta == 0) C = nans(C.size());  // beta == 0 never reads C
    Vd want = dbl(C), mag = absd(C);
    for (int z = 0; z < batch; z++) {
        long long ao = (z / zdiv) * a1 + (z % zdiv) * a2, bo = (z / zdiv) * b1 + (z % zdiv) * b2, co = (z / zdiv) * c1 + (z % zdiv) * c2;
        for (int m = 0; m < M; m++) for (int n = 0; n < N; n++) {
            double s = 0, a = 0;
            for (int k = 0; k < K; k++) {
                float av = A[ao + (ta ? (long long)k * lda + m : (long long)m * lda + k)], bv = B[bo + (tb ? (long long)n * ldb + k : (long long)k * ldb + n)];
                double p = tf32 ? (double)emu_to_tf32(av) * emu_to_tf32(bv)
                         : bf16 ? (double)emu_bf16_value(emu_to_bf16(av)) * emu_bf16_value(emu_to_bf16(bv)) : (double)av * bv;
                s += p; a += std::fabs(p);
            }
            size_t i = co + (long long)m * ldc + n;
            mag[i] = std::fabs(alpha) * a + (beta == 0 ? 0 : std::fabs(beta * want[i]));
            want[i] = alpha * s + (beta == 0 ? 0 : beta * want[i]);
        }
    }
    Vf got = C;
    dim3 grid = d3((N + 63) / 64, (M + 63) / 64, batch), grid128 = d3((N + 127) / 128, (M + 127) / 128, batch);
    const char* name = kernel == 0 ? "sgemm" : kernel == 1 ? "sgemm_tf32" : kernel == 2 ? "sgemm_tf32_2" : "sgemm_bf16";
    auto pa = (const float*)A.data(), pb = (const float*)B.data();
    if (kernel == 0) LAUNCH(sgemm, grid, d3(64), M, N, K, alpha, pa, lda, ta, a1, a2, pb, ldb, tb, b1, b2, beta, got.data(), ldc, c1, c2, zdiv);
    else if (kernel == 1) LAUNCH(sgemm_tf32, grid, d3(128), M, N, K, alpha, pa, lda, ta, a1, a2, pb, ldb, tb, b1, b2, beta, got.data(), ldc, c1, c2, zdiv);
    else if (kernel == 2) LAUNCH(sgemm_tf32_2, grid128, d3(256), M, N, K, alpha, pa, lda, ta, a1, a2, pb, ldb, tb, b1, b2, beta, got.data(), ldc, c1, c2, zdiv);
    else if (kernel == 3) LAUNCH(sgemm_bf16, grid, d3(128), M, N, K, alpha, pa, lda, ta, a1, a2, pb, ldb, tb, b1, b2, beta, got.data(), ldc, c1, c2, zdiv);
    else { failures++; printf("FAIL gemm: no kernel %d\n", kernel); return; }
    check(fmt("%s M%d N%d K%d ta%d tb%d batch%d zdiv%d ld+%d a%g b%g", name, M, N, K, ta, tb, batch, zdiv, extra_ld, alpha, beta), got, want, mag);
}

// One f32 SGEMM launch as matmul.rs's launch_gemm makes it: C = alpha op(A) op(B) + beta C,
// with (stride over z / zdiv, stride over z % zdiv) per operand.
void gemm(int M, int N, int K, const float* A, int lda, int ta, long long a1, long long a2, const float* B, int ldb, int tb, long long b1, long long b2,
          float beta, float* C, int ldc, long long c1, long long c2, int batch, int zdiv) {
    LAUNCH(sgemm, d3((N + 63) / 64, (M + 63) / 64, batch), d3(64), M, N, K, 1.0f, A, lda, ta, a1, a2, B, ldb, tb, b1, b2, beta, C, ldc, c1, c2, zdiv);
}

void test_conv(int C, int H, int W, int O, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw, int group, int N) {
    int OH = (H + 2 * ph - (dh * (kh - 1) + 1)) / sh + 1, OW = (W + 2 * pw - (dw * (kw - 1) + 1)) / sw + 1;
    int cg = C / group, og = O / group, kk = cg * kh * kw, ohw = OH * OW;
    long long x_img = (long long)C * H * W, y_img = (long long)O * ohw, col_img = (long long)C * kh * kw * ohw;
    bool pointwise = kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0;  // matmul.rs: no im2col
    auto x = rnd(N * x_img), w = rnd((size_t)O * kk), dy = rnd(N * y_img), col_in = rnd(N * col_img);
    std::string g = fmt("C%d %dx%d O%d k%dx%d s%d,%d p%d,%d d%d,%d g%d N%d", C, H, W, O, kh, kw, sh, sw, ph, pw, dh, dw, group, N);
    // Caffe's convolution loops: y = conv(x), dx = conv^T(dy), dw = dy (x) x; and the column
    // matrix im2col makes, col2im's sums of it.
    Vd y(N * y_img, 0), ym(y.size(), 0), dx(N * x_img, 0), dxm(dx.size(), 0), dwr(w.size(), 0), dwm(w.size(), 0);
    Vd col(N * col_img, 0), im(N * x_img, 0), imm(im.size(), 0);
    for (int n = 0; n < N; n++) for (int o = 0; o < O; o++) for (int oh = 0; oh < OH; oh++) for (int ow = 0; ow < OW; ow++) {
        size_t yi = (((size_t)n * O + o) * OH + oh) * OW + ow;
        for (int c = 0; c < cg; c++) for (int ki = 0; ki < kh; ki++) for (int kj = 0; kj < kw; kj++) {
            int ih = oh * sh - ph + ki * dh, iw = ow * sw - pw + kj * dw;
            if (ih < 0 || iw < 0 || ih >= H || iw >= W) continue;
            size_t xi = (((size_t)n * C + (o / og) * cg + c) * H + ih) * W + iw, wi = ((o * cg + c) * kh + ki) * kw + kj;
            y[yi] += (double)x[xi] * w[wi]; ym[yi] += std::fabs((double)x[xi] * w[wi]);
            dx[xi] += (double)dy[yi] * w[wi]; dxm[xi] += std::fabs((double)dy[yi] * w[wi]);
            dwr[wi] += (double)dy[yi] * x[xi]; dwm[wi] += std::fabs((double)dy[yi] * x[xi]);
        }
    }
    for (int n = 0; n < N; n++) for (int c = 0; c < C; c++) for (int ki = 0; ki < kh; ki++) for (int kj = 0; kj < kw; kj++)
        for (int oh = 0; oh < OH; oh++) for (int ow = 0; ow < OW; ow++) {
            size_t ci = n * col_img + (((size_t)c * kh + ki) * kw + kj) * ohw + oh * OW + ow;
            int ih = oh * sh - ph + ki * dh, iw = ow * sw - pw + kj * dw;
            if (ih < 0 || iw < 0 || ih >= H || iw >= W) continue;
            size_t xi = (((size_t)n * C + c) * H + ih) * W + iw;
            col[ci] = x[xi];
            im[xi] += col_in[ci]; imm[xi] += std::fabs(col_in[ci]);
        }
    // im2col and col2im on their own (col2im: accumulate = 1 from 0 and from random, and
    // accumulate = 0, the deconvolution forward's path, over NaN).
    Vf gcol = nans(N * col_img);
    LAUNCH(im2col, d3(7), d3(256), (const float*)x.data(), gcol.data(), N, C, H, W, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw);
    check("im2col " + g, gcol, col);
    for (auto& s : starts(im.size())) {
        Vf got = s; Vd want = im, m = imm;
        for (size_t i = 0; i < s.size(); i++) { want[i] += s[i]; m[i] += std::fabs(s[i]); }
        LAUNCH(col2im, d3(5), d3(256), (const float*)col_in.data(), got.data(), N, 1, C, H, W, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw);
        check(std::string("col2im accumulate ") + start_name(s) + " " + g, got, want, m);
    }
    Vf over = nans(im.size());
    LAUNCH(col2im, d3(5), d3(256), (const float*)col_in.data(), over.data(), N, 0, C, H, W, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw);
    check("col2im overwrite " + g, over, im, imm);
    // Version 2 (dilation 1): the same bits as version 1, on two grids (several rows or
    // planes per block row, and positions per thread; one wide block).
    if (dh == 1 && dw == 1) {
        for (auto [grid, block] : {std::pair{d3(2, 3), d3(32)}, std::pair{d3(1, 2), d3(256)}}) {
            std::string v = fmt(" grid %ux%u block %u ", grid.x, grid.y, block.x) + g;
            Vf col2 = nans(N * col_img);
            LAUNCH(im2col2, grid, block, (const float*)x.data(), col2.data(), N, C, H, W, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw);
            check_exact("im2col2 = im2col" + v, col2, gcol);
            for (auto& s : starts(im.size())) {
                Vf one = s, two = s;
                LAUNCH(col2im, d3(5), d3(256), (const float*)col_in.data(), one.data(), N, 1, C, H, W, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw);
                LAUNCH(col2im2, grid, block, (const float*)col_in.data(), two.data(), N, 1, C, H, W, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw);
                check_exact(std::string("col2im2 = col2im accumulate ") + start_name(s) + v, two, one);
            }
            Vf over2 = nans(im.size());
            LAUNCH(col2im2, grid, block, (const float*)col_in.data(), over2.data(), N, 0, C, H, W, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw);
            check_exact("col2im2 = col2im overwrite" + v, over2, over);
        }
    }

    // The backend's three passes (matmul.rs: conv_apply, conv_transpose, conv_weight_grad),
    // one run of all N images.
    Vf cols(pointwise ? 0 : N * col_img);
    const float* B = x.data();
    long long b_img = x_img;
    if (!pointwise) {
        LAUNCH(im2col, d3(7), d3(256), (const float*)x.data(), cols.data(), N, C, H, W, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw);
        B = cols.data(); b_img = col_img;
    }
    Vf gy = nans(y.size());
    gemm(og, ohw, kk, w.data(), kk, 0, 0, (long long)og * kk, B, ohw, 0, b_img, (long long)kk * ohw, 0.0f, gy.data(), ohw, y_img, (long long)og * ohw, N * group, group);
    check("conv forward " + g, gy, y, ym);
    // Version 2 of the forward pass (conv_forward_implicit, the whole batch in one launch):
    // overwriting over NaN, which must give the bits of im2col + sgemm above (and with a
    // bias, those of bias_add after it), and adding into random values with beta 1 (the
    // deconvolution's backward-data).
    {
        dim3 grid = d3((N * ohw + 63) / 64, (og + 63) / 64, group);
        auto px = (const float*)x.data(), pw_ = (const float*)w.data();
        Vf got = nans(y.size());
        LAUNCH(conv_forward_implicit, grid, d3(64), px, pw_, pw_, 0, got.data(), 0.0f, N, C, H, W, O, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw, group);
        check("conv_forward_implicit " + g, got, y, ym);
        check_exact("conv_forward_implicit = im2col + sgemm " + g, got, gy);
        Vf bias = rnd(O), biased = nans(y.size()), want_bits = gy;
        for (size_t i = 0; i < gy.size(); i++) want_bits[i] = gy[i] + bias[(i / ohw) % O];
        LAUNCH(conv_forward_implicit, grid, d3(64), px, pw_, (const float*)bias.data(), 1, biased.data(), 0.0f, N, C, H, W, O, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw, group);
        check_exact("conv_forward_implicit with bias = im2col + sgemm + bias_add " + g, biased, want_bits);
        Vf sum = rnd(y.size());
        Vd want = y, m = ym;
        for (size_t i = 0; i < sum.size(); i++) { want[i] += sum[i]; m[i] += std::fabs(sum[i]); }
        LAUNCH(conv_forward_implicit, grid, d3(64), px, pw_, pw_, 0, sum.data(), 1.0f, N, C, H, W, O, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw, group);
        check("conv_forward_implicit accumulating " + g, sum, want, m);
    }
    // backward data: accumulate from 0 and from random, then overwrite (deconvolution forward)
    Vf column_start[3], column_bits[3];  // each pass's dx before and after, for version 2
    for (int pass = 0; pass < 3; pass++) {
        int accumulate = pass < 2;
        Vf got = pass == 0 ? Vf(dx.size(), 0.0f) : pass == 1 ? rnd(dx.size()) : nans(dx.size());
        column_start[pass] = got;
        Vd want = dx, m = dxm;
        if (accumulate) for (size_t i = 0; i < got.size(); i++) { want[i] += got[i]; m[i] += std::fabs(got[i]); }
        if (pointwise) {
            gemm(kk, ohw, og, w.data(), kk, 1, 0, (long long)og * kk, dy.data(), ohw, 0, y_img, (long long)og * ohw, accumulate ? 1.0f : 0.0f, got.data(), ohw, x_img, (long long)kk * ohw, N * group, group);
        } else {
            Vf c = nans(cols.size());
            gemm(kk, ohw, og, w.data(), kk, 1, 0, (long long)og * kk, dy.data(), ohw, 0, y_img, (long long)og * ohw, 0.0f, c.data(), ohw, col_img, (long long)kk * ohw, N * group, group);
            LAUNCH(col2im, d3(5), d3(256), (const float*)c.data(), got.data(), N, accumulate, C, H, W, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw);
        }
        check(std::string(pass == 0 ? "conv backward-data from 0 " : pass == 1 ? "conv backward-data from random " : "conv backward-data overwriting (deconv forward) ") + g, got, want, m);
        column_bits[pass] = got;
    }
    // Version 2 of the transpose pass (conv_transpose_implicit by sub-pixel phases, dilation
    // 1, after conv_weights_by_tap): each pass from the same start as the column path above,
    // which must give its bits (S summed tap by tap in col2im's order, each tap's sum over o
    // in sgemm's), and overwriting with a bias, the bits of the column path + bias_add.
    if (dh == 1 && dw == 1) {
        Vf wt = nans(w.size());
        LAUNCH(conv_weights_by_tap, d3(3), d3(64), (const float*)w.data(), wt.data(), O, cg, kh * kw, group);
        dim3 grid = d3((N * ((H + sh - 1) / sh) * ((W + sw - 1) / sw) + 63) / 64, (cg + 63) / 64, group * sh * sw);
        auto pdy = (const float*)dy.data(), pwt = (const float*)wt.data();
        for (int pass = 0; pass < 3; pass++) {
            int accumulate = pass < 2;
            Vf got = column_start[pass];
            Vd want = dx, m = dxm;
            if (accumulate) for (size_t i = 0; i < got.size(); i++) { want[i] += got[i]; m[i] += std::fabs(got[i]); }
            LAUNCH(conv_transpose_implicit, grid, d3(64), pdy, pwt, pwt, 0, got.data(), accumulate, N, C, H, W, O, OH, OW, kh, kw, sh, sw, ph, pw, group);
            std::string how = pass == 0 ? "from 0 " : pass == 1 ? "from random " : "overwriting ";
            check("conv_transpose_implicit " + how + g, got, want, m);
            check_exact("conv_transpose_implicit = sgemm + col2im " + how + g, got, column_bits[pass]);
        }
        Vf bias = rnd(C), biased = nans(dx.size()), want_bits = column_bits[2];
        for (size_t i = 0; i < want_bits.size(); i++) want_bits[i] = want_bits[i] + bias[(i / ((size_t)H * W)) % C];
        LAUNCH(conv_transpose_implicit, grid, d3(64), pdy, pwt, (const float*)bias.data(), 1, biased.data(), 0, N, C, H, W, O, OH, OW, kh, kw, sh, sw, ph, pw, group);
        check_exact("conv_transpose_implicit with bias = sgemm + col2im + bias_add " + g, biased, want_bits);
    }
    // The direct data gradient for narrow inputs (conv_transpose_narrow: group 1, dilation
    // 1, at most 3 channels), accumulating from 0 and from random and overwriting, on grids
    // whose blocks walk several items and on one with more threads than items.
    if (group == 1 && dh == 1 && dw == 1 && C <= 3) {
        for (auto [gx, block] : {std::pair{1u, 32u}, std::pair{3u, 64u}, std::pair{2u, 256u}}) {
            for (int pass = 0; pass < 3; pass++) {
                int accumulate = pass < 2;
                Vf got = pass == 0 ? Vf(dx.size(), 0.0f) : pass == 1 ? rnd(dx.size()) : nans(dx.size());
                Vd want = dx, m = dxm;
                if (accumulate) for (size_t i = 0; i < got.size(); i++) { want[i] += got[i]; m[i] += std::fabs(got[i]); }
                LAUNCH(conv_transpose_narrow, d3(gx, sh * sw, N), d3(block), (const float*)dy.data(), (const float*)w.data(), got.data(), accumulate, C, H, W, O, OH, OW, kh, kw, sh, sw, ph, pw);
                check(fmt("conv_transpose_narrow %s grid %u block %u ", accumulate ? (pass == 0 ? "from 0" : "from random") : "overwriting", gx, block) + g, got, want, m);
            }
        }
    }
    // backward weights: dW_g += dy_g col_g^T, image by image
    for (auto& s : starts(w.size())) {
        Vf got = s; Vd want = dwr, m = dwm;
        for (size_t i = 0; i < s.size(); i++) { want[i] += s[i]; m[i] += std::fabs(s[i]); }
        for (int n = 0; n < N; n++)
            gemm(og, kk, ohw, dy.data() + n * y_img, ohw, 0, 0, (long long)og * ohw, B + n * b_img, ohw, 1, 0, (long long)kk * ohw, 1.0f, got.data(), kk, 0, (long long)og * kk, group, group);
        check(std::string("conv backward-weights ") + start_name(s) + " " + g, got, want, m);
    }
}

// Caffe's pooling loops, written out as in pooling_layer.cpp.
void test_pool(int planes, int H, int W, int kh, int kw, int sh, int sw, int ph, int pw, int exclude) {
    auto outsz = [](int size, int k, int s, int p) { int o = (size + 2 * p - k + s - 1) / s + 1; if (p > 0 && (o - 1) * s >= size + p) o--; return o; };
    int OH = outsz(H, kh, sh, ph), OW = outsz(W, kw, sw, pw);
    auto x = rnd((size_t)planes * H * W), dy = rnd((size_t)planes * OH * OW);
    size_t ny = planes * OH * OW, nx = planes * H * W;
    Vd ymax(ny), yave(ny), yavem(ny), dxmax(nx, 0), dxmaxm(nx, 0), dxave(nx, 0), dxavem(nx, 0);
    std::vector<unsigned> amax(ny);
    for (int p = 0; p < planes; p++) for (int oh = 0; oh < OH; oh++) for (int ow = 0; ow < OW; ow++) {
        int hs = oh * sh - ph, ws = ow * sw - pw, he = std::min(hs + kh, H + ph), we = std::min(ws + kw, W + pw);
        int hs2 = std::max(hs, 0), ws2 = std::max(ws, 0), he2 = std::min(he, H), we2 = std::min(we, W);
        // exclude_pad (count_include_pad 0): the pixels inside the image only.
        int pool = exclude ? std::max((he2 - hs2) * (we2 - ws2), 1) : (he - hs) * (we - ws);
        double m = -3.402823466e+38; int arg = -1; double s = 0, a = 0;
        for (int h = hs2; h < he2; h++) for (int w = ws2; w < we2; w++) { double v = x[(p * H + h) * W + w]; if (v > m) { m = v; arg = h * W + w; } s += v; a += std::fabs(v); }
        int o = (p * OH + oh) * OW + ow;
        ymax[o] = m; yave[o] = s / pool; yavem[o] = a / pool; amax[o] = arg < 0 ? 0xffffffffu : arg;
        if (arg >= 0) { dxmax[p * H * W + arg] += dy[o]; dxmaxm[p * H * W + arg] += std::fabs(dy[o]); }
        for (int h = hs2; h < he2; h++) for (int w = ws2; w < we2; w++) { dxave[(p * H + h) * W + w] += dy[o] / pool; dxavem[(p * H + h) * W + w] += std::fabs(dy[o]) / pool; }
    }
    std::string g = fmt("pool %dx%d k%dx%d s%d,%d p%d,%d%s -> %dx%d", H, W, kh, kw, sh, sw, ph, pw, exclude ? " exclude_pad" : "", OH, OW);
    Vf y = nans(ny); std::vector<unsigned> am(ny, 0xdeadbeefu);
    LAUNCH(max_pool_forward, d3(3), d3(256), (const float*)x.data(), y.data(), am.data(), planes, H, W, OH, OW, kh, kw, sh, sw, ph, pw);
    Vf ymaxf(ymax.begin(), ymax.end());
    check_exact("max fwd " + g, y, ymaxf);
    check_exact("max winners " + g, am, amax);
    for (auto& s : starts(nx)) {
        Vf dx = s; Vd want = dxmax, m = dxmaxm;
        for (size_t i = 0; i < nx; i++) { want[i] += s[i]; m[i] += std::fabs(s[i]); }
        LAUNCH(max_pool_backward, d3(3), d3(256), (const float*)dy.data(), (const unsigned*)am.data(), dx.data(), planes, H, W, OH, OW, kh, kw, sh, sw, ph, pw);
        check(std::string("max bwd ") + start_name(s) + " " + g, dx, want, m);
    }
    y = nans(ny);
    if (exclude) LAUNCH(ave_pool_forward_exclude_pad, d3(3), d3(256), (const float*)x.data(), y.data(), planes, H, W, OH, OW, kh, kw, sh, sw, ph, pw);
    else LAUNCH(ave_pool_forward, d3(3), d3(256), (const float*)x.data(), y.data(), planes, H, W, OH, OW, kh, kw, sh, sw, ph, pw);
    check("ave fwd " + g, y, yave, yavem);
    for (auto& s : starts(nx)) {
        Vf dx = s; Vd want = dxave, m = dxavem;
        for (size_t i = 0; i < nx; i++) { want[i] += s[i]; m[i] += std::fabs(s[i]); }
        if (exclude) LAUNCH(ave_pool_backward_exclude_pad, d3(3), d3(256), (const float*)dy.data(), dx.data(), planes, H, W, OH, OW, kh, kw, sh, sw, ph, pw);
        else LAUNCH(ave_pool_backward, d3(3), d3(256), (const float*)dy.data(), dx.data(), planes, H, W, OH, OW, kh, kw, sh, sw, ph, pw);
        check(std::string("ave bwd ") + start_name(s) + " " + g, dx, want, m);
    }
}

void test_lrn(int N, int C, int H, int W, int size, int within) {
    float alpha = 0.7f, beta = 0.75f, k = 2.0f;
    int half = (size - 1) / 2; double nn = within ? size * size : size;
    // layers.rs lrn_constants, as f32
    float add = within ? 1.0f : k, mul = (float)(alpha / nn), coef = (float)(2 * alpha * beta / nn);
    size_t total = (size_t)N * C * H * W;
    auto x = rnd(total), dy = rnd(total);
    auto at = [&](int n, int c, int h, int w) { return (((size_t)n * C + c) * H + h) * W + w; };
    Vd scale(total), y(total), dx(total), dxm(total);
    auto win = [&](int n, int c, int h, int w, auto f) { double s = 0;
        if (!within) { for (int cc = c - half; cc <= c + half; cc++) if (cc >= 0 && cc < C) s += f(at(n, cc, h, w)); }
        else for (int hh = h - half; hh <= h + half; hh++) for (int ww = w - half; ww <= w + half; ww++) if (hh >= 0 && hh < H && ww >= 0 && ww < W) s += f(at(n, c, hh, ww));
        return s; };
    for (int n = 0; n < N; n++) for (int c = 0; c < C; c++) for (int h = 0; h < H; h++) for (int w = 0; w < W; w++) {
        size_t i = at(n, c, h, w);
        scale[i] = add + mul * win(n, c, h, w, [&](size_t j) { return (double)x[j] * x[j]; });
        y[i] = x[i] * std::pow(scale[i], -beta);
    }
    for (int n = 0; n < N; n++) for (int c = 0; c < C; c++) for (int h = 0; h < H; h++) for (int w = 0; w < W; w++) {
        size_t i = at(n, c, h, w);
        double s = win(n, c, h, w, [&](size_t j) { return dy[j] * y[j] / scale[j]; }), sa = win(n, c, h, w, [&](size_t j) { return std::fabs(dy[j] * y[j] / scale[j]); });
        dx[i] = dy[i] * std::pow(scale[i], -beta) - coef * x[i] * s;
        dxm[i] = std::fabs(dy[i] * std::pow(scale[i], -beta)) + coef * std::fabs(x[i]) * sa;
    }
    std::string g = fmt("lrn %s N%d C%d %dx%d size %d", within ? "within" : "across", N, C, H, W, size);
    Vf gy = nans(total), gs = nans(total);
    LAUNCH(lrn_forward, d3(4), d3(256), (const float*)x.data(), gy.data(), gs.data(), (long long)total, C, H, W, half, within, add, mul, beta);
    check(g + " fwd", gy, y);
    check(g + " scale", gs, scale);
    for (auto& s : starts(total)) {
        Vf got = s; Vd want = dx, m = dxm;
        for (size_t i = 0; i < total; i++) { want[i] += s[i]; m[i] += std::fabs(s[i]); }
        LAUNCH(lrn_backward, d3(4), d3(256), (const float*)x.data(), (const float*)gy.data(), (const float*)gs.data(), (const float*)dy.data(), got.data(), (long long)total, C, H, W, half, within, beta, coef);
        check(g + " bwd " + start_name(s), got, want, m);
    }
}

void test_softmax(int outer, int channels, int inner) {
    auto x = rnd((size_t)outer * channels * inner), dy = rnd(x.size());
    for (auto& v : x) v *= 10;
    Vd y(x.size()), dx(x.size()), dxm(x.size());
    for (int o = 0; o < outer; o++) for (int i = 0; i < inner; i++) {
        auto at = [&](int c) { return ((size_t)o * channels + c) * inner + i; };
        double m = -1e30, s = 0, d = 0, da = 0;
        for (int c = 0; c < channels; c++) m = std::max(m, (double)x[at(c)]);
        for (int c = 0; c < channels; c++) s += std::exp(x[at(c)] - m);
        for (int c = 0; c < channels; c++) { y[at(c)] = std::exp(x[at(c)] - m) / s; d += dy[at(c)] * y[at(c)]; da += std::fabs(dy[at(c)] * y[at(c)]); }
        for (int c = 0; c < channels; c++) { dx[at(c)] = y[at(c)] * (dy[at(c)] - d); dxm[at(c)] = y[at(c)] * (std::fabs(dy[at(c)]) + da); }
    }
    std::string g = fmt("softmax %dx%dx%d", outer, channels, inner);
    Vf gy = nans(x.size());
    LAUNCH(softmax_forward, d3(outer * inner), d3(256), (const float*)x.data(), gy.data(), channels, inner);
    check(g + " fwd", gy, y);
    for (auto& s : starts(x.size())) {
        Vf got = s; Vd want = dx, m = dxm;
        for (size_t i = 0; i < s.size(); i++) { want[i] += s[i]; m[i] += std::fabs(s[i]); }
        LAUNCH(softmax_backward, d3(outer * inner), d3(256), (const float*)gy.data(), (const float*)dy.data(), got.data(), channels, inner);
        check(g + " bwd " + start_name(s), got, want, m);
    }
}

void test_reduce(int outer, int channels, int inner) {
    auto dy = rnd((size_t)outer * channels * inner), x = rnd(dy.size()), mean = rnd(channels), var = rnd(channels);
    for (auto& v : var) v = std::fabs(v) + 0.5f;
    std::string g = fmt("%dx%dx%d", outer, channels, inner);
    Vd s1(channels, 0), s1m(channels, 0), s2(channels, 0), s2m(channels, 0);
    for (int o = 0; o < outer; o++) for (int c = 0; c < channels; c++) for (int i = 0; i < inner; i++) {
        size_t j = ((size_t)o * channels + c) * inner + i;
        s1[c] += dy[j]; s1m[c] += std::fabs(dy[j]); s2[c] += (double)dy[j] * x[j]; s2m[c] += std::fabs((double)dy[j] * x[j]);
    }
    for (auto& s : starts(channels)) {
        Vf g1 = s, g2 = s; Vd w1 = s1, m1 = s1m, w2 = s2, m2 = s2m;
        for (int c = 0; c < channels; c++) { w1[c] += s[c]; w2[c] += s[c]; m1[c] += std::fabs(s[c]); m2[c] += std::fabs(s[c]); }
        // layers.rs channel_sums: without x, dy is passed in its place
        LAUNCH(channel_sums, d3(channels), d3(256), (const float*)dy.data(), (const float*)dy.data(), 0, g1.data(), outer, channels, inner);
        LAUNCH(channel_sums, d3(channels), d3(256), (const float*)dy.data(), (const float*)x.data(), 1, g2.data(), outer, channels, inner);
        check("channel sums " + g + " " + start_name(s), g1, w1, m1);
        check("channel dot " + g + " " + start_name(s), g2, w2, m2);
    }
    for (float f : {0.9f, 0.0f}) {
        double inv_s = f == 0 ? 0 : 1.0 / f;
        Vd dm(channels, 0), dmm(channels, 0), dv(channels, 0), dvm(channels, 0);
        for (int o = 0; o < outer; o++) for (int c = 0; c < channels; c++) for (int i = 0; i < inner; i++) {
            size_t j = ((size_t)o * channels + c) * inner + i;
            double v = var[c] * inv_s + 1e-5f, t = -dy[j] * inv_s / std::sqrt(v), u = -0.5 * dy[j] * (x[j] - mean[c] * inv_s) * inv_s / (v * std::sqrt(v));
            dm[c] += t; dmm[c] += std::fabs(t); dv[c] += u; dvm[c] += std::fabs(u);
        }
        std::vector<float> factor = {f};
        for (auto& s : starts(channels)) {
            Vf gm = s, gv = s; Vd wm = dm, mm = dmm, wv = dv, mv = dvm;
            for (int c = 0; c < channels; c++) { wm[c] += s[c]; wv[c] += s[c]; mm[c] += std::fabs(s[c]); mv[c] += std::fabs(s[c]); }
            LAUNCH(batch_norm_backward_weights, d3(channels), d3(256), (const float*)x.data(), (const float*)dy.data(), (const float*)mean.data(), (const float*)var.data(), (const float*)factor.data(), gm.data(), gv.data(), outer, channels, inner, 1e-5f);
            check(fmt("bn dmean %s factor %g ", g.c_str(), f) + start_name(s), gm, wm, mm);
            check(fmt("bn dvariance %s factor %g ", g.c_str(), f) + start_name(s), gv, wv, mv);
        }
    }
    int rows = outer, cols = channels * inner;
    Vd mar(rows); Vf gmar = nans(rows);
    for (int r = 0; r < rows; r++) { double s = 0; for (int c = 0; c < cols; c++) s += std::fabs(dy[(size_t)r * cols + c]); mar[r] = s / cols; }
    LAUNCH(mean_abs_rows, d3(rows), d3(256), (const float*)dy.data(), gmar.data(), cols);
    check("mean_abs_rows " + g, gmar, mar);
}

// The kernels of elementwise.cu other than crop and concat, over [outer, channels, inner].
void test_elementwise(int outer, int channels, int inner) {
    long long n = (long long)outer * channels * inner;
    auto x = rnd(n), x2 = rnd(n), x3 = rnd(n), dy = rnd(n), gamma = rnd(channels), beta = rnd(channels), mean = rnd(channels), var = rnd(channels);
    for (auto& v : var) v = std::fabs(v) + 0.5f;
    for (long long i = 0; i < n; i += 7) x[i] = 0.0f;         // ReLU: x > 0 strictly
    for (long long i = 0; i < n; i += 5) x2[i] = x[i];        // Eltwise MAX ties: input 1 wins
    for (long long i = 0; i < n; i += 6) x3[i] = std::max(x[i], x2[i]);  // a later input wins only when greater
    auto ch = [&](long long i) { return (int)((i / inner) % channels); };
    std::string g = fmt("%dx%dx%d", outer, channels, inner);
    dim3 grid = d3(3), block = d3(256);
    for (float slope : {0.0f, 0.3f}) {
        Vf y = nans(n); Vf want(n);
        for (long long i = 0; i < n; i++) want[i] = x[i] > 0 ? x[i] : slope * x[i];
        LAUNCH(relu_forward, grid, block, (const float*)x.data(), y.data(), n, slope);
        check_exact(fmt("relu fwd slope %g %s", slope, g.c_str()), y, want);
        for (auto& s : starts(n)) {
            Vf dx = s; Vd w(n), m(n);
            for (long long i = 0; i < n; i++) { double d = x[i] > 0 ? dy[i] : slope * dy[i]; w[i] = s[i] + d; m[i] = std::fabs(s[i]) + std::fabs(d); }
            LAUNCH(relu_backward, grid, block, (const float*)x.data(), (const float*)dy.data(), dx.data(), n, slope);
            check(fmt("relu bwd slope %g %s ", slope, g.c_str()) + start_name(s), dx, w, m);
        }
    }
    // The ONNX activations on inputs spread over (-8, 8), with every kink hit exactly (the
    // kink rules of src/ops/activation/cpu.rs: HardSigmoid strictly inside (0, 1), HardSwish
    // x / 3 + 1/2 on [-3, 3], Clip [lo, hi] inclusive).
    {
        Vf w8(n);
        const float kinks[] = {-3.0f, 3.0f, -2.0f, 2.0f, 0.0f, 6.0f, -0.5f};
        for (long long i = 0; i < n; i++) w8[i] = i % 5 == 0 ? kinks[(i / 5) % 7] : 8.0f * x[i];
        auto fwd = [&](const char* name, auto launch, auto f) {
            Vf y = nans(n); Vd w(n);
            for (long long i = 0; i < n; i++) w[i] = f((double)w8[i]);
            launch(y);
            check(fmt("%s fwd %s", name, g.c_str()), y, w);
        };
        // `size(i)`: the magnitude of the terms the slope is computed from, which bounds its
        // f32 rounding (HardSwish's x / 3 + 1/2 cancels near x = -1.5); |slope| by default.
        auto bwd_sized = [&](const char* name, auto launch, auto slope, auto size) {
            for (auto& s : starts(n)) {
                Vf dx = s; Vd w(n), m(n);
                for (long long i = 0; i < n; i++) { double d = dy[i] * slope(i); w[i] = s[i] + d; m[i] = std::fabs(s[i]) + std::fabs(dy[i] * size(i)); }
                launch(dx);
                check(fmt("%s bwd %s ", name, g.c_str()) + start_name(s), dx, w, m);
            }
        };
        auto bwd = [&](const char* name, auto launch, auto slope) { bwd_sized(name, launch, slope, [&](long long i) { return std::fabs(slope(i)); }); };
        const float* xs = w8.data();
        auto sig = [](double v) { return 1.0 / (1.0 + std::exp(-v)); };
        fwd("sigmoid", [&](Vf& y) { LAUNCH(sigmoid_forward, grid, block, xs, y.data(), n); }, sig);
        Vf sy(n);
        for (long long i = 0; i < n; i++) sy[i] = (float)sig(w8[i]);
        bwd("sigmoid", [&](Vf& dx) { LAUNCH(sigmoid_backward, grid, block, (const float*)sy.data(), (const float*)dy.data(), dx.data(), n); },
            [&](long long i) { return (double)sy[i] * (1.0 - sy[i]); });
        for (auto [alpha, beta] : {std::pair{0.25f, 0.5f}, std::pair{0.2f, 0.5f}}) {
            auto u = [&](long long i) { return (double)(alpha * w8[i] + beta); };  // the kernel's f32 argument, so ties land alike
            std::string nm = fmt("hard_sigmoid alpha %g beta %g", alpha, beta);
            Vf y = nans(n); Vd w(n);
            for (long long i = 0; i < n; i++) w[i] = std::min(std::max(u(i), 0.0), 1.0);
            LAUNCH(hard_sigmoid_forward, grid, block, xs, y.data(), n, alpha, beta);
            check(nm + " fwd " + g, y, w);
            bwd(nm.c_str(), [&](Vf& dx) { LAUNCH(hard_sigmoid_backward, grid, block, xs, (const float*)dy.data(), dx.data(), n, alpha, beta); },
                [&](long long i) { return u(i) > 0 && u(i) < 1 ? (double)alpha : 0.0; });
        }
        fwd("hard_swish", [&](Vf& y) { LAUNCH(hard_swish_forward, grid, block, xs, y.data(), n); },
            [](double v) { return v * std::min(std::max(v + 3.0, 0.0), 6.0) / 6.0; });
        bwd_sized("hard_swish", [&](Vf& dx) { LAUNCH(hard_swish_backward, grid, block, xs, (const float*)dy.data(), dx.data(), n); },
            [&](long long i) { double v = w8[i]; return v < -3 ? 0.0 : v <= 3 ? v / 3 + 0.5 : 1.0; },
            [&](long long i) { double v = w8[i]; return v < -3 ? 0.0 : v <= 3 ? std::fabs(v) / 3 + 0.5 : 1.0; });
        fwd("erf", [&](Vf& y) { LAUNCH(erf_forward, grid, block, xs, y.data(), n); }, [](double v) { return std::erf(v); });
        bwd("erf", [&](Vf& dx) { LAUNCH(erf_backward, grid, block, xs, (const float*)dy.data(), dx.data(), n); },
            [&](long long i) { double v = w8[i]; return 2.0 / std::sqrt(M_PI) * std::exp(-v * v); });
        for (auto [lo, hi] : {std::pair{0.0f, 6.0f}, std::pair{-INFINITY, -0.5f}, std::pair{-2.0f, INFINITY}}) {
            std::string nm = fmt("clip [%g, %g]", lo, hi);
            fwd(nm.c_str(), [&](Vf& y) { LAUNCH(clip_forward, grid, block, xs, y.data(), n, lo, hi); },
                [&](double v) { return std::min(std::max(v, (double)lo), (double)hi); });
            bwd(nm.c_str(), [&](Vf& dx) { LAUNCH(clip_backward, grid, block, xs, (const float*)dy.data(), dx.data(), n, lo, hi); },
                [&](long long i) { return w8[i] >= lo && w8[i] <= hi ? 1.0 : 0.0; });
        }
    }
    for (auto [a, b] : {std::pair{0.5f, 0.0f}, std::pair{1.5f, -2.0f}}) {
        Vf y = b == 0 ? nans(n) : x2; Vd w(n), m(n);  // b == 0 never reads y
        for (long long i = 0; i < n; i++) { w[i] = a * x[i] + (b == 0 ? 0.0 : b * x2[i]); m[i] = std::fabs(a * x[i]) + (b == 0 ? 0.0 : std::fabs(b * x2[i])); }
        LAUNCH(axpby, grid, block, (const float*)x.data(), y.data(), n, a, b);
        check(fmt("axpby a %g b %g %s", a, b, g.c_str()), y, w, m);
    }
    {
        Vf y = x2; Vd w(n);
        for (long long i = 0; i < n; i++) w[i] = (double)x2[i] * x[i];
        LAUNCH(mul_assign, grid, block, (const float*)x.data(), y.data(), n);
        check("mul_assign " + g, y, w);
        y = x2; Vd wb(n), mb(n);
        for (long long i = 0; i < n; i++) { wb[i] = (double)x2[i] + gamma[ch(i)]; mb[i] = std::fabs(x2[i]) + std::fabs(gamma[ch(i)]); }
        LAUNCH(bias_add, grid, block, y.data(), (const float*)gamma.data(), n, channels, inner);
        check("bias_add " + g, y, wb, mb);
    }
    for (int has_beta : {0, 1}) {
        Vf y = nans(n); Vd w(n), m(n);
        for (long long i = 0; i < n; i++) { double t = (double)x[i] * gamma[ch(i)], b = has_beta ? beta[ch(i)] : 0.0; w[i] = t + b; m[i] = std::fabs(t) + std::fabs(b); }
        // ops.rs: without a bias, gamma is passed in its place
        LAUNCH(scale_forward, grid, block, (const float*)x.data(), (const float*)gamma.data(), (const float*)(has_beta ? beta : gamma).data(), has_beta, y.data(), n, channels, inner);
        check(fmt("scale fwd bias %d %s", has_beta, g.c_str()), y, w, m);
    }
    for (auto& s : starts(n)) {
        Vf dx = s; Vd w(n), m(n);
        for (long long i = 0; i < n; i++) { double d = (double)dy[i] * gamma[ch(i)]; w[i] = s[i] + d; m[i] = std::fabs(s[i]) + std::fabs(d); }
        LAUNCH(scale_backward_data, grid, block, (const float*)gamma.data(), (const float*)dy.data(), dx.data(), n, channels, inner);
        check("scale bwd-data " + g + " " + start_name(s), dx, w, m);
    }
    const float eps = 1e-5f;
    for (float f : {0.9f, 0.0f}) {
        double inv_s = f == 0 ? 0 : 1.0 / f;
        std::vector<float> factor = {f};
        auto isd = [&](long long i) { return 1.0 / std::sqrt(var[ch(i)] * inv_s + eps); };
        Vf y = nans(n); Vd w(n), m(n);
        for (long long i = 0; i < n; i++) { w[i] = (x[i] - mean[ch(i)] * inv_s) * isd(i); m[i] = (std::fabs(x[i]) + std::fabs(mean[ch(i)] * inv_s)) * isd(i); }
        LAUNCH(batch_norm_forward, grid, block, (const float*)x.data(), (const float*)mean.data(), (const float*)var.data(), (const float*)factor.data(), y.data(), n, channels, inner, eps);
        check(fmt("batch_norm fwd factor %g %s", f, g.c_str()), y, w, m);
        for (auto& s : starts(n)) {
            Vf dx = s; Vd w(n), m(n);
            for (long long i = 0; i < n; i++) { double d = dy[i] * isd(i); w[i] = s[i] + d; m[i] = std::fabs(s[i]) + std::fabs(d); }
            LAUNCH(batch_norm_backward_data, grid, block, (const float*)var.data(), (const float*)factor.data(), (const float*)dy.data(), dx.data(), n, channels, inner, eps);
            check(fmt("batch_norm bwd-data factor %g %s ", f, g.c_str()) + start_name(s), dx, w, m);
        }
    }
    // Eltwise MAX over three inputs, Caffe's loop: x0 > x1 picks 0 (ties go to 1), a later
    // input wins only when strictly greater.
    Vf y = nans(n), ym(n); std::vector<unsigned> am(n, 0xdeadbeefu), amw(n);
    for (long long i = 0; i < n; i++) { if (x[i] > x2[i]) { ym[i] = x[i]; amw[i] = 0; } else { ym[i] = x2[i]; amw[i] = 1; } }
    LAUNCH(eltwise_max_first, grid, block, (const float*)x.data(), (const float*)x2.data(), y.data(), am.data(), n);
    check_exact("eltwise max of 2 " + g, y, ym);
    check_exact("eltwise max winners of 2 " + g, am, amw);
    for (long long i = 0; i < n; i++) if (x3[i] > ym[i]) { ym[i] = x3[i]; amw[i] = 2; }
    LAUNCH(eltwise_max_next, grid, block, (const float*)x3.data(), y.data(), am.data(), n, 2u);
    check_exact("eltwise max of 3 " + g, y, ym);
    check_exact("eltwise max winners of 3 " + g, am, amw);
    for (unsigned idx = 0; idx < 3; idx++)
        for (auto& s : starts(n)) {
            Vf dx = s; Vd w(n);
            for (long long i = 0; i < n; i++) w[i] = s[i] + (amw[i] == idx ? dy[i] : 0.0);
            LAUNCH(eltwise_max_backward, grid, block, (const float*)dy.data(), (const unsigned*)am.data(), dx.data(), n, idx);
            check(fmt("eltwise max bwd input %u %s ", idx, g.c_str()) + start_name(s), dx, w);
        }
}

// ops.rs dgn_update: per row a step and an active flag; rows with no step stay as they are.
void test_dgn(int rows, int cols) {
    long long n = (long long)rows * cols;
    auto code = rnd(n), grad = rnd(n), upper = rnd(cols);
    for (auto& u : upper) u = std::fabs(u) * 0.5f;
    Vf step(rows), active(rows);
    for (int r = 0; r < rows; r++) { active[r] = r % 3 != 1; step[r] = active[r] ? 2.0f - 1.5f * r : 0.0f; }
    for (auto [has_upper, decay] : {std::pair{1, 0.99f}, std::pair{0, 1.0f}, std::pair{1, 0.0f}}) {
        int decays = decay > 0 && decay < 1;
        Vd w = dbl(code), m = absd(code);
        for (long long i = 0; i < n; i++) {
            int r = i / cols;
            if (!active[r]) continue;
            double v = code[i] + (double)step[r] * grad[i];
            m[i] = std::fabs(code[i]) + std::fabs((double)step[r] * grad[i]);
            if (has_upper) v = std::min(std::max(v, 0.0), (double)upper[i % cols]);
            w[i] = decays ? v * decay : v;
            if (decays) m[i] *= decay;
        }
        Vf got = code;
        LAUNCH(dgn_update, d3(2), d3(256), got.data(), (const float*)grad.data(), (const float*)step.data(), (const float*)active.data(), (const float*)(has_upper ? upper : grad).data(), has_upper, n, cols, decay, decays);
        std::string g = fmt("dgn_update %dx%d bound %d decay %g", rows, cols, has_upper, decay);
        check(g, got, w, m);
        Vf stopped, stopped_want;
        for (long long i = 0; i < n; i++) if (!active[i / cols]) { stopped.push_back(got[i]); stopped_want.push_back(code[i]); }
        check_exact(g + ": stopped rows untouched", stopped, stopped_want);
    }
}

void test_crop(int N, int C, int H, int W, int dh, int dw, int oy, int ox) {
    auto big = rnd((size_t)N * C * H * W);
    size_t ns = (size_t)N * C * dh * dw;
    auto small_dy = rnd(ns);
    auto src = [&](size_t i) { size_t x = i % dw, y = (i / dw) % dh, p = i / ((size_t)dw * dh); return (p * H + y + oy) * W + x + ox; };
    Vf small = nans(ns), want(ns);
    for (size_t i = 0; i < ns; i++) want[i] = big[src(i)];
    std::string g = fmt("crop %dx%dx%dx%d to %dx%d at %d,%d", N, C, H, W, dh, dw, oy, ox);
    LAUNCH(crop, d3(1), d3(256), big.data(), small.data(), (long long)ns, H, W, dh, dw, oy, ox, 0);
    check_exact(g, small, want);
    for (auto& s : starts(big.size())) {
        Vf dx = s; Vd w = dbl(s);
        for (size_t i = 0; i < ns; i++) w[src(i)] += small_dy[i];
        LAUNCH(crop, d3(1), d3(256), dx.data(), small_dy.data(), (long long)ns, H, W, dh, dw, oy, ox, 1);
        check(g + " backward " + start_name(s), dx, w);
    }
}

// One axis of a bilinear resize: the weight output o gives input i (half-pixel centres, the
// source coordinate clamped at 0, the last input repeated past the end). The coordinate is
// f32 by definition (src/synth/kernels.rs bilinear_tap); the weights are then exact.
double bilinear_axis(int o, int i, int in, int out) {
    double s = std::max(0.0f, ((float)o + 0.5f) * ((float)in / (float)out) - 0.5f);
    int i0 = std::min((int)s, in - 1), i1 = std::min(i0 + 1, in - 1);
    double w1 = s - i0;
    return (i0 == i ? 1 - w1 : 0) + (i1 == i ? w1 : 0);
}

void test_resize(int N, int C, int H, int W, int oh, int ow) {
    size_t nb = (size_t)N * C * H * W, ns = (size_t)N * C * oh * ow;
    auto src = rnd(nb), dy = rnd(ns);
    // Dense per-axis weight tables: wy[o * H + i], wx[o * W + i].
    Vd wy((size_t)oh * H), wx((size_t)ow * W);
    for (int o = 0; o < oh; o++) for (int i = 0; i < H; i++) wy[(size_t)o * H + i] = bilinear_axis(o, i, H, oh);
    for (int o = 0; o < ow; o++) for (int i = 0; i < W; i++) wx[(size_t)o * W + i] = bilinear_axis(o, i, W, ow);
    Vd want(ns), mag(ns);
    for (size_t k = 0; k < ns; k++) {
        size_t x = k % ow, y = (k / ow) % oh, p = k / ((size_t)ow * oh);
        for (int i = 0; i < H; i++) for (int j = 0; j < W; j++) {
            double t = wy[y * H + i] * wx[x * W + j] * src[(p * H + i) * W + j];
            want[k] += t; mag[k] += std::fabs(t);
        }
    }
    std::string g = fmt("resize %dx%dx%dx%d to %dx%d", N, C, H, W, oh, ow);
    Vf dst = nans(ns);
    LAUNCH(resize_bilinear, d3(2), d3(256), (const float*)src.data(), dst.data(), (long long)ns, H, W, oh, ow);
    check(g, dst, want, mag);
    for (auto& s : starts(nb)) {
        Vf dx = s; Vd w = dbl(s), m = absd(s);
        for (size_t k = 0; k < ns; k++) {
            size_t x = k % ow, y = (k / ow) % oh, p = k / ((size_t)ow * oh);
            for (int i = 0; i < H; i++) for (int j = 0; j < W; j++) {
                double t = wy[y * H + i] * wx[x * W + j] * dy[k];
                w[(p * H + i) * W + j] += t; m[(p * H + i) * W + j] += std::fabs(t);
            }
        }
        LAUNCH(resize_bilinear_backward, d3(2), d3(256), (const float*)dy.data(), dx.data(), (int)nb, H, W, oh, ow);
        check(g + " backward " + start_name(s), dx, w, m);
    }
}

void test_affine(int N, int plane) {
    size_t n = (size_t)N * 3 * plane;
    auto x = rnd(n), dy = rnd(n);
    const int p[3] = {2, 0, 1};
    const float a[3] = {0.0175f, -2.5f, 0.75f}, b[3] = {-2.1f, 0.5f, 0.0f};
    Vd want(n), mag(n);
    for (size_t i = 0; i < n; i++) {
        size_t c = (i / plane) % 3, s = i / (3 * plane), at = i % plane;
        double t = (double)a[c] * x[(s * 3 + p[c]) * plane + at];
        want[i] = t + b[c]; mag[i] = std::fabs(t) + std::fabs(b[c]);
    }
    std::string g = fmt("channel_affine %dx3x%d", N, plane);
    Vf y = nans(n);
    LAUNCH(channel_affine, d3(2), d3(256), x.data(), y.data(), (int)n, plane, p[0], p[1], p[2], a[0], a[1], a[2], b[0], b[1], b[2], 0);
    check(g, y, want, mag);
    for (auto& s : starts(n)) {
        Vf dx = s; Vd w = dbl(s), m = absd(s);
        for (size_t i = 0; i < n; i++) {
            size_t c = (i / plane) % 3, smp = i / (3 * plane), at = i % plane, j = (smp * 3 + p[c]) * plane + at;
            double t = (double)a[c] * dy[i];
            w[j] += t; m[j] += std::fabs(t);
        }
        LAUNCH(channel_affine, d3(2), d3(256), dx.data(), dy.data(), (int)n, plane, p[0], p[1], p[2], a[0], a[1], a[2], b[0], b[1], b[2], 1);
        check(g + " backward " + start_name(s), dx, w, m);
    }
}

void test_concat(int outer, int inner, const std::vector<int>& chans) {
    long long row = 0;
    for (int c : chans) row += (long long)c * inner;
    std::vector<Vf> parts; for (int c : chans) parts.push_back(rnd((size_t)outer * c * inner));
    auto dwhole = rnd(outer * row);
    Vf whole = nans(outer * row), want(outer * row, NAN);
    std::string g = fmt("concat outer %d inner %d of %zu", outer, inner, chans.size());
    long long start = 0;
    for (size_t k = 0; k < chans.size(); k++) {
        long long block = (long long)chans[k] * inner;
        for (int o = 0; o < outer; o++) for (long long j = 0; j < block; j++) want[o * row + start + j] = parts[k][o * block + j];
        LAUNCH(concat_copy, d3(1), d3(256), whole.data(), parts[k].data(), (long long)parts[k].size(), block, row, start, 0);
        start += block;
    }
    check_exact(g, whole, want);
    start = 0;
    for (size_t k = 0; k < chans.size(); k++) {
        long long block = (long long)chans[k] * inner;
        for (auto& s : starts(parts[k].size())) {
            Vf dp = s; Vd w = dbl(s);
            for (int o = 0; o < outer; o++) for (long long j = 0; j < block; j++) w[o * block + j] += dwhole[o * row + start + j];
            LAUNCH(concat_copy, d3(1), d3(256), dwhole.data(), dp.data(), (long long)dp.size(), block, row, start, 1);
            check(fmt("%s backward part %zu ", g.c_str(), k) + start_name(s), dp, w);
        }
        start += block;
    }
    // Slice, the inverse: each part cut from the whole over NaN (mode 2), then every part's
    // gradient added back into the whole's, from zero and from random (mode 3).
    start = 0;
    for (size_t k = 0; k < chans.size(); k++) {
        long long block = (long long)chans[k] * inner;
        Vf part = nans(parts[k].size()), want_part(parts[k].size());
        for (int o = 0; o < outer; o++) for (long long j = 0; j < block; j++) want_part[o * block + j] = dwhole[o * row + start + j];
        LAUNCH(concat_copy, d3(1), d3(256), dwhole.data(), part.data(), (long long)part.size(), block, row, start, 2);
        check_exact(fmt("slice outer %d inner %d part %zu", outer, inner, k), part, want_part);
        start += block;
    }
    for (auto& s : starts(dwhole.size())) {
        Vf dw = s; Vd w = dbl(s);
        start = 0;
        for (size_t k = 0; k < chans.size(); k++) {
            long long block = (long long)chans[k] * inner;
            for (int o = 0; o < outer; o++) for (long long j = 0; j < block; j++) w[o * row + start + j] += parts[k][o * block + j];
            LAUNCH(concat_copy, d3(1), d3(256), dw.data(), parts[k].data(), (long long)parts[k].size(), block, row, start, 3);
            start += block;
        }
        check(fmt("slice outer %d inner %d backward ", outer, inner) + start_name(s), dw, w);
    }
}

// pad_forward over NaN (every output written), pad_backward from 0 and from random.
void test_pad(int N, int C, int H, int W, int t, int l, int b, int r, float value) {
    int OH = H + t + b, OW = W + l + r;
    size_t planes = (size_t)N * C, ni = planes * H * W, no = planes * OH * OW;
    auto x = rnd(ni), dy = rnd(no);
    Vf want(no, value);
    Vd dxw(ni);
    for (size_t p = 0; p < planes; p++) for (int i = 0; i < H; i++) for (int j = 0; j < W; j++) {
        if (i + t < 0 || i + t >= OH || j + l < 0 || j + l >= OW) continue;  // cropped
        size_t src = (p * H + i) * W + j, dst = (p * OH + i + t) * OW + j + l;
        want[dst] = x[src]; dxw[src] = dy[dst];
    }
    std::string g = fmt("pad %dx%dx%dx%d by %d,%d,%d,%d value %g", N, C, H, W, t, l, b, r, value);
    Vf y = nans(no);
    LAUNCH(pad_forward, d3(3), d3(256), (const float*)x.data(), y.data(), (long long)no, H, W, OH, OW, t, l, value);
    check_exact(g, y, want);
    for (auto& s : starts(ni)) {
        Vf dx = s; Vd w(ni);
        for (size_t i = 0; i < ni; i++) w[i] = s[i] + dxw[i];
        LAUNCH(pad_backward, d3(3), d3(256), (const float*)dy.data(), dx.data(), (long long)ni, H, W, OH, OW, t, l);
        check(g + " backward " + start_name(s), dx, w);
    }
}

// shuffle_channels: the forward shuffle over NaN (every output written, bit for bit), then
// the backward (the shuffle in channels / group groups) adding into 0 and into random.
void test_shuffle(int outer, int channels, int group, int inner) {
    size_t n = (size_t)outer * channels * inner;
    auto x = rnd(n);
    Vf want(n);
    for (int o = 0; o < outer; o++) for (int c = 0; c < channels; c++) for (int i = 0; i < inner; i++) {
        int from = (c % group) * (channels / group) + c / group;
        want[((size_t)o * channels + c) * inner + i] = x[((size_t)o * channels + from) * inner + i];
    }
    std::string g = fmt("shuffle %d x %d channels in %d groups x %d", outer, channels, group, inner);
    Vf y = nans(n);
    LAUNCH(shuffle_channels, d3(3), d3(256), (const float*)x.data(), y.data(), (long long)n, channels, group, (long long)inner, 0);
    check_exact(g, y, want);
    for (auto& s : starts(n)) {
        // The backward pass of the shuffle undoes it: dx = start + x, from dy = y.
        Vf dx = s; Vd w(n);
        for (size_t i = 0; i < n; i++) w[i] = (double)s[i] + x[i];
        LAUNCH(shuffle_channels, d3(3), d3(256), (const float*)y.data(), dx.data(), (long long)n, channels, channels / group, (long long)inner, 1);
        check(g + " backward " + start_name(s), dx, w);
    }
}

void test_splitk(int M, int N, int S, int ldc) {
    auto P = rnd((size_t)S * M * N);
    for (float beta : {0.0f, 1.0f}) {
        Vf C = beta == 0 ? nans((size_t)M * ldc) : rnd((size_t)M * ldc);
        Vd want = dbl(C), mag = absd(C);
        for (int m = 0; m < M; m++) for (int n = 0; n < N; n++) {
            double s = 0, a = 0;
            for (int k = 0; k < S; k++) { s += P[(size_t)k * M * N + m * N + n]; a += std::fabs(P[(size_t)k * M * N + m * N + n]); }
            double& c = want[m * ldc + n];
            mag[m * ldc + n] = 0.5 * a + (beta == 0 ? 0 : std::fabs(beta * c));
            c = 0.5 * s + (beta == 0 ? 0 : beta * c);
        }
        Vf got = C;
        LAUNCH(splitk_reduce, d3(1), d3(64), (const float*)P.data(), S, M, N, 0.5f, beta, got.data(), ldc);
        check(fmt("splitk_reduce M%d N%d splits %d ldc %d beta %g", M, N, S, ldc, beta), got, want, mag);
    }
}

// Self-checks of the emulation itself (case `emu_self_test`): cp.async lands only at the
// wait that covers its group, and ldmatrix hands out the PTX ISA's fragments.
// mode 0 waits right (wait_group 1 before reading stage 0, 0 before stage 1), 1 never
// waits, 2 waits one group too weakly (wait_group 2, then 1).
__global__ void emu_cp_async_probe(const float* in, float* out, int mode) {
    __shared__ __align__(16) float sh[2][128];
    const int t = threadIdx.x;
    for (int i = 0; i < 4; i++) sh[0][t * 4 + i] = sh[1][t * 4 + i] = NAN;
    __syncthreads();
    cp_async16(&sh[0][t * 4], in + t * 4, true);
    cp_async_commit();
    // Stage 1 four bytes at a time, values past 100 zero-filled.
    for (int i = 0; i < 4; i++) cp_async4(&sh[1][t * 4 + i], in + 128 + t * 4 + i, t * 4 + i < 100);
    cp_async_commit();
    if (mode == 0) cp_async_wait<1>();
    if (mode == 2) cp_async_wait<2>();
    __syncthreads();
    for (int i = 0; i < 4; i++) out[t * 4 + i] = sh[0][(t * 4 + i + 4) % 128];  // the next thread's copy
    __syncthreads();
    if (mode == 0) cp_async_wait<0>();
    if (mode == 2) cp_async_wait<1>();
    __syncthreads();
    for (int i = 0; i < 4; i++) out[128 + t * 4 + i] = sh[1][(t * 4 + i + 4) % 128];
}

template <int COUNT, bool TRANS>
__device__ void ldmatrix_probe(const uint16_t (*m)[8][8], unsigned* out) {
    const int l = threadIdx.x;
    unsigned r[COUNT];
    ldmatrix<COUNT, TRANS>(r, l / 8 < COUNT ? &m[l / 8][l % 8][0] : nullptr);
    for (int i = 0; i < COUNT; i++) out[l * COUNT + i] = r[i];
}

__global__ void emu_ldmatrix_probe(unsigned* out, int count, int trans) {
    __shared__ __align__(16) uint16_t m[4][8][8];
    const int l = threadIdx.x;
    for (int e = l; e < 256; e += 32) m[e / 64][(e / 8) % 8][e % 8] = (uint16_t)(1000 + e);
    __syncthreads();
    if (count == 1) trans ? ldmatrix_probe<1, true>(m, out) : ldmatrix_probe<1, false>(m, out);
    if (count == 2) trans ? ldmatrix_probe<2, true>(m, out) : ldmatrix_probe<2, false>(m, out);
    if (count == 4) trans ? ldmatrix_probe<4, true>(m, out) : ldmatrix_probe<4, false>(m, out);
}

void test_emu_self() {
    auto in = rnd(256);
    Vf want(256);
    for (int i = 0; i < 256; i++) {
        int j = (i % 128 + 4) % 128;
        want[i] = i < 128 ? in[j] : j < 100 ? in[128 + j] : 0.0f;
    }
    for (int mode : {0, 1, 2}) {
        Vf out = nans(256);
        LAUNCH(emu_cp_async_probe, d3(1), d3(32), (const float*)in.data(), out.data(), mode);
        // Without its wait every value read is the NaN the block left in shared memory.
        if (mode == 0) check_exact("emu cp.async: copies land at their wait_group, zero-filled past the predicate", out, want);
        else check_exact(mode == 1 ? "emu cp.async: no wait_group reads stale shared memory" : "emu cp.async: a wait_group one too weak reads stale shared memory", out, nans(256));
    }
    // cvt.rn.bf16.f32: ties to even (1 + 2^-8 -> 1, 1 + 3 2^-8 -> 1 + 2^-6), above half up,
    // infinities kept, NaN quiet, the largest finite values rounding to infinity.
    {
        std::vector<float> x = {1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, 1.0f + 0x1p-8f + 0x1p-20f, -2.5f, INFINITY, -INFINITY, NAN, 3.4e38f};
        std::vector<unsigned short> got, want = {0x3f80, 0x3f82, 0x3f81, 0xc020, 0x7f80, 0xff80, 0x7fc0, 0x7f80};
        for (float v : x) got.push_back(to_bf16(v));
        check_exact("emu cvt.rn.bf16.f32: to nearest, ties to even", got, want);
    }
    // ldmatrix as 32-bit words: an untransposed matrix gives lane l word l % 4 of row l / 4;
    // .trans gives the same of the transposed matrix.
    for (int count : {1, 2, 4}) for (int trans : {0, 1}) {
        std::vector<unsigned> out(32 * count, 0xdeadbeefu), want(32 * count);
        for (int l = 0; l < 32; l++) for (int i = 0; i < count; i++) {
            uint16_t mat[8][8];
            for (int r = 0; r < 8; r++) for (int c = 0; c < 8; c++) mat[r][c] = (uint16_t)(1000 + i * 64 + (trans ? c * 8 + r : r * 8 + c));
            unsigned w; std::memcpy(&w, &mat[l / 4][2 * (l % 4)], 4);
            want[l * count + i] = w;
        }
        LAUNCH(emu_ldmatrix_probe, d3(1), d3(32), out.data(), count, trans);
        check_exact(fmt("emu ldmatrix x%d%s: the PTX ISA fragments", count, trans ? " .trans" : ""), out, want);
    }
}

// One case line; false when it is malformed.
bool run_case(const std::string& line) {
    std::istringstream in(line);
    std::string kind;
    if (!(in >> kind)) return true;  // blank
    std::vector<double> a;
    // strtod, unlike >>, reads inf and -inf (Pad values).
    for (std::string t; in >> t;) {
        char* end;
        a.push_back(std::strtod(t.c_str(), &end));
        if (*end) return false;
    }
    auto n = [&](size_t want) { return a.size() == want; };
    auto i = [&](size_t k) { return (int)a[k]; };
    if (kind == "emu_self_test" && n(0)) test_emu_self();
    else if (kind == "gemm" && n(11)) test_gemm(i(0), i(1), i(2), i(3), i(4), i(5), i(6), i(7), (float)a[8], (float)a[9], i(10));
    else if (kind == "conv" && n(14)) test_conv(i(0), i(1), i(2), i(3), i(4), i(5), i(6), i(7), i(8), i(9), i(10), i(11), i(12), i(13));
    else if (kind == "pool" && n(10)) test_pool(i(0), i(1), i(2), i(3), i(4), i(5), i(6), i(7), i(8), i(9));
    else if (kind == "lrn" && n(6)) test_lrn(i(0), i(1), i(2), i(3), i(4), i(5));
    else if (kind == "softmax" && n(3)) test_softmax(i(0), i(1), i(2));
    else if (kind == "reduce" && n(3)) test_reduce(i(0), i(1), i(2));
    else if (kind == "elementwise" && n(3)) test_elementwise(i(0), i(1), i(2));
    else if (kind == "dgn" && n(2)) test_dgn(i(0), i(1));
    else if (kind == "crop" && n(8)) test_crop(i(0), i(1), i(2), i(3), i(4), i(5), i(6), i(7));
    else if (kind == "resize" && n(6)) test_resize(i(0), i(1), i(2), i(3), i(4), i(5));
    else if (kind == "affine" && n(2)) test_affine(i(0), i(1));
    else if (kind == "concat" && a.size() >= 3) test_concat(i(0), i(1), std::vector<int>(a.begin() + 2, a.end()));
    else if (kind == "splitk" && n(4)) test_splitk(i(0), i(1), i(2), i(3));
    else if (kind == "shuffle" && n(4)) test_shuffle(i(0), i(1), i(2), i(3));
    else if (kind == "pad" && n(9)) test_pad(i(0), i(1), i(2), i(3), i(4), i(5), i(6), i(7), (float)a[8]);
    else return false;
    return true;
}

int main(int argc, char** argv) {
    std::ifstream file;
    if (argc > 1) {
        file.open(argv[1]);
        if (!file) { fprintf(stderr, "cannot read %s\n", argv[1]); return 2; }
    }
    std::istream& in = argc > 1 ? static_cast<std::istream&>(file) : std::cin;
    int cases = 0;
    for (std::string line; std::getline(in, line);) {
        line = line.substr(0, line.find('#'));
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        cases++;
        if (!run_case(line)) { failures++; printf("FAIL malformed case: %s\n", line.c_str()); }
        fflush(stdout);
    }
    printf("%d cases\nlaunched:", cases);
    for (auto& k : g_launched) printf(" %s", k.c_str());
    printf("\n%d failures\n", failures);
    return failures != 0;
}
