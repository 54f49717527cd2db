namespace UVm.Frames;

/// <summary>
/// Where a pool carves its frames from: the policy over a <see cref="FrameBitmap"/>, with the
/// chunk reservations it has to respect. No host calls, no locks: the pool holds its lock
/// around every call.
/// </summary>
/// <remarks>
/// <para>Single frames and short runs are carved from one <i>current</i> chunk until it is full,
/// so frames allocated together are contiguous in <c>Paddr</c>; then from the next untouched
/// chunk (searched from a hint that moves forward, so untouched chunks are used in turn); then
/// from a hole in a partly used chunk. A run of a chunk or more starts on a chunk boundary and
/// takes whole untouched chunks.</para>
/// <para>Reserved chunks (see <c>FramePool.ChunkReservations.cs</c>) are never carved from while
/// other frames are free; their free frames are the last resort, never a reason to refuse memory
/// the pool has.</para>
/// </remarks>
internal sealed class ChunkChooser
{
    private const int ChunkFrames = FramePool.ChunkFrames;

    private readonly FrameBitmap _bitmap;
    private readonly int[] _reserved;   // reservations per chunk
    private long _reservedChunks;
    private int _current = -1;          // where single frames are being carved from
    private int _freshHint;             // where to look for an untouched chunk next

    internal ChunkChooser(FrameBitmap bitmap)
    {
        _bitmap = bitmap;
        _reserved = new int[bitmap.ChunkCount];
    }

    /// <summary>The chunk small allocations are carved from now (-1: none yet).</summary>
    internal int CurrentChunk => _current;

    /// <summary>Chunks reserved now; may be read without the pool's lock.</summary>
    internal long ReservedChunks => Volatile.Read(ref _reservedChunks);

    internal bool IsReserved(int chunk) => _reserved[chunk] != 0;

    /// <summary>
    /// Chooses where <paramref name="count"/> free frames (1 to <see cref="FrameBitmap.TotalFrames"/>)
    /// go, contiguous; false when no such run is free. Marks nothing: the caller marks the run.
    /// </summary>
    internal bool TryChoose(ulong count, out ulong first)
    {
        int chunks = _bitmap.ChunkCount;
        if (count >= ChunkFrames)
        {
            // Whole empty chunks: from the hint, then from the start; reserved ones only when
            // nothing else is left (the last pass).
            int need = (int)((count + ChunkFrames - 1) / ChunkFrames);
            for (int pass = 0, start = _freshHint; pass < 3; pass++, start = 0)
            {
                ReadOnlySpan<int> excluded = pass == 2 ? ReadOnlySpan<int>.Empty : _reserved;
                int firstChunk = _bitmap.FindFreeChunks(start, need, excluded);
                if (firstChunk < 0) continue;
                int last = firstChunk + need - 1;
                _freshHint = last + 1 < chunks ? last + 1 : 0;
                first = (ulong)firstChunk * ChunkFrames;
                return true;
            }
            first = 0;
            return false;
        }

        int small = (int)count;
        if (_current >= 0 && _bitmap.TryFindRun(_current, small, out first)) return true;
        // An untouched chunk becomes the current one.
        for (int pass = 0, start = _freshHint; pass < 2; pass++, start = 0)
        {
            int c = _bitmap.FindFreeChunks(start, 1, _reserved);
            if (c < 0) continue;
            _current = c;
            _freshHint = c + 1 < chunks ? c + 1 : 0;
            first = (ulong)c * ChunkFrames;
            return true;
        }
        // No untouched chunk: look for a hole big enough in a partly used one.
        for (int c = 0; c < chunks; c++)
        {
            if (_bitmap.FreeIn(c) < small || _reserved[c] != 0) continue;
            if (_bitmap.TryFindRun(c, small, out first)) { _current = c; return true; }
        }
        // Last resort: free frames of reserved chunks. A reservation is a preference for
        // contiguity, never a reason to refuse memory that is free; its owner finds the slot
        // taken and moves on. Not made the current chunk, so later allocations look elsewhere first.
        for (int c = 0; c < chunks; c++)
        {
            if (_reserved[c] == 0 || _bitmap.FreeIn(c) < small) continue;
            if (_bitmap.TryFindRun(c, small, out first)) return true;
        }
        first = 0;
        return false;
    }

    /// <summary>
    /// Reserves an entirely free chunk that is neither reserved nor the current one, searched
    /// from the hint; returns its index, or -1 when there is none.
    /// </summary>
    internal int TryReserve()
    {
        int chunks = _bitmap.ChunkCount;
        for (int pass = 0, start = _freshHint; pass < 2; pass++, start = 0)
        {
            for (int c = start; c < chunks; c++)
            {
                if (_bitmap.UsedIn(c) != 0 || _reserved[c] != 0 || c == _current) continue;
                _freshHint = c + 1 < chunks ? c + 1 : 0;
                _reserved[c]++;
                _reservedChunks++;
                return c;
            }
        }
        return -1;
    }

    /// <summary>Gives back one reservation of <paramref name="chunk"/>.</summary>
    /// <exception cref="InvalidOperationException">The chunk is not reserved.</exception>
    internal void Unreserve(int chunk)
    {
        if (_reserved[chunk] <= 0) throw new InvalidOperationException($"chunk {chunk} is not reserved");
        _reserved[chunk]--;
        _reservedChunks--;
    }
}
