using NUnit.Framework;
using UVm.Frames;
using UVm.Host;
using UVm.PageTable;
using UVm.Spaces;
using UVm.Tests.Reliability;
using UVm.Interop;

namespace UVm.Tests.Core;

/// <summary>
/// The mirror checker is itself checked: the host is made to disagree with the page table on
/// purpose, with raw <c>mmap</c>/<c>mprotect</c> calls over the arena (or, for entries no public
/// call can make, with the page-table cursor beneath the public ones), and each disagreement
/// must come back as exactly one difference of the right kind over exactly the right range.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class MirrorChecker : SpaceFixture
{
    private const ulong Va = 16 * MiB;
    private const int RW_ = Libc.PROT_READ | Libc.PROT_WRITE;

    private HostFileId PoolFile => HostFileId.FromStat(Pool.FileIdentity);

    private static MirrorMapping InPool(PageFlags rights, ulong paddr, HostFileId pool) =>
        new(MirrorMappingKind.File, rights, true, pool, paddr, paddr);

    /// <summary>Replaces the host mapping of <c>[va, va + len)</c> behind UVm's back.</summary>
    private void RawMap(ulong va, ulong len, int prot, int flags, int fd, ulong offset)
    {
        nint at = Space.HostBase + (nint)va;
        nint got = Libc.Mmap(at, (nuint)len, prot, flags | Libc.MAP_FIXED, fd, (long)offset);
        Assert.That(got, Is.EqualTo(at), "the raw mmap failed");
    }

    private void RawProtect(ulong va, ulong len, int prot) =>
        Assert.That(Libc.Mprotect(Space.HostBase + (nint)va, (nuint)len, prot), Is.Zero, "the raw mprotect failed");

    /// <summary>Asserts that the checker finds exactly one difference, and returns it.</summary>
    private MirrorDifference TheOnlyDifference()
    {
        MirrorReport report = HostMirror.Compare(Space);
        Assert.That(report.TotalCount, Is.EqualTo(1), "exactly one difference expected:\n" + report);
        Assert.That(report, Has.Count.EqualTo(1));
        return report[0];
    }

    private USegment MapSegment(ulong va, ulong frames, PageProperty prop)
    {
        using USegment segment = Pool.AllocSegment(frames);
        using (CursorMut c = Space.CursorMut(Span(va, segment.Size))) c.Map(segment, prop);
        return segment;
    }

    private IoMem MapIo(ulong va, IoMem io, PageProperty prop)
    {
        using CursorMut c = Space.CursorMut(Span(va, io.Size));
        c.MapIoMem(io, prop, io.Size, 0);
        return io;
    }

    /// <summary>A memfd of <paramref name="pages"/> pages, closed after the test (regions keep duplicates).</summary>
    private int Memfd(ulong pages)
    {
        int fd = Libc.MemfdCreate("mirror-checker", Libc.MFD_CLOEXEC);
        Assert.That(fd, Is.GreaterThanOrEqualTo(0));
        Assert.That(Libc.Ftruncate(fd, (long)(pages * Page)), Is.Zero);
        Later(new FdCloser(fd));
        return fd;
    }

    private sealed class FdCloser(int fd) : IDisposable
    {
        public void Dispose() => Libc.Close(fd);
    }

    [Test]
    public void A_space_the_host_mirrors_reports_nothing()
    {
        using (UFrame r = Pool.AllocFrame()) MapAt(Va, r, R);
        using (UFrame rx = Pool.AllocFrame()) MapAt(Va + Page, rx, PageProperty.New(PageFlags.RX));
        MapSegment(Va + 4 * Page, 4, RW);
        IoMem io = MapIo(Va + 16 * Page, Later(IoMem.CreateAnonymous(4 * Page)), R);
        IoMem file = Later(IoMem.FromFile(Memfd(8), 2 * Page, 4 * Page));
        MapIo(Va + 32 * Page, file, RW);
        MapIo(64 * MiB, Later(IoMem.CreateAnonymous(2 * Huge)), RW); // two 2 MiB slots

        MirrorReport report = HostMirror.Compare(Space);

        Assert.That(report, Is.Empty, report.ToString());
        Assert.That(report.TotalCount, Is.Zero);
        Assert.That(report.IsTruncated, Is.False);
        Assert.That(report.ToString(), Is.EqualTo("the host mirrors the page table"));
        Assert.That(Space.CheckHostMirror(), Is.Empty);
        Assert.DoesNotThrow(() => HostMirror.Verify(Space));
        Assert.That(Harness.MirrorDiffs(Space), Is.Empty);
        Assert.That(io.IsOpen && file.IsOpen, Is.True);
    }

    [Test]
    public void A_host_split_of_one_mapping_changes_nothing()
    {
        MapSegment(Va, 3, RW);
        int before = Space.CountHostMappings();
        // MADV_NOHUGEPAGE changes flags /proc/self/maps does not print: the kernel splits the
        // mapping in three lines that read the same, with continuing offsets.
        const int MADV_NOHUGEPAGE = 15;
        Assert.That(Libc.Madvise(Space.HostBase + (nint)(Va + Page), (nuint)Page, MADV_NOHUGEPAGE), Is.Zero);
        Assert.That(Space.CountHostMappings(), Is.EqualTo(before + 2), "the host did not split the mapping");

        Assert.That(HostMirror.Compare(Space), Is.Empty);
    }

    [Test]
    public void Wrong_frame_is_WrongBacking()
    {
        using UFrame left = Pool.AllocFrame(), mapped = Pool.AllocFrame(), right = Pool.AllocFrame(), other = Pool.AllocFrame();
        MapAt(Va - Page, left);
        MapAt(Va, mapped);
        MapAt(Va + Page, right);
        RawMap(Va, Page, RW_, Libc.MAP_SHARED, Pool.Fd, other.Paddr);

        MirrorDifference d = TheOnlyDifference();

        Assert.That(d.Kind, Is.EqualTo(MirrorDifferenceKind.WrongBacking));
        Assert.That(d.Range, Is.EqualTo(Span(Va, Page)));
        Assert.That(d.Expected, Is.EqualTo(InPool(PageFlags.RW, mapped.Paddr, PoolFile)));
        Assert.That(d.Actual, Is.EqualTo(InPool(PageFlags.RW, other.Paddr, PoolFile)));
        Assert.That(d.ToString(), Does.StartWith($"WrongBacking at {Span(Va, Page)}: page table rw-s"));
        Assert.That(d.ToString(), Does.Contain($"offset 0x{other.Paddr:x} (paddr 0x{other.Paddr:x})"));
    }

    [Test]
    public void Wrong_file_offset_of_an_io_mapping_is_WrongBacking()
    {
        IoMem io = Later(IoMem.FromFile(Memfd(8), 2 * Page, 4 * Page));
        MapIo(Va, io, R);
        // Page 1 of the region shows page 3's bytes.
        RawMap(Va + Page, Page, Libc.PROT_READ, Libc.MAP_SHARED, io.Fd, io.FileOffset + 3 * Page);

        MirrorDifference d = TheOnlyDifference();

        HostFileId file = HostFileId.FromStat(io.Identity);
        Assert.That(d.Kind, Is.EqualTo(MirrorDifferenceKind.WrongBacking));
        Assert.That(d.Range, Is.EqualTo(Span(Va + Page, Page)));
        Assert.That(d.Expected, Is.EqualTo(new MirrorMapping(MirrorMappingKind.File, PageFlags.R, true, file, 3 * Page, io.Paddr + Page)));
        Assert.That(d.Actual, Is.EqualTo(new MirrorMapping(MirrorMappingKind.File, PageFlags.R, true, file, 5 * Page, io.Paddr + 3 * Page)));
    }

    [Test]
    public void Another_regions_file_is_WrongBacking()
    {
        IoMem a = MapIo(Va, Later(IoMem.CreateAnonymous(2 * Page)), RW);
        IoMem b = MapIo(Va + 8 * Page, Later(IoMem.CreateAnonymous(2 * Page)), RW);
        RawMap(Va, Page, RW_, Libc.MAP_SHARED, b.Fd, Page);

        MirrorDifference d = TheOnlyDifference();

        Assert.That(HostFileId.FromStat(a.Identity), Is.Not.EqualTo(HostFileId.FromStat(b.Identity)));
        Assert.That(d.Kind, Is.EqualTo(MirrorDifferenceKind.WrongBacking));
        Assert.That(d.Range, Is.EqualTo(Span(Va, Page)));
        Assert.That(d.Expected, Is.EqualTo(new MirrorMapping(MirrorMappingKind.File, PageFlags.RW, true, HostFileId.FromStat(a.Identity), 0, a.Paddr)));
        Assert.That(d.Actual, Is.EqualTo(new MirrorMapping(MirrorMappingKind.File, PageFlags.RW, true, HostFileId.FromStat(b.Identity), Page, b.Paddr + Page)));
    }

    [Test]
    public void Another_region_of_the_same_file_is_WrongBacking()
    {
        // Two regions over one file: same device and inode, the host maps the other region's part.
        int fd = Memfd(8);
        IoMem a = MapIo(Va, Later(IoMem.FromFile(fd, 0, 4 * Page)), RW);
        IoMem b = MapIo(Va + 8 * Page, Later(IoMem.FromFile(fd, 4 * Page, 4 * Page)), RW);
        RawMap(Va, Page, RW_, Libc.MAP_SHARED, fd, 4 * Page);

        MirrorDifference d = TheOnlyDifference();

        HostFileId file = HostFileId.FromStat(a.Identity);
        Assert.That(HostFileId.FromStat(b.Identity), Is.EqualTo(file));
        Assert.That(d.Kind, Is.EqualTo(MirrorDifferenceKind.WrongBacking));
        Assert.That(d.Range, Is.EqualTo(Span(Va, Page)));
        Assert.That(d.Expected, Is.EqualTo(new MirrorMapping(MirrorMappingKind.File, PageFlags.RW, true, file, 0, a.Paddr)));
        Assert.That(d.Actual, Is.EqualTo(new MirrorMapping(MirrorMappingKind.File, PageFlags.RW, true, file, 4 * Page, b.Paddr)));
    }

    /// <summary>Writes an untracked entry for <paramref name="paddr"/> at <paramref name="va"/>, without touching the host.</summary>
    private void UntrackedEntryOnly(ulong va, ulong paddr, PageProperty prop)
    {
        var pt = new PtCursor(Space.Table, va, va + Page, mutable: true);
        try
        {
            pt.MapUntrackedStep(paddr, va + Page, prop);
        }
        finally
        {
            pt.Release();
        }
    }

    [Test]
    public void An_entry_in_no_registered_region_is_reported_even_where_the_host_maps_that_regions_file()
    {
        // A region this space never registered: the entry names its Paddr, the host maps its
        // file at the offset that Paddr would stand for. The space cannot know that region.
        IoMem stranger = Later(IoMem.CreateAnonymous(Page));
        UntrackedEntryOnly(Va, stranger.Paddr, RW);
        RawMap(Va, Page, RW_, Libc.MAP_SHARED, stranger.Fd, 0);

        MirrorDifference d = TheOnlyDifference();

        Assert.That(d.Kind, Is.EqualTo(MirrorDifferenceKind.WrongBacking));
        Assert.That(d.Range, Is.EqualTo(Span(Va, Page)));
        Assert.That(d.Expected, Is.EqualTo(new MirrorMapping(MirrorMappingKind.Unresolved, PageFlags.RW, true, null, 0, stranger.Paddr)));
        Assert.That(d.Actual, Is.EqualTo(new MirrorMapping(MirrorMappingKind.File, PageFlags.RW, true, HostFileId.FromStat(stranger.Identity), 0, null)));
        Assert.That(d.ToString(), Does.Contain("names no frame of the pool and no registered I/O memory region"));
    }

    [Test]
    public void An_entry_in_no_region_at_all_is_Missing_where_the_host_has_the_reservation()
    {
        const ulong Nowhere = 1UL << 51; // far above any region's Paddr
        UntrackedEntryOnly(Va, Nowhere, R);

        MirrorDifference d = TheOnlyDifference();

        Assert.That(d.Kind, Is.EqualTo(MirrorDifferenceKind.Missing));
        Assert.That(d.Range, Is.EqualTo(Span(Va, Page)));
        Assert.That(d.Expected, Is.EqualTo(new MirrorMapping(MirrorMappingKind.Unresolved, PageFlags.R, true, null, 0, Nowhere)));
        Assert.That(d.Actual.Kind, Is.EqualTo(MirrorMappingKind.Reserved));
    }

    [Test]
    public void A_frame_past_the_end_of_the_pool_is_unresolved()
    {
        var pt = new PtCursor(Space.Table, Va, Va + Page, mutable: true);
        try
        {
            pt.MapBase(Pte.Leaf(Pool.Capacity, RW, 1));
        }
        finally
        {
            pt.Release();
        }
        try
        {
            MirrorDifference d = TheOnlyDifference();
            Assert.That(d.Kind, Is.EqualTo(MirrorDifferenceKind.Missing));
            Assert.That(d.Range, Is.EqualTo(Span(Va, Page)));
            Assert.That(d.Expected, Is.EqualTo(new MirrorMapping(MirrorMappingKind.Unresolved, PageFlags.RW, true, null, 0, Pool.Capacity)));
        }
        finally
        {
            // No frame to release: take the entry out before the space is disposed.
            var take = new PtCursor(Space.Table, Va, Va + Page, mutable: true);
            try
            {
                take.TakeNext(Page);
            }
            finally
            {
                take.Release();
            }
        }
    }

    [Test]
    public void A_reservation_over_a_mapped_page_is_Missing()
    {
        USegment s = MapSegment(Va, 3, RW);
        RawMap(Va + Page, Page, Libc.PROT_NONE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_NORESERVE, -1, 0);

        MirrorDifference d = TheOnlyDifference();

        Assert.That(d.Kind, Is.EqualTo(MirrorDifferenceKind.Missing));
        Assert.That(d.Range, Is.EqualTo(Span(Va + Page, Page)));
        Assert.That(d.Expected, Is.EqualTo(InPool(PageFlags.RW, s.Paddr + Page, PoolFile)));
        Assert.That(d.Actual, Is.EqualTo(new MirrorMapping(MirrorMappingKind.Reserved, PageFlags.None, false, null, 0, null)));
    }

    [Test]
    public void A_frame_over_a_hole_is_Extra()
    {
        using UFrame mapped = Pool.AllocFrame(), stray = Pool.AllocFrame();
        MapAt(Va, mapped);
        RawMap(Va + 2 * Page, Page, Libc.PROT_READ, Libc.MAP_SHARED, Pool.Fd, stray.Paddr);

        MirrorDifference d = TheOnlyDifference();

        Assert.That(d.Kind, Is.EqualTo(MirrorDifferenceKind.Extra));
        Assert.That(d.Range, Is.EqualTo(Span(Va + 2 * Page, Page)));
        Assert.That(d.Expected.Kind, Is.EqualTo(MirrorMappingKind.Reserved));
        Assert.That(d.Actual, Is.EqualTo(InPool(PageFlags.R, stray.Paddr, PoolFile)));
    }

    [Test]
    public void Anonymous_memory_over_a_hole_is_Extra()
    {
        RawMap(Va, 2 * Page, RW_, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS, -1, 0);

        MirrorDifference d = TheOnlyDifference();

        Assert.That(d.Kind, Is.EqualTo(MirrorDifferenceKind.Extra));
        Assert.That(d.Range, Is.EqualTo(Span(Va, 2 * Page)));
        Assert.That(d.Actual, Is.EqualTo(new MirrorMapping(MirrorMappingKind.Anonymous, PageFlags.RW, false, null, 0, null)));
    }

    [Test]
    public void Added_write_right_is_WrongRights_over_exactly_the_pages_changed()
    {
        USegment s = MapSegment(Va, 5, R);
        RawProtect(Va + Page, 3 * Page, RW_);

        MirrorDifference d = TheOnlyDifference();

        Assert.That(d.Kind, Is.EqualTo(MirrorDifferenceKind.WrongRights));
        Assert.That(d.Range, Is.EqualTo(Span(Va + Page, 3 * Page)), "three neighbouring pages differing alike are one difference");
        Assert.That(d.Expected, Is.EqualTo(InPool(PageFlags.R, s.Paddr + Page, PoolFile)));
        Assert.That(d.Actual, Is.EqualTo(InPool(PageFlags.RW, s.Paddr + Page, PoolFile)));
    }

    [Test]
    public void A_private_mapping_of_the_right_frame_is_WrongBacking()
    {
        using UFrame f = Pool.AllocFrame();
        MapAt(Va, f, R);
        RawMap(Va, Page, Libc.PROT_READ, Libc.MAP_PRIVATE, Pool.Fd, f.Paddr);

        MirrorDifference d = TheOnlyDifference();

        Assert.That(d.Kind, Is.EqualTo(MirrorDifferenceKind.WrongBacking));
        Assert.That(d.Actual, Is.EqualTo(InPool(PageFlags.R, f.Paddr, PoolFile) with { Shared = false }));
    }

    [Test]
    public void A_difference_after_many_agreeing_mappings_is_the_only_one_reported()
    {
        // 40 host mappings (rights alternate), then one page of the 31st made wrong.
        USegment s = MapSegment(Va, 40, R);
        for (ulong i = 1; i < 40; i += 2)
        {
            using CursorMut c = Space.CursorMut(Span(Va + i * Page, Page));
            c.ProtectNext(Page, (ref PageFlags f, ref CachePolicy _) => f = PageFlags.RW);
        }
        Assert.That(HostMirror.Compare(Space), Is.Empty);
        RawProtect(Va + 30 * Page, Page, Libc.PROT_READ | Libc.PROT_EXEC);

        MirrorDifference d = TheOnlyDifference();

        Assert.That(d.Kind, Is.EqualTo(MirrorDifferenceKind.WrongRights));
        Assert.That(d.Range, Is.EqualTo(Span(Va + 30 * Page, Page)));
        Assert.That(d.Expected, Is.EqualTo(InPool(PageFlags.R, s.Paddr + 30 * Page, PoolFile)));
        Assert.That(d.Actual, Is.EqualTo(InPool(PageFlags.RX, s.Paddr + 30 * Page, PoolFile)));
    }

    [Test]
    public void Differences_beyond_the_cap_are_counted_and_each_is_exact()
    {
        USegment s = MapSegment(Va, 40, R);
        for (ulong i = 0; i < 40; i += 2) RawProtect(Va + i * Page, Page, RW_); // 20 separate differences

        MirrorReport capped = HostMirror.Compare(Space);
        MirrorReport all = HostMirror.Compare(Space, int.MaxValue);
        MirrorReport countOnly = HostMirror.Compare(Space, 0);

        Assert.That(capped, Has.Count.EqualTo(HostMirror.DefaultMaxDifferences));
        Assert.That(capped.TotalCount, Is.EqualTo(20));
        Assert.That(capped.IsTruncated, Is.True);
        Assert.That(capped.ToString(), Does.EndWith("... and 4 more (20 differences in all)"));
        Assert.That(all, Has.Count.EqualTo(20));
        Assert.That(all.IsTruncated, Is.False);
        Assert.That(countOnly, Is.Empty);
        Assert.That(countOnly.TotalCount, Is.EqualTo(20));
        Assert.That(Space.CheckHostMirror(), Has.Count.EqualTo(HostMirror.DefaultMaxDifferences));
        for (int k = 0; k < 20; k++)
        {
            ulong va = Va + (ulong)(2 * k) * Page;
            var expected = new MirrorDifference(MirrorDifferenceKind.WrongRights, Span(va, Page),
                InPool(PageFlags.R, s.Paddr + (va - Va), PoolFile), InPool(PageFlags.RW, s.Paddr + (va - Va), PoolFile));
            Assert.That(all[k], Is.EqualTo(expected), $"difference {k}");
            if (k < capped.Count) Assert.That(capped[k], Is.EqualTo(expected), $"listed difference {k}");
        }
    }

    [Test]
    public void Harness_reports_a_mismatch_at_once_and_every_time()
    {
        using UFrame f = Pool.AllocFrame();
        MapAt(Va, f, R);
        RawProtect(Va, Page, RW_);

        for (int i = 0; i < 3; i++)
        {
            IReadOnlyList<MirrorDifference> diffs = Harness.MirrorDiffs(Space);
            Assert.That(diffs, Has.Count.EqualTo(1));
            Assert.That(diffs[0].Kind, Is.EqualTo(MirrorDifferenceKind.WrongRights));
        }
        Assert.Throws<InvalidOperationException>(() => HostMirror.Verify(Space));
    }

    [Test]
    public void A_disposed_space_cannot_be_compared()
    {
        VmSpace other = NewSpace(64 * MiB);
        other.Dispose();
        Assert.Throws<ObjectDisposedException>(() => HostMirror.Compare(other));
        Assert.Throws<ObjectDisposedException>(() => other.CheckHostMirror());
        Assert.Throws<ArgumentOutOfRangeException>(() => HostMirror.Compare(Space, -1));
    }

    [Test]
    public void Comparing_while_this_thread_holds_a_cursor_throws_and_holds_nothing()
    {
        using (CursorMut c = Space.CursorMut(Span(0x40_0000, Page)))
            Assert.Throws<InvalidOperationException>(() => HostMirror.Compare(Space), "it would wait on this thread's own cursor");
        Assert.That(HostMirror.Compare(Space), Is.Empty, "the refused call left nothing locked");
    }

    [Test, CancelAfter(60_000)]
    public void Comparing_while_another_thread_disposes_the_space_is_a_report_or_ObjectDisposed()
    {
        int reports = 0, disposed = 0;
        for (int round = 0; round < 50; round++)
        {
            VmSpace other = new(new VmSpaceOptions { Size = 64 * MiB, Pool = Pool });
            using (UFrame f = Pool.AllocFrame()) MapAt(other, 0x10_0000, f);
            var disposer = Deadlines.Background("mirror dispose", other.Dispose);
            disposer.Start();
            try
            {
                MirrorReport r = HostMirror.Compare(other);
                Assert.That(r, Is.Empty, "a space compared before it went is mirrored");
                reports++;
            }
            catch (ObjectDisposedException)
            {
                disposed++;
            }
            Deadlines.Join(disposer, "the disposer");
        }
        Assert.That(reports + disposed, Is.EqualTo(50));
    }
}
