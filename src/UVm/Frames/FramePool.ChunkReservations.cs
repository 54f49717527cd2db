namespace UVm.Frames;

/// <summary>
/// Chunk reservations: a caller (a space's lazily populated area) claims a whole free chunk of
/// 512 frames and later allocates chosen frames of it, so that pages contiguous in guest address
/// get frames contiguous in <c>Paddr</c> and the host can merge their mappings.
/// </summary>
/// <remarks>
/// <para>Ordinary allocation skips reserved chunks while any other frame is free, and takes their
/// free frames only as a last resort (so reservations never make the pool refuse memory it
/// has; the owner then finds its slot taken and moves on). Reserving costs no memory: untouched
/// frames stay holes in the memfd. Frames of a reserved chunk are reference counted and freed
/// like any other; when the reservation is released, the chunk's free frames return to
/// ordinary allocation.</para>
/// <para>The reservation counts live in the pool's <see cref="ChunkChooser"/>, which keeps ordinary
/// allocation away from reserved chunks; this part of the pool takes its lock around them.</para>
/// </remarks>
public sealed unsafe partial class FramePool
{
    /// <summary>Chunks currently reserved.</summary>
    public long ReservedChunks => _chooser.ReservedChunks;

    /// <summary>Reserves an entirely free chunk; returns its index.</summary>
    /// <exception cref="UVmException"><see cref="UVmError.NoMemory"/> when no chunk is entirely free.</exception>
    internal int ReserveChunk()
    {
        lock (_lock)
        {
            if (_disposed != 0) ThrowHelper.Disposed(nameof(FramePool));
            // Never the chunk small allocations are being carved from: the reservation's owner
            // wants its slots free.
            int c = _chooser.TryReserve();
            if (c < 0)
            {
                PunchDirtyLocked();
                c = _chooser.TryReserve();
            }
            if (c < 0) ThrowHelper.UVm(UVmError.NoMemory, "no free 2 MiB chunk of frames to reserve");
            return c;
        }
    }

    /// <summary>Gives a reservation back; the chunk's free frames return to ordinary allocation.</summary>
    internal void ReleaseChunk(int chunk)
    {
        lock (_lock) _chooser.Unreserve(chunk);
    }

    /// <summary>
    /// Allocates the frame at <paramref name="paddr"/> (in a chunk the caller reserved) if it is
    /// free; returns false when it is in use, or waiting to be punched and
    /// <paramref name="willOverwrite"/> is false.
    /// </summary>
    /// <param name="paddr">The frame.</param>
    /// <param name="willOverwrite">The caller overwrites all of the frame before anybody reads it
    /// (a copy-on-write copy): a freed frame still waiting to be punched may be handed out as it
    /// is, its old contents unread, saving the punch and the host's page allocation. A space reset
    /// to a snapshot frees its copies, and its next run copies into the same slots.</param>
    internal bool TryAllocAt(ulong paddr, bool willOverwrite = false)
    {
        ulong f = paddr >> Paging.PageShift;
        lock (_lock)
        {
            if (_disposed != 0) ThrowHelper.Disposed(nameof(FramePool));
            if (_used.IsUsed(f))
            {
                // Freed frames stay marked used until punched; the most recently freed are last.
                int dirty = willOverwrite ? _dirty.LastIndexOf(f) : -1;
                if (dirty < 0) return false;
                _dirty[dirty] = _dirty[^1]; // the batch is sorted before punching: order does not matter
                _dirty.RemoveAt(_dirty.Count - 1);
            }
            else
            {
                _used.Mark(f, 1);
            }
            // SAFETY: paddr names a frame of a chunk of this pool (the caller's reservation), so f < TotalFrames.
            _refs[f] = 1;
            _inUse++;
            _allocatedTotal++;
            return true;
        }
    }
}
