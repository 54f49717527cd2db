namespace UVm.PageTable;

/// <summary>
/// The pages of one table whose leaf entries changed since a mark: what a reset in place must
/// look at, and all it must look at. Cursors record into it when they commit a batch (the host
/// applied it), so a batch the host refused and that was undone leaves no trace.
/// </summary>
/// <remarks>
/// <para>Pages are kept as one 512-bit map per 2 MiB region that changed, so recording and
/// reading cost follow the changes, not the size of the space.</para>
/// <para>Thread-safe: cursors of disjoint ranges commit in parallel. Its lock is the innermost
/// of the page-table layer: taken under node locks, nothing is taken under it.</para>
/// </remarks>
internal sealed class PtChangeLog
{
    private const int WordsPerRegion = Paging.EntriesPerNode / 64;
    private const int HugeShift = Paging.PageShift + 9;
    private readonly Dictionary<ulong, ulong[]> _regions = new(); // guarded by itself

    /// <summary>
    /// What the table was equal to when the log was last cleared (a snapshot's frozen table), or
    /// null when the log is not measured against anything. Set and read under the lock of the
    /// whole table (the reset and capture that set it hold it).
    /// </summary>
    internal object? Baseline { get; set; }

    /// <summary>Notes that the leaves covering <c>[va, va + size)</c> changed.</summary>
    internal void Record(ulong va, ulong size)
    {
        lock (_regions)
        {
            ulong end = va + size;
            while (va < end)
            {
                ulong region = va >> HugeShift;
                ulong regionEnd = (region + 1) << HugeShift;
                ulong stop = Math.Min(end, regionEnd);
                if (!_regions.TryGetValue(region, out ulong[]? bits)) _regions[region] = bits = new ulong[WordsPerRegion];
                for (ulong p = va; p < stop; p += Paging.PageSize)
                {
                    int i = (int)((p >> Paging.PageShift) & (Paging.EntriesPerNode - 1));
                    bits[i >> 6] |= 1UL << (i & 63);
                }
                va = stop;
            }
        }
    }

    /// <summary>The changed pages, in address order.</summary>
    internal List<ulong> Pages()
    {
        var pages = new List<ulong>();
        lock (_regions)
        {
            foreach ((ulong region, ulong[] bits) in _regions)
            {
                for (int w = 0; w < WordsPerRegion; w++)
                {
                    for (ulong word = bits[w]; word != 0; word &= word - 1)
                    {
                        int i = (w << 6) + System.Numerics.BitOperations.TrailingZeroCount(word);
                        pages.Add((region << HugeShift) + ((ulong)i << Paging.PageShift));
                    }
                }
            }
        }
        pages.Sort();
        return pages;
    }

    /// <summary>Forgets every change and measures from <paramref name="baseline"/> on.</summary>
    internal void Clear(object? baseline)
    {
        lock (_regions) _regions.Clear();
        Baseline = baseline;
    }
}
