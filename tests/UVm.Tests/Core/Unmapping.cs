using NUnit.Framework;
using UVm.Frames;
using UVm.Spaces;

namespace UVm.Tests.Core;

/// <summary>Unmap removes what is mapped in a span, counts the frames, skips holes and dispatches before returning.</summary>
public sealed class Unmapping : SpaceFixture
{
    [Test]
    public void Unmap_returns_the_exact_number_of_frames()
    {
        using USegment seg = Pool.AllocSegment(5);
        using CursorMut c = Space.CursorMut(Span(0, 8 * Page));
        c.Map(seg, RW);
        c.Jump(0);
        Assert.That(c.Unmap(8 * Page), Is.EqualTo(5UL));
    }

    [Test]
    public void Unmap_twice_counts_zero_the_second_time()
    {
        using USegment seg = Pool.AllocSegment(4);
        MapAt(0x10000, seg);

        Assert.That(UnmapAt(0x10000, seg.Size), Is.EqualTo(4UL));
        long syscalls = Space.HostStats.Syscalls;
        Assert.That(UnmapAt(0x10000, seg.Size), Is.Zero);
        Assert.That(Space.HostStats.Syscalls, Is.EqualTo(syscalls), "nothing left to unmap on the host");
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void Unmap_of_a_hole_is_allowed_and_counts_zero()
    {
        long syscalls = Space.HostStats.Syscalls;
        Assert.That(UnmapAt(0x200000, 64 * Page), Is.Zero);
        Assert.That(UnmapAt(0, Space.Size), Is.Zero);
        Assert.That(Space.HostStats.Syscalls, Is.EqualTo(syscalls));
        Assert.That(Snapshot(Span(0, Space.Size)), Is.EqualTo(new[] { Hole(0, Space.Size) }));
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void Unmap_skips_holes_between_mappings()
    {
        using UFrame a = Pool.AllocFrame();
        using UFrame b = Pool.AllocFrame();
        MapAt(0x1000, a);
        MapAt(0x5000, b);

        Assert.That(UnmapAt(0, 8 * Page), Is.EqualTo(2UL));
        Assert.That(Snapshot(Span(0, Page)), Is.EqualTo(new[] { Hole(0, Page) }));
        HostMaps.AssertReserved(Space, 0x1000);
        HostMaps.AssertReserved(Space, 0x5000);
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void Unmap_dispatches_so_the_host_reserves_the_range_on_return()
    {
        using UFrame f = Pool.AllocFrame();
        MapAt(0x3000, f);

        using (CursorMut c = Space.CursorMut(Span(0x3000, Page)))
        {
            Assert.That(c.Unmap(Page), Is.EqualTo(1UL));
            Assert.That(c.Flusher.PendingOps, Is.Zero);
            Assert.That(c.Flusher.PendingReleases, Is.Zero);
            HostMaps.AssertReserved(Space, 0x3000);
            Assert.That(f.ReferenceCount, Is.EqualTo(1), "the mapping's reference is gone on return");
        }
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void Unmap_moves_the_cursor_past_the_whole_length_even_when_it_ends_in_a_hole()
    {
        using UFrame f = Pool.AllocFrame();
        MapAt(Huge + Page, f);

        using CursorMut c = Space.CursorMut(Span(Huge, 16 * Page));
        Assert.That(c.Unmap(10 * Page), Is.EqualTo(1UL));
        Assert.That(c.VirtAddr, Is.EqualTo(Huge + 10 * Page));
        Assert.That(c.Unmap(6 * Page), Is.Zero);
        Assert.That(c.VirtAddr, Is.EqualTo(Huge + 16 * Page));
    }

    [Test]
    public void Unmap_of_part_of_a_segment_leaves_the_rest_mapped()
    {
        const ulong va = 0x20000;
        using USegment seg = Pool.AllocSegment(8);
        MapAt(va, seg);
        HostMaps.WriteU64(Space, va + 7 * Page, 77);

        Assert.That(UnmapAt(va + 2 * Page, 4 * Page), Is.EqualTo(4UL));

        for (ulong i = 0; i < 8; i++)
        {
            ulong pva = va + i * Page;
            if (i is >= 2 and < 6)
            {
                Assert.That(QueryAt(pva), Is.EqualTo(Hole(pva, pva + Page)));
                HostMaps.AssertReserved(Space, pva);
            }
            else
            {
                Assert.That(QueryAt(pva), Is.EqualTo($"{Span(pva, Page)} ram 0x{seg.Paddr + i * Page:x} {RW}"));
                HostMaps.AssertMapsFrame(Space, pva, seg.Paddr + i * Page, "rw-s");
            }
        }
        Assert.That(HostMaps.ReadU64(Space, va + 7 * Page), Is.EqualTo(77UL));
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void Unmapped_frames_return_to_the_pool_when_no_handle_holds_them()
    {
        USegment seg = Pool.AllocSegment(6);
        MapAt(0, seg);
        seg.Dispose();
        Assert.That(Pool.FramesInUse, Is.EqualTo(6));

        Assert.That(UnmapAt(0, 2 * Page), Is.EqualTo(2UL));
        Assert.That(Pool.FramesInUse, Is.EqualTo(4));
        Assert.That(UnmapAt(0, 6 * Page), Is.EqualTo(4UL));
        Assert.That(Pool.FramesInUse, Is.Zero);
    }

    [Test]
    public void Unmap_across_page_table_nodes_counts_every_frame()
    {
        ulong[] vas = { 0, Huge - Page, Huge, 512 * MiB, GiB - Page };
        foreach (ulong va in vas)
        {
            using UFrame f = Pool.AllocFrame();
            MapAt(va, f);
        }
        Assert.That(Pool.FramesInUse, Is.EqualTo(vas.Length));

        using (CursorMut c = Space.CursorMut(Span(0, GiB)))
        {
            Assert.That(c.Unmap(GiB), Is.EqualTo((ulong)vas.Length));
            Assert.That(c.VirtAddr, Is.EqualTo(GiB));
        }
        Assert.That(Pool.FramesInUse, Is.Zero);
        Assert.That(Snapshot(Span(0, GiB)), Is.EqualTo(new[] { Hole(0, GiB) }));
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void Unmap_of_zero_bytes_does_nothing()
    {
        using UFrame f = Pool.AllocFrame();
        MapAt(0, f);
        using (CursorMut c = Space.CursorMut(Span(0, Page)))
        {
            Assert.That(c.Unmap(0), Is.Zero);
            Assert.That(c.VirtAddr, Is.Zero);
        }
        Assert.That(QueryAt(0), Is.EqualTo(Ram(0, f, RW)));
    }
}
