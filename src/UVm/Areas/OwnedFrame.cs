using UVm.Frames;
using UVm.Spaces;

namespace UVm.Areas;

/// <summary>
/// One reference to a frame of the pool, held by whoever holds this until it is moved into a
/// mapping (<see cref="MapInto"/>) or released (<see cref="Dispose"/>), so a frame allocated
/// for a page is never leaked and never released twice, whatever fails in between.
/// </summary>
/// <remarks>Not thread-safe: it has one owner at a time.</remarks>
internal sealed class OwnedFrame : IDisposable
{
    private readonly FramePool _pool;
    private bool _owned = true;

    /// <summary>Takes over the reference to <paramref name="paddr"/> that the caller holds.</summary>
    internal OwnedFrame(FramePool pool, ulong paddr)
    {
        _pool = pool;
        Paddr = paddr;
    }

    /// <summary>The frame.</summary>
    internal ulong Paddr { get; }

    /// <summary>Whether the reference is still held here (neither moved into a mapping nor released).</summary>
    internal bool IsOwned => _owned;

    /// <summary>
    /// Maps the frame at <paramref name="cursor"/>'s page and gives it the reference: from the
    /// call on, the frame is the mapping's, or dropped if the cursor refuses it
    /// (<c>CursorMut.MapOwnedFrame</c>'s contract), so <see cref="Dispose"/> no longer releases it.
    /// </summary>
    /// <exception cref="InvalidOperationException">The reference was already moved or released.</exception>
    internal void MapInto(CursorMut cursor, PageProperty prop, bool populate)
    {
        if (!_owned) throw new InvalidOperationException($"frame 0x{Paddr:x} is no longer owned here");
        _owned = false;
        cursor.MapOwnedFrame(Paddr, prop, populate);
    }

    /// <summary>Releases the reference if it is still held here; else does nothing.</summary>
    public void Dispose()
    {
        if (!_owned) return;
        _owned = false;
        _pool.Release(Paddr);
    }
}
