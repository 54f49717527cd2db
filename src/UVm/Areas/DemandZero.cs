using UVm.Spaces;

namespace UVm.Areas;

/// <summary>
/// The fault policy of a lazy private area (<see cref="AreaBackend.Alloc"/>): a page that is not
/// present gets a zeroed frame, and so do the other unmapped pages of its fault-around window.
/// </summary>
internal static class DemandZero
{
    /// <summary>
    /// Maps zeroed frames over the unmapped pages of the fault-around window of
    /// <paramref name="page"/> in <paramref name="area"/>. Only the faulting page must succeed:
    /// out of frames or of host mappings, the window is left as it is and the faulting page is
    /// tried alone (its own refusal propagates).
    /// </summary>
    internal static bool Resolve(AddressSpace owner, VmArea area, ulong page)
    {
        (ulong start, ulong end) = owner.WindowOf(area, page);
        int filled = 0;
        using (CursorMut c = owner.Space.CursorMut(new VaddrRange(start, end)))
        {
            for (ulong va = start; va < end; va += Paging.PageSize)
            {
                c.Jump(va);
                if (c.QuerySlot().IsMapped) continue;
                try
                {
                    owner.Chunks.MapNewFrame(c, va, owner.PropFor(area, va), populate: true);
                    filled++;
                }
                catch (UVmException e) when ((e.Error is UVmError.NoMemory or UVmError.HostMappingLimit) && va != page)
                {
                    // The window is a bonus; only the faulting page must succeed. Out of frames or
                    // host mappings, go straight to it, and stop after it.
                    if (va > page) break;
                    va = page - Paging.PageSize;
                }
            }
        }
        Interlocked.Increment(ref owner.Stats._demandZero);
        Interlocked.Add(ref owner.Stats._demandZeroPages, filled);
        return true;
    }
}
