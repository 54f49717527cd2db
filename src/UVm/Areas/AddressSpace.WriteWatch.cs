using UVm.Spaces;

namespace UVm.Areas;

// The write watch (Windows' GetWriteWatch, CRIU's soft-dirty): which pages were written since a
// point in time, exactly. The state is WriteWatch's; the fault handler marks pages, and every
// policy that grants rights asks RightsFor.
public sealed partial class AddressSpace
{
    /// <summary>
    /// Starts watching <paramref name="range"/> for writes, or starts over: from now on
    /// <see cref="WrittenPages"/> lists exactly the pages of the range written after this call,
    /// each once. Pages of the pool are watched (allocations, images, on-demand fills, linear
    /// frames); pages of I/O memory are not. Watching costs a fault on the first write to each
    /// page, resolved one page at a time (fault-around does not give write access to watched
    /// pages nobody wrote).
    /// </summary>
    /// <remarks>Removes write access from the range's mapped pages now, one host call per run. The space
    /// stops using host copies (<see cref="VmSpaceOptions.HostCopies"/>) for good, since the watch must see every
    /// first write: the copies it holds get frames of their own (contents unchanged) before anything else.</remarks>
    /// <exception cref="ArgumentException">The range is not page aligned.</exception>
    /// <exception cref="UVmException"><see cref="UVmError.InvalidArgs"/>: empty or past the space;
    /// <see cref="UVmError.NoMemory"/>, <see cref="UVmError.HostMappingLimit"/>, <see cref="UVmError.HostNoMemory"/> or <see cref="UVmError.HostRefused"/>:
    /// refused (the pages keep their rights and contents and the watch its old state; host copies may have become frames).</exception>
    /// <exception cref="ObjectDisposedException">The address space was disposed.</exception>
    /// <exception cref="InvalidOperationException">The calling thread holds a cursor of the space that the range's needs (nothing changed).</exception>
    public void ResetWriteWatch(VaddrRange range)
    {
        CheckRange(range);
        _lock.EnterWriteLock();
        try
        {
            // The watch must see every first write: no more host copies in this space, and the
            // ones it holds become frames (their contents unchanged).
            Space.DissolveHostCopies(stop: true);
            // Write access goes first, as one batch: refused, every page keeps its rights and the
            // watch its old state, in which a page with W is unwatched or already written.
            using (CursorMut c = Space.CursorMut(range))
            {
                while (c.VirtAddr < range.End && c.FindNext(range.End - c.VirtAddr) is not null)
                {
                    PageSlot slot = c.QuerySlot();
                    if (slot.IsTracked && slot.Allows(PageFlags.W)) c.ProtectNext(slot.Size, (ref PageFlags f, ref CachePolicy _) => f &= ~PageFlags.W);
                    else if (slot.End < range.End) c.Jump(slot.End);
                    else break;
                }
            }
            _watch.Restart(range);
        }
        finally
        {
            _lock.ExitWriteLock();
        }
    }

    /// <summary>
    /// The pages of <paramref name="range"/> written since the watch on them last started over
    /// (<see cref="ResetWriteWatch"/>), in address order, each once. A page never written, or
    /// never watched, is never listed. Does not start the watch over.
    /// </summary>
    /// <exception cref="ArgumentException">The range is not page aligned.</exception>
    /// <exception cref="UVmException"><see cref="UVmError.InvalidArgs"/>: empty or past the space.</exception>
    /// <exception cref="ObjectDisposedException">The address space was disposed.</exception>
    public IReadOnlyList<ulong> WrittenPages(VaddrRange range)
    {
        CheckRange(range);
        _lock.EnterReadLock();
        try { return _watch.Written(range); }
        finally { _lock.ExitReadLock(); }
    }

    /// <summary>
    /// The rights a mapping of <paramref name="va"/> in <paramref name="area"/> may get now: the
    /// area's, without W while the page is watched and not yet written. Every policy that maps a
    /// page or grants rights asks this, so the first write to a watched page always faults.
    /// </summary>
    internal PageFlags RightsFor(VmArea area, ulong va) =>
        _watch.IsActive && _watch.IsUnwritten(va) ? area.Flags & ~PageFlags.W : area.Flags;

    /// <summary>The page property <see cref="RightsFor"/> allows.</summary>
    internal PageProperty PropFor(VmArea area, ulong va) => PageProperty.New(RightsFor(area, va));

    /// <summary>Whether <paramref name="va"/> is watched and not yet written (a window must leave it alone).</summary>
    internal bool IsWatchedUnwritten(ulong va) => _watch.IsActive && _watch.IsUnwritten(va);
}
