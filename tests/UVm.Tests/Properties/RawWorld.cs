using UVm.Frames;
using UVm.Io;
using UVm.Spaces;
using UVm.Tests.Reliability;
using static UVm.Tests.Properties.Extremes;

namespace UVm.Tests.Properties;

/// <summary>
/// A small space to feed extreme integers to, with something at every edge: frames at guest
/// address 0 and in the last two pages, read-only and no-access pages beside writable ones, a
/// hole between mapped pages, a segment across a 2 MiB (page-table node) boundary, I/O memory,
/// and an empty scratch range for cases that map. Every mapped byte holds <see cref="Pattern"/>,
/// so reads can be checked to the byte. The space is activated on the creating thread.
/// </summary>
public sealed class RawWorld : IDisposable
{
    private const ulong MiB = 1UL << 20;
    public const ulong Size = 16 * MiB;
    public const ulong RunVa = 1 * MiB;            // 4 RW pages, a hole, R, RW, None
    public const ulong HoleVa = RunVa + 4 * Page;
    public const ulong ReadOnlyVa = RunVa + 5 * Page;
    public const ulong NoAccessVa = RunVa + 7 * Page;
    public const ulong SegmentVa = 2 * MiB - 2 * Page; // 4 RW pages across the 2 MiB boundary
    public const ulong IoVa = 6 * MiB;                 // 2 RW pages of I/O memory
    public const ulong ScratchStart = 8 * MiB, ScratchEnd = 12 * MiB;
    public const ulong TailVa = Size - 2 * Page;       // 2 RW pages up to the end of the space

    /// <summary>Mapped pages and their rights.</summary>
    public readonly SortedDictionary<ulong, PageFlags> Rights = new();

    public RawWorld(FramePool pool)
    {
        Pool = pool;
        Space = new VmSpace(new VmSpaceOptions { Size = Size, Pool = pool });
        Space.Activate();
        MapPage(0, PageFlags.RW);
        for (ulong i = 0; i < 4; i++) MapPage(RunVa + i * Page, PageFlags.RW);
        MapPage(ReadOnlyVa, PageFlags.R);
        MapPage(RunVa + 6 * Page, PageFlags.RW);
        MapPage(NoAccessVa, PageFlags.None);
        using (USegment seg = pool.AllocSegment(4))
        {
            var bytes = new byte[seg.Size];
            for (ulong i = 0; i < seg.Size; i++) bytes[i] = Pattern(SegmentVa + i);
            var w = seg.Writer();
            w.Write(bytes);
            using CursorMut c = Space.CursorMut(VaddrRange.FromLength(SegmentVa, seg.Size));
            c.Map(seg, PageProperty.New(PageFlags.RW));
        }
        for (ulong i = 0; i < 4; i++) Rights[SegmentVa + i * Page] = PageFlags.RW;
        IoRegion = IoMem.CreateAnonymous(4 * Page);
        using (CursorMut c = Space.CursorMut(VaddrRange.FromLength(IoVa, 2 * Page))) c.MapIoMem(IoRegion, PageProperty.New(PageFlags.RW), 2 * Page, 0);
        var io = new byte[2 * Page];
        for (ulong i = 0; i < (ulong)io.Length; i++) io[i] = Pattern(IoVa + i);
        if (!Harness.Write(Space, IoVa, io).IsOk) throw new InvalidOperationException("could not fill the I/O memory");
        Rights[IoVa] = Rights[IoVa + Page] = PageFlags.RW;
        MapPage(TailVa, PageFlags.RW);
        MapPage(TailVa + Page, PageFlags.RW);
    }

    public FramePool Pool { get; }
    public VmSpace Space { get; }
    public IoMem IoRegion { get; }

    /// <summary>
    /// The byte every mapped guest address holds: no NUL in odd pages (long strings run into a
    /// fault or a limit), a NUL every 97 bytes in even pages.
    /// </summary>
    public static byte Pattern(ulong va)
    {
        ulong off = va & (Page - 1), page = va >> 12;
        if (page % 2 == 0 && off % 97 == 50) return 0;
        return (byte)(((page * 7 + off * 13) % 255) + 1);
    }

    /// <summary>The rights of the page holding <paramref name="va"/>; null where nothing is mapped.</summary>
    public PageFlags? RightsAt(ulong va) => Rights.TryGetValue(va & ~(Page - 1), out PageFlags f) ? f : null;

    /// <summary>Whether a fallible access of kind <paramref name="write"/> succeeds at <paramref name="va"/> (the host lets writes imply reads).</summary>
    public bool Allows(ulong va, bool write) => RightsAt(va) is { } f && (write ? (f & PageFlags.W) != 0 : (f & (PageFlags.R | PageFlags.W)) != 0);

    /// <summary>Bytes a fallible access of <paramref name="len"/> bytes from <paramref name="va"/> gets through before the first page that refuses it.</summary>
    public ulong Reach(ulong va, ulong len, bool write)
    {
        ulong done = 0;
        while (done < len)
        {
            ulong at = va + done;
            if (!Allows(at, write)) return done;
            done += Math.Min(len - done, Page - (at & (Page - 1)));
        }
        return done;
    }

    private void MapPage(ulong va, PageFlags flags)
    {
        var bytes = new byte[Page];
        for (ulong i = 0; i < Page; i++) bytes[i] = Pattern(va + i);
        Harness.MapFrame(Space, va, bytes, flags);
        Rights[va] = flags;
    }

    public void Dispose()
    {
        VmSpace.Deactivate();
        Space.Dispose();
        IoRegion.Dispose();
    }
}
