// Concat along one axis: input viewed as [outer, block], output as [outer, row], the input's
// slice starting at `start` of each output row. backward = 1: part += whole's slice.
extern "C" __global__ void concat_copy(
    float* __restrict__ whole, float* __restrict__ part, long long n, long long block, long long row, long long start, int backward)
{
    GRID_STRIDE(i, n) {
        const long long o = i / block, j = o * row + start + i % block;
        if (backward) part[i] += whole[j]; else whole[j] = part[i];
    }
}
