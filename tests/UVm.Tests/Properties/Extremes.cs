using FsCheck;
using FsCheck.Fluent;

namespace UVm.Tests.Properties;

/// <summary>
/// The generator module for integers: the values where size, address and count arithmetic
/// breaks (0, 1, a page and its neighbours, 2 MiB ± 1, 2^47 = the user space, 2^52 = the
/// physical address width, 2^63 = the sign bit of <c>off_t</c>, 2^64 - 1 and - 2), the same
/// around whatever a case is about (a space's size, a pool's capacity, a mapped address), and
/// random values of every magnitude.
/// </summary>
public static class Extremes
{
    public const ulong Page = Paging.PageSize;
    public const ulong Huge = Paging.HugePageSize;

    /// <summary>The fixed extremes, and their page-aligned neighbours (an aligned value passes the alignment checks and goes deeper).</summary>
    public static readonly ulong[] Anchors = BuildAnchors();

    private static ulong[] BuildAnchors()
    {
        var set = new SortedSet<ulong> { 0, 1, 2, 4095, 4096, 4097, 8192, ulong.MaxValue, ulong.MaxValue - 1, ulong.MaxValue - Page + 1 };
        foreach (int bit in new[] { 21, 47, 52, 63 })
        {
            ulong x = 1UL << bit;
            set.UnionWith(new[] { x - 1, x, x + 1, x - Page, x + Page });
        }
        return set.ToArray();
    }

    /// <summary><paramref name="x"/> and its neighbours at 1 byte and 1 page, wrapping around 2^64 as the library's arithmetic would.</summary>
    public static IEnumerable<ulong> Around(ulong x) => unchecked(new[] { x, x - 1, x + 1, x - Page, x + Page, x - Page - 1, x + Page + 1 });

    /// <summary>A random value of random magnitude: a bit length 0..64, then a value below 2^length (so small and huge values are equally likely).</summary>
    public static readonly Gen<ulong> AnyMagnitude =
        Gen.Choose(0, 64).SelectMany(bits => Raw64.Select(r => bits == 64 ? r : r & ((1UL << bits) - 1)));

    /// <summary>A uniformly random 64-bit value (four 16-bit draws).</summary>
    public static Gen<ulong> Raw64 =>
        Gen.Zip(Gen.Zip(Gen.Choose(0, 0xFFFF), Gen.Choose(0, 0xFFFF)), Gen.Zip(Gen.Choose(0, 0xFFFF), Gen.Choose(0, 0xFFFF)))
           .Select(t => ((ulong)(uint)t.Item1.Item1 << 48) | ((ulong)(uint)t.Item1.Item2 << 32) | ((ulong)(uint)t.Item2.Item1 << 16) | (uint)t.Item2.Item2);

    /// <summary>A random page-aligned value of random magnitude.</summary>
    public static readonly Gen<ulong> AlignedAnyMagnitude = AnyMagnitude.Select(v => v & ~(Page - 1));

    /// <summary>
    /// The extreme-integer generator: the fixed anchors, values around <paramref name="near"/>
    /// (the sizes and addresses of what is being tested), and random values of any magnitude,
    /// aligned or not.
    /// </summary>
    public static Gen<ulong> U64(params ulong[] near)
    {
        var parts = new List<(int, Gen<ulong>)>
        {
            (4, Gen.Elements(Anchors)),
            (2, AnyMagnitude),
            (2, AlignedAnyMagnitude),
        };
        if (near.Length > 0) parts.Add((5, Gen.Elements(near.SelectMany(Around).Distinct().ToArray())));
        return Gen.Frequency(parts.ToArray());
    }

    /// <summary>
    /// One argument of a call with several: a sensible value half the time, an extreme one the
    /// other half, so cases have one argument out of range, several at once, or none.
    /// </summary>
    public static Gen<ulong> Mixed(Gen<ulong> sensible, params ulong[] near) => Gen.Frequency((1, sensible), (1, U64(near)));

    /// <summary>A page-aligned value in <c>[from, to)</c> (both aligned, <paramref name="to"/> above <paramref name="from"/>).</summary>
    public static Gen<ulong> AlignedIn(ulong from, ulong to)
    {
        ulong pages = (to - from) / Page;
        return Gen.Choose(0, (int)Math.Min(pages - 1, int.MaxValue)).Select(i => from + (ulong)i * Page);
    }

    /// <summary>The extreme 32-bit integers: 0, ±1, the small counts and powers of two around the limits a member takes, int.MinValue and MaxValue.</summary>
    public static Gen<int> Int32(params int[] near)
    {
        var set = new SortedSet<int> { int.MinValue, int.MinValue + 1, -4097, -4096, -2, -1, 0, 1, 2, 3, 4, 511, 512, 513, 4095, 4096, 4097, int.MaxValue - 1, int.MaxValue };
        foreach (int bit in new[] { 16, 21, 30 }) set.UnionWith(new[] { (1 << bit) - 1, 1 << bit, (1 << bit) + 1 });
        foreach (int n in near) set.UnionWith(unchecked(new[] { n - 1, n, n + 1 }));
        return Gen.Frequency(
            (3, Gen.Elements(set.ToArray())),
            (1, Raw64.Select(r => unchecked((int)r))),
            (1, Gen.Choose(-1024, 1024)));
    }

    /// <summary>A small span length in bytes (for buffers the test allocates): 0, 1, around a page, or random up to <paramref name="max"/>.</summary>
    public static Gen<int> BufferLength(int max) =>
        Gen.Frequency(
            (2, Gen.Elements(0, 1, 2, 7, 8, 9, 4095, 4096, 4097, 8191, 8192, 8193).Where(n => n <= max)),
            (1, Gen.Choose(0, max)));

    /// <summary>Hex, for messages.</summary>
    public static string Hex(ulong v) => $"0x{v:x}";
}
