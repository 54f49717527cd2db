namespace UVm.Areas;

/// <summary>
/// Which pages of an address space are watched for writes, and which of those were written
/// since their watch was last restarted (<see cref="AddressSpace.ResetWriteWatch"/>).
/// </summary>
/// <remarks>
/// <para>The invariant that makes it exact: a watched page that is not yet written has no write
/// access in the page table, so its first write faults; the fault marks it written before it
/// gets write access, and the policies that grant access to pages around it (fault-around,
/// copy-on-write windows, <see cref="AddressSpace.Protect"/>) leave watched unwritten pages
/// without it (<see cref="AddressSpace.RightsFor"/>). Pages of I/O memory are not watched.</para>
/// <para>The watched ranges change under the area lock held for writing and are read under it
/// held for reading; the written pages are marked by faults running in parallel under the read
/// lock, so they have a lock of their own, taken after every other.</para>
/// </remarks>
internal sealed class WriteWatch
{
    private const int HugeShift = Paging.PageShift + 9;
    private readonly List<VaddrRange> _watched = new();            // disjoint, in address order; see remarks
    private readonly Dictionary<ulong, ulong[]> _written = new();  // 2 MiB region -> one bit per page; guarded by itself

    /// <summary>Whether any range is watched (when not, nothing else needs asking).</summary>
    internal bool IsActive => _watched.Count > 0;

    /// <summary>Whether <paramref name="page"/> is watched and not written since its watch restarted.</summary>
    internal bool IsUnwritten(ulong page) => Watches(page) && !IsWritten(page);

    /// <summary>Marks <paramref name="page"/> written; true when it is watched and was not written before.</summary>
    internal bool MarkWritten(ulong page)
    {
        if (!Watches(page)) return false;
        lock (_written)
        {
            ulong region = page >> HugeShift;
            if (!_written.TryGetValue(region, out ulong[]? bits)) _written[region] = bits = new ulong[Paging.EntriesPerNode / 64];
            (int word, ulong bit) = BitOf(page);
            if ((bits[word] & bit) != 0) return false;
            bits[word] |= bit;
            return true;
        }
    }

    /// <summary>Forgets that <paramref name="page"/> was written (its write was not resolved after all).</summary>
    internal void Unmark(ulong page)
    {
        lock (_written)
        {
            if (!_written.TryGetValue(page >> HugeShift, out ulong[]? bits)) return;
            (int word, ulong bit) = BitOf(page);
            bits[word] &= ~bit;
        }
    }

    /// <summary>Watches <paramref name="range"/> from now on, every page of it unwritten.</summary>
    internal void Restart(VaddrRange range)
    {
        lock (_written)
        {
            foreach (ulong region in _written.Keys.ToArray())
            {
                ulong[] bits = _written[region];
                for (ulong page = Math.Max(region << HugeShift, range.Start); page < Math.Min((region + 1) << HugeShift, range.End); page += Paging.PageSize)
                {
                    (int word, ulong bit) = BitOf(page);
                    bits[word] &= ~bit;
                }
                if (Array.TrueForAll(bits, w => w == 0)) _written.Remove(region);
            }
        }
        // Merge the range with the watched ranges it overlaps or touches.
        ulong start = range.Start, end = range.End;
        _watched.RemoveAll(w =>
        {
            if (w.End < start || w.Start > end) return false;
            start = Math.Min(start, w.Start);
            end = Math.Max(end, w.End);
            return true;
        });
        int at = _watched.FindIndex(w => w.Start > start);
        _watched.Insert(at < 0 ? _watched.Count : at, new VaddrRange(start, end));
    }

    /// <summary>The pages of <paramref name="range"/> written since their watch restarted, in address order.</summary>
    internal List<ulong> Written(VaddrRange range)
    {
        var pages = new List<ulong>();
        lock (_written)
        {
            foreach ((ulong region, ulong[] bits) in _written)
            {
                ulong regionStart = region << HugeShift;
                if (regionStart + Paging.HugePageSize <= range.Start || regionStart >= range.End) continue;
                for (int w = 0; w < bits.Length; w++)
                {
                    for (ulong word = bits[w]; word != 0; word &= word - 1)
                    {
                        ulong page = regionStart + ((ulong)((w << 6) + System.Numerics.BitOperations.TrailingZeroCount(word)) << Paging.PageShift);
                        if (range.Contains(page)) pages.Add(page);
                    }
                }
            }
        }
        pages.Sort();
        return pages;
    }

    private bool Watches(ulong page)
    {
        int lo = 0, hi = _watched.Count - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >> 1;
            VaddrRange w = _watched[mid];
            if (page < w.Start) hi = mid - 1;
            else if (page >= w.End) lo = mid + 1;
            else return true;
        }
        return false;
    }

    private bool IsWritten(ulong page)
    {
        lock (_written)
        {
            if (!_written.TryGetValue(page >> HugeShift, out ulong[]? bits)) return false;
            (int word, ulong bit) = BitOf(page);
            return (bits[word] & bit) != 0;
        }
    }

    private static (int Word, ulong Bit) BitOf(ulong page)
    {
        int i = (int)((page >> Paging.PageShift) & (Paging.EntriesPerNode - 1));
        return (i >> 6, 1UL << (i & 63));
    }
}
