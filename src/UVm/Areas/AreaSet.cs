using System.Diagnostics.CodeAnalysis;

namespace UVm.Areas;

/// <summary>
/// The areas of one address space: non-empty, non-overlapping, in address order, inside
/// <c>[0, <see cref="End"/>)</c>. A plain data structure: it finds, places, splits and removes
/// areas, and touches neither the host nor a space (mapping the pages is
/// <see cref="AddressSpace"/>'s work).
/// </summary>
/// <remarks>Not thread-safe: <see cref="AddressSpace"/> guards its set with its area lock.</remarks>
internal sealed class AreaSet
{
    private readonly SortedList<ulong, VmArea> _areas;

    /// <summary>An empty set of areas for a space whose addresses end at <paramref name="end"/>.</summary>
    internal AreaSet(ulong end) : this(end, new SortedList<ulong, VmArea>()) { }

    private AreaSet(ulong end, SortedList<ulong, VmArea> areas)
    {
        End = end;
        _areas = areas;
    }

    /// <summary>The first address past the space: no area reaches beyond it.</summary>
    internal ulong End { get; }

    /// <summary>The number of areas.</summary>
    internal int Count => _areas.Count;

    /// <summary>The areas, in address order (a copy).</summary>
    internal VmArea[] ToArray() => _areas.Values.ToArray();

    /// <summary>A set with the same areas (areas are immutable, so they are shared).</summary>
    internal AreaSet Clone() => new(End, new SortedList<ulong, VmArea>(_areas));

    /// <summary>Whether the set holds exactly <paramref name="areas"/> (in address order).</summary>
    internal bool SameAs(IReadOnlyList<VmArea> areas)
    {
        if (areas.Count != _areas.Count) return false;
        IList<VmArea> mine = _areas.Values;
        for (int i = 0; i < areas.Count; i++)
            if (!mine[i].Equals(areas[i])) return false;
        return true;
    }

    /// <summary>Makes the set hold exactly <paramref name="areas"/>, which are in address order and valid for it (a snapshot's).</summary>
    internal void ReplaceAll(IReadOnlyList<VmArea> areas)
    {
        _areas.Clear();
        foreach (VmArea area in areas) Add(area);
    }

    /// <summary>The area containing <paramref name="va"/>, if any.</summary>
    internal bool TryFind(ulong va, [NotNullWhen(true)] out VmArea? area)
    {
        int i = Floor(va);
        area = i >= 0 && _areas.Values[i].Range.Contains(va) ? _areas.Values[i] : null;
        return area != null;
    }

    /// <summary>Whether an area overlaps <paramref name="range"/> (an empty range overlaps nothing).</summary>
    internal bool Overlaps(VaddrRange range)
    {
        if (range.IsEmpty) return false;
        // The last area starting before the range's end overlaps it, or none does: the ones
        // before it end before it starts.
        int i = Floor(range.End - 1);
        return i >= 0 && _areas.Values[i].Range.End > range.Start;
    }

    /// <summary>The areas that overlap <paramref name="range"/>, in address order.</summary>
    internal List<VmArea> InRange(VaddrRange range)
    {
        var result = new List<VmArea>();
        if (range.IsEmpty) return result;
        int i = Floor(range.Start);
        if (i < 0 || _areas.Values[i].Range.End <= range.Start) i++;
        for (; i < _areas.Count && _areas.Values[i].Range.Start < range.End; i++) result.Add(_areas.Values[i]);
        return result;
    }

    /// <summary>
    /// The lowest range of <paramref name="length"/> bytes, aligned to <paramref name="align"/> (a
    /// power of two), that no area overlaps and that ends at <see cref="End"/> at the latest.
    /// Address 0 is never part of it, so a null guest pointer always faults.
    /// </summary>
    /// <returns>False when no such range exists.</returns>
    internal bool TryFindFree(ulong length, ulong align, out VaddrRange range)
    {
        range = default;
        ulong candidate = Math.Max(align, Paging.PageSize); // the first aligned address past 0
        foreach (VmArea a in _areas.Values)
        {
            if (a.Range.Start >= candidate && a.Range.Start - candidate >= length) break; // fits below this area
            if (a.Range.End > candidate)
            {
                if (a.Range.End > ulong.MaxValue - (align - 1)) return false; // no aligned address after it
                candidate = (a.Range.End + align - 1) & ~(align - 1);
            }
        }
        if (candidate > End || End - candidate < length) return false;
        range = new VaddrRange(candidate, candidate + length);
        return true;
    }

    /// <summary>Adds <paramref name="area"/>.</summary>
    /// <exception cref="InvalidOperationException">The area is empty, passes <see cref="End"/> or overlaps an area of the set (a caller's bug).</exception>
    internal void Add(VmArea area)
    {
        if (area.Range.IsEmpty || area.Range.End > End || Overlaps(area.Range))
            throw new InvalidOperationException($"area {area.Range} is empty, past the end 0x{End:x} or overlaps another");
        _areas.Add(area.Range.Start, area);
    }

    /// <summary>Puts <paramref name="area"/> in place of the area with the same range (to change its rights).</summary>
    /// <exception cref="InvalidOperationException">No area has exactly that range (a caller's bug).</exception>
    internal void Replace(VmArea area)
    {
        if (!_areas.TryGetValue(area.Range.Start, out VmArea? old) || old.Range != area.Range)
            throw new InvalidOperationException($"no area {area.Range} to replace");
        _areas[area.Range.Start] = area;
    }

    /// <summary>
    /// Splits the area containing <paramref name="va"/> in two at <paramref name="va"/>, if there
    /// is one and it does not start there; a linear backend's offset moves with the second part.
    /// </summary>
    internal void SplitAt(ulong va)
    {
        if (!TryFind(va, out VmArea? area) || area.Range.Start == va) return;
        _areas[area.Range.Start] = area.Slice(area.Range.Start, va);
        _areas.Add(va, area.Slice(va, area.Range.End));
    }

    /// <summary>Splits the areas across the ends of <paramref name="range"/> and returns those inside it, in address order.</summary>
    internal List<VmArea> SplitAround(VaddrRange range)
    {
        SplitAt(range.Start);
        SplitAt(range.End);
        return InRange(range);
    }

    /// <summary>Removes every area part inside <paramref name="range"/>, splitting the areas across its ends; returns the parts removed.</summary>
    internal List<VmArea> Remove(VaddrRange range)
    {
        List<VmArea> inside = SplitAround(range);
        foreach (VmArea area in inside) _areas.Remove(area.Range.Start);
        return inside;
    }

    /// <summary>The index of the last area starting at or below <paramref name="va"/>, or -1.</summary>
    private int Floor(ulong va)
    {
        IList<ulong> keys = _areas.Keys;
        int lo = 0, hi = keys.Count - 1, found = -1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >> 1;
            if (keys[mid] <= va) { found = mid; lo = mid + 1; }
            else hi = mid - 1;
        }
        return found;
    }
}
