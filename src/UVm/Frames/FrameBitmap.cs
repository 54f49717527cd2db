using System.Numerics;

namespace UVm.Frames;

/// <summary>
/// Which frames of a pool are taken (allocated, or freed and waiting to be punched), one bit per
/// frame, with the count of taken frames of each chunk of <see cref="FramePool.ChunkFrames"/>
/// frames beside it.
/// </summary>
/// <remarks>
/// A plain data structure: no host calls, no locks (its owner, the pool, holds its lock around
/// every use) and no policy (which chunk to carve from is <see cref="ChunkChooser"/>'s to say).
/// Frame numbers are <c>Paddr &gt;&gt; PageShift</c>; chunk <c>c</c> holds frames
/// <c>[c * ChunkFrames, (c + 1) * ChunkFrames)</c>.
/// </remarks>
internal sealed class FrameBitmap
{
    private const int ChunkFrames = FramePool.ChunkFrames;
    private const int WordsPerChunk = ChunkFrames / 64;

    private readonly ulong[] _used;       // one bit per frame
    private readonly int[] _chunkUsed;    // set bits per chunk

    /// <summary>A bitmap of <paramref name="totalFrames"/> frames, all free.</summary>
    /// <param name="totalFrames">A positive multiple of <see cref="FramePool.ChunkFrames"/>.</param>
    internal FrameBitmap(ulong totalFrames)
    {
        if (totalFrames == 0 || totalFrames % ChunkFrames != 0)
            throw new ArgumentOutOfRangeException(nameof(totalFrames), totalFrames, "a positive multiple of the chunk size");
        TotalFrames = totalFrames;
        _used = new ulong[totalFrames / 64];
        _chunkUsed = new int[totalFrames / ChunkFrames];
    }

    /// <summary>Frames the bitmap covers.</summary>
    internal ulong TotalFrames { get; }

    /// <summary>Chunks the bitmap covers.</summary>
    internal int ChunkCount => _chunkUsed.Length;

    /// <summary>Whether frame <paramref name="frame"/> is taken.</summary>
    internal bool IsUsed(ulong frame) => (_used[frame >> 6] & (1UL << (int)(frame & 63))) != 0;

    /// <summary>Taken frames of chunk <paramref name="chunk"/>.</summary>
    internal int UsedIn(int chunk) => _chunkUsed[chunk];

    /// <summary>Free frames of chunk <paramref name="chunk"/>.</summary>
    internal int FreeIn(int chunk) => ChunkFrames - _chunkUsed[chunk];

    /// <summary>Marks the free frames <c>[first, first + count)</c> taken.</summary>
    internal void Mark(ulong first, ulong count)
    {
        System.Diagnostics.Debug.Assert(count <= TotalFrames && first <= TotalFrames - count);
        for (ulong f = first; f < first + count; f++)
        {
            System.Diagnostics.Debug.Assert(!IsUsed(f), "a frame is taken twice");
            _used[f >> 6] |= 1UL << (int)(f & 63);
            _chunkUsed[f / ChunkFrames]++;
        }
    }

    /// <summary>Marks the taken frames <c>[first, first + count)</c> free.</summary>
    internal void Clear(ulong first, ulong count)
    {
        System.Diagnostics.Debug.Assert(count <= TotalFrames && first <= TotalFrames - count);
        for (ulong f = first; f < first + count; f++)
        {
            System.Diagnostics.Debug.Assert(IsUsed(f), "a free frame is freed");
            _used[f >> 6] &= ~(1UL << (int)(f & 63));
            _chunkUsed[f / ChunkFrames]--;
        }
    }

    /// <summary>
    /// The first run of <paramref name="count"/> free frames (1 to <see cref="FramePool.ChunkFrames"/>)
    /// inside chunk <paramref name="chunk"/>, lowest address first; false when the chunk has none.
    /// </summary>
    internal bool TryFindRun(int chunk, int count, out ulong first)
    {
        System.Diagnostics.Debug.Assert(count >= 1 && count <= ChunkFrames);
        first = 0;
        if (ChunkFrames - _chunkUsed[chunk] < count) return false;
        int baseWord = chunk * WordsPerChunk;
        if (count == 1)
        {
            for (int w = 0; w < WordsPerChunk; w++)
            {
                ulong word = _used[baseWord + w];
                if (word == ulong.MaxValue) continue;
                first = (ulong)chunk * ChunkFrames + (ulong)(w * 64 + BitOperations.TrailingZeroCount(~word));
                return true;
            }
            return false;
        }
        int run = 0;
        for (int i = 0; i < ChunkFrames; i++)
        {
            bool used = (_used[baseWord + (i >> 6)] & (1UL << (i & 63))) != 0;
            run = used ? 0 : run + 1;
            if (run == count)
            {
                first = (ulong)chunk * ChunkFrames + (ulong)(i - count + 1);
                return true;
            }
        }
        return false;
    }

    /// <summary>
    /// The first chunk of the lowest run of <paramref name="need"/> consecutive entirely free
    /// chunks within <c>[from, ChunkCount)</c>, skipping every chunk <c>c</c> with
    /// <c>excluded[c] != 0</c> (an empty span excludes none); -1 when there is no such run.
    /// </summary>
    internal int FindFreeChunks(int from, int need, ReadOnlySpan<int> excluded)
    {
        System.Diagnostics.Debug.Assert(need >= 1 && from >= 0 && (excluded.IsEmpty || excluded.Length == ChunkCount));
        int run = 0;
        for (int c = from; c < _chunkUsed.Length; c++)
        {
            run = _chunkUsed[c] == 0 && (excluded.IsEmpty || excluded[c] == 0) ? run + 1 : 0;
            if (run == need) return c - need + 1;
        }
        return -1;
    }
}
