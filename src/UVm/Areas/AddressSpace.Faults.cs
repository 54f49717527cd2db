using UVm.Faults;
using UVm.Interop;
using UVm.Io;
using UVm.Spaces;

namespace UVm.Areas;

// The default page-fault handler and prefault. The handler finds the area, checks its rights and
// picks one of four policies: a page that is not present is its backend's (demand-zero for a
// lazy private area, DemandZero.cs; mapped again for a linear one); a write to a private page
// that lacks W is copy-on-write (CopyOnWrite.cs); any other fault on a mapped page gets back
// the rights its area allows (RestoreRights).
public sealed partial class AddressSpace
{
    /// <summary>
    /// Resolves every page of <paramref name="range"/> for <paramref name="access"/> now (like
    /// <c>MAP_POPULATE</c>) and fills the host's page tables, so later direct access through
    /// host pointers cannot fault.
    /// </summary>
    /// <exception cref="ArgumentException">The range is not page aligned.</exception>
    /// <exception cref="UVmException"><see cref="UVmError.InvalidArgs"/>: empty or past the space;
    /// <see cref="UVmError.PageFault"/>: a page cannot be resolved for that access (no area, not allowed, or no frame left).</exception>
    public void Prefault(VaddrRange range, PageFaultAccess access)
    {
        CheckRange(range);
        PageFlags need = FaultRights.Needed(access);
        ulong va = range.Start;
        int attempts = 0;
        while (va < range.End)
        {
            PageSlot slot;
            using (Cursor c = Space.Cursor(new VaddrRange(va, va + Paging.PageSize))) slot = c.QuerySlot();
            if (slot.Allows(need))
            {
                va = slot.Va + slot.Size;
                attempts = 0;
                continue;
            }
            if (++attempts > FallibleIo.MaxRetriesWithoutProgress || !Space.HandlePageFault(va, access))
                throw new UVmException(UVmError.PageFault, $"page 0x{va:x} cannot be resolved for {access}");
        }
        int advice = access == PageFaultAccess.Write ? Libc.MADV_POPULATE_WRITE : Libc.MADV_POPULATE_READ;
        // Under a cursor over the range, taken on a live space: the advice lands in this space's
        // arena, never in whatever the host puts at its addresses after a racing Dispose. Best
        // effort: a page another thread unmapped meanwhile simply is not populated.
        using (Space.Cursor(range))
            Libc.Madvise(Space.HostBase + (nint)range.Start, (nuint)range.Length, advice);
    }

    /// <summary>The chunks this address space's private areas take their frames from.</summary>
    internal RegionChunks Chunks => _chunks;

    /// <summary>The fault-around window of <paramref name="page"/>: the aligned <see cref="FaultAroundPages"/> pages around it, cut to the area.</summary>
    internal VaddrRange WindowOf(VmArea area, ulong page)
    {
        ulong window = (ulong)_faultAround * Paging.PageSize;
        ulong start = Paging.AlignDown(page, window);
        return new VaddrRange(Math.Max(area.Range.Start, start), Math.Min(area.Range.End, start + window));
    }

    private static bool DefaultHandler(VmSpace space, in PageFaultInfo info) =>
        s_owners.TryGetValue(space, out AddressSpace? owner) && owner.HandleFault(info);

    private bool HandleFault(in PageFaultInfo info)
    {
        if (!_lock.TryEnterReadLock(Timeout.Infinite)) return false;
        bool marked = false;
        try
        {
            // The space's own state, not this object's flag: Dispose sets that before the space
            // closes, and a fault meanwhile is resolved like any other (the space's Dispose waits for it).
            if (Space.IsDisposed || !_areas.TryFind(info.Address, out VmArea? area))
            {
                Interlocked.Increment(ref Stats._refused);
                return false;
            }
            if (area.Backend.UnresolvedKind is not null)
            {
                Interlocked.Increment(ref Stats._guardFaults); // never resolved; the space reports the kind (FaultKinds)
                return false;
            }
            PageFlags need = FaultRights.Needed(info.Access);
            if ((area.Flags & need) == 0)
            {
                Interlocked.Increment(ref Stats._refused);
                return false;
            }
            ulong page = Paging.AlignDown(info.Address, Paging.PageSize);
            // A write to a watched page is marked before the page can get W (RightsFor), and
            // unmarked if the write cannot be resolved after all.
            marked = info.Access == PageFaultAccess.Write && _watch.IsActive && _watch.MarkWritten(page);
            bool resolved = Resolve(area, page, info.Access);
            if (!resolved && marked) _watch.Unmark(page);
            return resolved;
        }
        catch (AreaBackend.FillFailed f)
        {
            if (marked) _watch.Unmark(Paging.AlignDown(info.Address, Paging.PageSize)); // the write did not happen
            f.Rethrow(); // an on-demand callback's exception goes out of the access as it was thrown
            throw;
        }
        catch (UVmException e) when (e.Error is UVmError.NoMemory or UVmError.HostMappingLimit or UVmError.HostNoMemory or UVmError.HostRefused)
        {
            if (marked) _watch.Unmark(Paging.AlignDown(info.Address, Paging.PageSize));
            // Out of frames or of host mappings, or the host refused: the access fails like any
            // unresolved fault, so a fallible copy returns its exact byte count with PageFault
            // instead of throwing mid-copy. Nothing was mapped for the faulting page (a refused
            // map drops its frame; a refused dispatch undoes the cursor's batch).
            return false;
        }
        catch (ObjectDisposedException) when (Space.IsDisposed)
        {
            return false; // disposed while resolving: the access fails as a fault
        }
        catch when (marked)
        {
            _watch.Unmark(Paging.AlignDown(info.Address, Paging.PageSize)); // a throwing backend: the write did not happen
            throw;
        }
        finally
        {
            _lock.ExitReadLock();
        }
    }

    /// <summary>Picks the policy for a fault on <paramref name="page"/> of <paramref name="area"/>, which allows the access.</summary>
    private bool Resolve(VmArea area, ulong page, PageFaultAccess access)
    {
        using CursorMut c = Space.CursorMut(new VaddrRange(page, page + Paging.PageSize));
        PageSlot slot = c.QuerySlot();
        if (!slot.IsMapped)
        {
            c.Dispose();
            return area.Backend.ResolveNotPresent(this, area, page);
        }
        bool privatePage = area.Backend.HasPrivatePages && slot.IsTracked;
        if (access != PageFaultAccess.Write || !privatePage) return RestoreRights(c, area, page, slot.IsTracked, privatePage);
        c.Dispose();
        return CopyOnWrite.Resolve(this, area, page);
    }

    /// <summary>
    /// Gives the page under <paramref name="c"/> the rights <paramref name="area"/> allows and the
    /// page lost (a shared page write-protected by a fork, or rights given back by
    /// <see cref="Protect"/>). A private page gets W only through <see cref="CopyOnWrite"/>.
    /// </summary>
    private bool RestoreRights(CursorMut c, VmArea area, ulong page, bool tracked, bool privatePage)
    {
        PageFlags add = (tracked ? RightsFor(area, page) : area.Flags) & PageFlags.RWX;
        if (privatePage) add &= ~PageFlags.W;
        c.ProtectNext(Paging.PageSize, (ref PageFlags f, ref CachePolicy _) => f |= add);
        Interlocked.Increment(ref Stats._sharedWriteRestores);
        return true;
    }
}
