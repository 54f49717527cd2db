using UVm.Faults;

namespace UVm.Areas;

/// <summary>
/// The areas whose unresolved faults are reported with a kind of their own (guard areas,
/// <see cref="AreaBackend.UnresolvedKind"/>), kept as an immutable sorted array that is swapped
/// whole on every change, so the space can ask about any address without a lock, from any thread
/// and with any lock held (a thread holding a cursor included). This is what
/// <see cref="AddressSpace"/> hands its space as the classifier of faults where nothing is mapped.
/// </summary>
internal sealed class FaultKinds
{
    private static readonly (VaddrRange Range, PageFaultKind Kind)[] s_none = [];
    private (VaddrRange Range, PageFaultKind Kind)[] _ranges = s_none;

    /// <summary>Whether any area has a kind of its own (so a change of the set may change this).</summary>
    internal bool IsEmpty => Volatile.Read(ref _ranges).Length == 0;

    /// <summary>Reads the kinds of <paramref name="areas"/> again. Called under the area lock (write) after the set changed.</summary>
    internal void Refresh(AreaSet areas)
    {
        var ranges = new List<(VaddrRange, PageFaultKind)>();
        foreach (VmArea a in areas.ToArray())
            if (a.Backend.UnresolvedKind is { } kind) ranges.Add((a.Range, kind));
        Volatile.Write(ref _ranges, ranges.Count == 0 ? s_none : ranges.ToArray());
    }

    /// <summary>The kind an unresolved fault at <paramref name="va"/> is reported with, or null for the page table's.</summary>
    internal PageFaultKind? At(ulong va)
    {
        (VaddrRange Range, PageFaultKind Kind)[] ranges = Volatile.Read(ref _ranges);
        int lo = 0, hi = ranges.Length - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >> 1;
            if (va < ranges[mid].Range.Start) hi = mid - 1;
            else if (va >= ranges[mid].Range.End) lo = mid + 1;
            else return ranges[mid].Kind;
        }
        return null;
    }
}
