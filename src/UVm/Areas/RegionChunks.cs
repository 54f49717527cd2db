using UVm.Frames;
using UVm.Spaces;

namespace UVm.Areas;

/// <summary>
/// The chunk each 2 MiB region of this address space's lazy and populated areas allocates its
/// frames from: one pool chunk per region, so the frame for page <c>i</c> of the region is taken
/// from slot <c>i</c> of its chunk, pages contiguous in guest address are contiguous in
/// <c>Paddr</c>, and the host merges their mappings into one. When the slot is taken (a frame
/// still shared with a forked space sits there), the region moves to a fresh chunk. Thread-safe.
/// </summary>
/// <remarks>
/// The frame pool's chunk reservations are the mechanism (a chunk set aside for one owner, see
/// <see cref="FramePool.ReserveChunk"/>); this is one owner's policy over them, keyed by guest
/// region: which chunk a region uses, when it moves to another, and when an unmap gives the
/// chunks of regions no area uses any more back.
/// </remarks>
internal sealed class RegionChunks : IDisposable
{
    private readonly FramePool _pool;
    private readonly Dictionary<ulong, int> _chunks = new();

    internal RegionChunks(FramePool pool) => _pool = pool;

    /// <summary>
    /// Allocates a frame for guest page <paramref name="va"/> at its slot; its one reference is
    /// the caller's. Zeroed, unless <paramref name="willOverwrite"/>: then it may hold old
    /// contents, which the caller overwrites whole before the frame is mapped (a copy).
    /// </summary>
    internal OwnedFrame AllocFor(ulong va, bool willOverwrite = false) => new(_pool, AllocPaddrFor(va, willOverwrite));

    /// <summary>
    /// Allocates a zeroed frame for the page at <paramref name="va"/> and maps it at
    /// <paramref name="cursor"/>'s page straight away: the reference passes to the mapping at once
    /// (or is dropped if the cursor refuses it), so nothing holds it in between. The fault path's
    /// form of <see cref="AllocFor"/> followed by <see cref="OwnedFrame.MapInto"/>, without an
    /// object per page.
    /// </summary>
    internal void MapNewFrame(CursorMut cursor, ulong va, PageProperty prop, bool populate) =>
        cursor.MapOwnedFrame(AllocPaddrFor(va, willOverwrite: false), prop, populate);

    private ulong AllocPaddrFor(ulong va, bool willOverwrite)
    {
        ulong region = va >> 21;
        ulong slot = (va >> Paging.PageShift) & (FramePool.ChunkFrames - 1);
        lock (_chunks)
        {
            for (int attempt = 0; attempt < 2; attempt++)
            {
                if (!_chunks.TryGetValue(region, out int chunk) || attempt == 1)
                {
                    if (attempt == 1 && _chunks.Remove(region, out int stale)) _pool.ReleaseChunk(stale);
                    try
                    {
                        chunk = _pool.ReserveChunk();
                    }
                    catch (UVmException e) when (e.Error == UVmError.NoMemory)
                    {
                        break; // no whole chunk left: fall back to any frame
                    }
                    _chunks[region] = chunk;
                }
                ulong paddr = (ulong)chunk * FramePool.ChunkFrames * Paging.PageSize + slot * Paging.PageSize;
                if (_pool.TryAllocAt(paddr, willOverwrite)) return paddr;
            }
        }
        using UFrame frame = _pool.AllocFrame();
        _pool.AddRef(frame.Paddr);
        return frame.Paddr;
    }

    /// <summary>
    /// Gives back the chunks of the 2 MiB regions that <paramref name="range"/> touches and
    /// that no area uses any more (<paramref name="inUse"/> says whether one overlaps a region).
    /// </summary>
    internal void ReleaseUnused(VaddrRange range, Func<VaddrRange, bool> inUse)
    {
        lock (_chunks)
        {
            foreach (ulong region in _chunks.Keys.ToArray())
            {
                var span = new VaddrRange(region << 21, (region << 21) + Paging.HugePageSize);
                if (span.End <= range.Start || span.Start >= range.End || inUse(span)) continue;
                if (_chunks.Remove(region, out int chunk)) _pool.ReleaseChunk(chunk);
            }
        }
    }

    public void Dispose()
    {
        lock (_chunks)
        {
            foreach (int chunk in _chunks.Values) _pool.ReleaseChunk(chunk);
            _chunks.Clear();
        }
    }
}
