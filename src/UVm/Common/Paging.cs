namespace UVm;

/// <summary>
/// The paging geometry UVm models: x86-64 shaped, 4 levels of 512 entries, 4 KiB base pages,
/// 2 MiB huge pages at level 2.
/// </summary>
public static class Paging
{
    /// <summary>Size of a base page and of a frame, in bytes.</summary>
    public const ulong PageSize = 4096;
    /// <summary>log2 of <see cref="PageSize"/>.</summary>
    public const int PageShift = 12;
    /// <summary>Number of page-table levels.</summary>
    public const int NrLevels = 4;
    /// <summary>Entries per page-table node.</summary>
    public const int EntriesPerNode = 512;
    /// <summary>Size of a level-2 (huge) page, in bytes.</summary>
    public const ulong HugePageSize = 2UL << 20;
    /// <summary>The largest user space a page table of this geometry can describe (the lower half of 48 bits).</summary>
    public const ulong MaxUserSpace = 1UL << 47;

    /// <summary>Bytes covered by one entry of a node at <paramref name="level"/> (1 = base page).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="level"/> is not from 1 to <see cref="NrLevels"/>.</exception>
    public static ulong PageSizeAt(int level)
    {
        if ((uint)(level - 1) >= NrLevels) ThrowHelper.OutOfRange($"levels are 1 to {NrLevels}, not {level}", nameof(level));
        return 1UL << (PageShift + 9 * (level - 1));
    }

    /// <summary><see cref="PageSizeAt"/> without the check, for the page table's own walks (levels it knows are valid).</summary>
    internal static ulong SizeAt(int level) => 1UL << (PageShift + 9 * (level - 1));

    /// <summary>Whether <paramref name="value"/> is a multiple of <see cref="PageSize"/>.</summary>
    public static bool IsAligned(ulong value) => (value & (PageSize - 1)) == 0;

    internal static int Index(ulong va, int level) => (int)((va >> (PageShift + 9 * (level - 1))) & 511);

    internal static ulong AlignDown(ulong value, ulong align) => value & ~(align - 1);
}

/// <summary>A half-open range of guest virtual addresses, <c>[Start, End)</c>.</summary>
/// <param name="Start">First address in the range.</param>
/// <param name="End">First address past the range.</param>
public readonly record struct VaddrRange(ulong Start, ulong End)
{
    /// <summary>Number of bytes in the range (0 when empty or reversed).</summary>
    public ulong Length => End > Start ? End - Start : 0;

    /// <summary>Whether the range holds no address.</summary>
    public bool IsEmpty => End <= Start;

    /// <summary>Whether <paramref name="va"/> lies in the range.</summary>
    public bool Contains(ulong va) => va >= Start && va < End;

    /// <summary>The range <c>[start, start + length)</c>; throws <see cref="UVmException"/> (<see cref="UVmError.InvalidArgs"/>) when that overflows.</summary>
    public static VaddrRange FromLength(ulong start, ulong length)
    {
        ulong end = start + length;
        if (end < start) ThrowHelper.UVm(UVmError.InvalidArgs, $"range 0x{start:x} + 0x{length:x} overflows");
        return new VaddrRange(start, end);
    }

    /// <inheritdoc/>
    public override string ToString() => $"[0x{Start:x}, 0x{End:x})";
}
