namespace UVm.Frames;

/// <summary>
/// Chunk reservations: a caller (a space's lazily populated area) claims a whole free chunk of
/// 512 frames and later allocates chosen frames of it, so that pages contiguous in guest address
/// get frames contiguous in <c>Paddr</c> and the host can merge their mappings.
/// </summary>
/// <remarks>
/// Ordinary allocation skips reserved chunks while any other frame is free, and takes their
/// free frames only as a last resort (so reservations never make the pool refuse memory it
/// has; the owner then finds its slot taken and moves on). Reserving costs no memory: untouched
/// frames stay holes in the memfd. Frames of a reserved chunk are reference counted and freed
/// like any other; when the reservation is released, the chunk's free frames return to
/// ordinary allocation.
/// </remarks>
public sealed unsafe partial class FramePool
{
    private readonly int[] _chunkReserved;
    private long _reservedChunks;

    /// <summary>Chunks currently reserved.</summary>
    public long ReservedChunks => Volatile.Read(ref _reservedChunks);

    /// <summary>Reserves an entirely free chunk; returns its index.</summary>
    /// <exception cref="UVmException"><see cref="UVmError.NoMemory"/> when no chunk is entirely free.</exception>
    internal int ReserveChunk()
    {
        lock (_lock)
        {
            if (_disposed != 0) ThrowHelper.Disposed(nameof(FramePool));
            int c = FindFreeChunkLocked();
            if (c < 0)
            {
                PunchDirtyLocked();
                c = FindFreeChunkLocked();
            }
            if (c < 0) ThrowHelper.UVm(UVmError.NoMemory, "no free 2 MiB chunk of frames to reserve");
            _chunkReserved[c]++;
            _reservedChunks++;
            if (_currentChunk == c) _currentChunk = -1;
            return c;
        }
    }

    /// <summary>Gives a reservation back; the chunk's free frames return to ordinary allocation.</summary>
    internal void ReleaseChunk(int chunk)
    {
        lock (_lock)
        {
            if (_chunkReserved[chunk] <= 0) throw new InvalidOperationException($"chunk {chunk} is not reserved");
            _chunkReserved[chunk]--;
            _reservedChunks--;
        }
    }

    /// <summary>
    /// Allocates the frame at <paramref name="paddr"/> (in a chunk the caller reserved) if it is
    /// free; returns false when it is in use or waiting to be punched.
    /// </summary>
    internal bool TryAllocAt(ulong paddr)
    {
        ulong f = paddr >> Paging.PageShift;
        lock (_lock)
        {
            if (_disposed != 0) ThrowHelper.Disposed(nameof(FramePool));
            if ((_used[f >> 6] & (1UL << (int)(f & 63))) != 0) return false;
            MarkLocked(f, 1);
            // SAFETY: paddr names a frame of a chunk of this pool (the caller's reservation), so f < TotalFrames.
            _refs[f] = 1;
            _inUse++;
            _allocatedTotal++;
            return true;
        }
    }

    private int FindFreeChunkLocked()
    {
        int chunks = _chunkUsed.Length;
        for (int pass = 0, start = _freshHint; pass < 2; pass++, start = 0)
        {
            for (int c = start; c < chunks; c++)
            {
                if (_chunkUsed[c] != 0 || _chunkReserved[c] != 0 || c == _currentChunk) continue;
                _freshHint = c + 1 < chunks ? c + 1 : 0;
                return c;
            }
        }
        return -1;
    }
}
