// Channel shuffle (src/ops/shuffle): dst[n][c][i] = (or +=) src[n][(c % group) * (channels /
// group) + c / group][i]; the backward pass is the same with channels / group groups.
extern "C" __global__ void shuffle_channels(
    const float* __restrict__ src, float* __restrict__ dst, long long n, int channels, int group, long long inner, int add)
{
    GRID_STRIDE(i, n) {
        const long long plane = i / inner, o = plane / channels;
        const int c = (int)(plane % channels);
        const long long from = (o * channels + (c % group) * (channels / group) + c / group) * inner + i % inner;
        if (add) dst[i] += src[from]; else dst[i] = src[from];
    }
}
