// Concat and Slice along one axis: the part viewed as [outer, block], the whole as [outer,
// row], the part's slice starting at `start` of each row of the whole. The mode:
//   0 whole = part (Concat forward)    1 part += whole (Concat backward)
//   2 part = whole (Slice forward)     3 whole += part (Slice backward)
extern "C" __global__ void concat_copy(
    float* __restrict__ whole, float* __restrict__ part, long long n, long long block, long long row, long long start, int mode)
{
    GRID_STRIDE(i, n) {
        const long long o = i / block, j = o * row + start + i % block;
        switch (mode) {
        case 0: whole[j] = part[i]; break;
        case 1: part[i] += whole[j]; break;
        case 2: part[i] = whole[j]; break;
        default: whole[j] += part[i]; break;
        }
    }
}
