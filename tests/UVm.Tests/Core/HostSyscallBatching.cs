using NUnit.Framework;
using UVm.Frames;
using UVm.Spaces;

namespace UVm.Tests.Core;

/// <summary>
/// Host updates are queued per page-table change and coalesced at dispatch: a run contiguous
/// in guest address and frame address, with one protection, costs one syscall.
/// </summary>
public sealed class HostSyscallBatching : SpaceFixture
{
    private const ulong N = 64, Va = 0x100000;

    [Test]
    public void Mapping_a_contiguous_segment_costs_one_mmap_at_dispatch()
    {
        using USegment seg = Pool.AllocSegment(N);
        long mmaps = Space.HostStats.MmapCalls, ops = Space.HostStats.MapOps;
        using (CursorMut c = Space.CursorMut(Span(Va, seg.Size)))
        {
            c.Map(seg, RW);
            Assert.That(c.Flusher.PendingOps, Is.EqualTo(1), "merged into one run");
            Assert.That(Space.HostStats.MmapCalls, Is.EqualTo(mmaps), "nothing reaches the host before the dispatch");
            Assert.That(Space.HostStats.MapOps, Is.EqualTo(ops), "operations are counted when dispatched");
        }
        Assert.That(Space.HostStats.MapOps - ops, Is.EqualTo((long)N), "one operation queued per page");
        Assert.That(Space.HostStats.MmapCalls - mmaps, Is.EqualTo(1));
        Assert.That(Space.HostStats.MprotectCalls, Is.Zero);
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void Unmapping_the_segment_costs_one_mmap()
    {
        using USegment seg = Pool.AllocSegment(N);
        MapAt(Va, seg);
        long mmaps = Space.HostStats.MmapCalls, ops = Space.HostStats.UnmapOps;
        Assert.That(UnmapAt(Va, seg.Size), Is.EqualTo(N));
        Assert.That(Space.HostStats.UnmapOps - ops, Is.EqualTo((long)N));
        Assert.That(Space.HostStats.MmapCalls - mmaps, Is.EqualTo(1));
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void Protecting_the_segment_costs_one_mprotect()
    {
        using USegment seg = Pool.AllocSegment(N);
        MapAt(Va, seg);
        long before = Space.HostStats.Syscalls;
        using (CursorMut c = Space.CursorMut(Span(Va, seg.Size)))
            while (c.ProtectNext(Va + seg.Size - c.VirtAddr, (ref PageFlags f, ref CachePolicy cp) => f = PageFlags.R) is not null) { }
        Assert.That(Space.HostStats.ProtectOps, Is.EqualTo((long)N));
        Assert.That(Space.HostStats.MprotectCalls, Is.EqualTo(1));
        Assert.That(Space.HostStats.Syscalls - before, Is.EqualTo(1));
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void Frames_not_contiguous_in_paddr_cost_one_mmap_each()
    {
        var frames = Enumerable.Range(0, 4).Select(_ => Pool.AllocFrame()).ToList();
        try
        {
            long mmaps = Space.HostStats.MmapCalls;
            using (CursorMut c = Space.CursorMut(Span(Va, 4 * Page)))
            {
                for (int i = 3; i >= 0; i--) c.Map(frames[i], RW); // guest order is the reverse of paddr order
                Assert.That(c.Flusher.PendingOps, Is.EqualTo(4));
            }
            Assert.That(Space.HostStats.MmapCalls - mmaps, Is.EqualTo(4));
            HostMaps.AssertMirrored(Space);
        }
        finally
        {
            frames.ForEach(f => f.Dispose());
        }
    }

    [Test]
    public void A_change_of_rights_inside_a_run_splits_it()
    {
        using USegment seg = Pool.AllocSegment(3);
        using (CursorMut c = Space.CursorMut(Span(Va, 3 * Page)))
        {
            using UFrame f0 = seg.FrameAt(0), f1 = seg.FrameAt(1), f2 = seg.FrameAt(2);
            c.Map(f0, RW);
            c.Map(f1, R);
            c.Map(f2, RW);
            Assert.That(c.Flusher.PendingOps, Is.EqualTo(3));
        }
        HostMaps.AssertMapsFrame(Space, Va + Page, seg.Paddr + Page, "r--s");
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void A_mapped_segment_is_one_host_mapping_and_unmapping_it_merges_the_reservation_back()
    {
        using USegment seg = Pool.AllocSegment(N);
        Assert.That(Space.CountHostMappings(), Is.EqualTo(1));
        MapAt(Va, seg);
        Assert.That(Space.CountHostMappings(), Is.EqualTo(3), "reserved, the segment, reserved");
        Assert.That(HostMaps.InArena(Space).Count(l => l.Inode == Pool.FileIdentity.Ino), Is.EqualTo(1));
        UnmapAt(Va, seg.Size);
        Assert.That(Space.CountHostMappings(), Is.EqualTo(1));
    }

    [Test]
    public void Unmap_of_a_hole_and_protect_of_a_hole_make_no_syscall()
    {
        long before = Space.HostStats.Syscalls;
        UnmapAt(Va, 512 * Page);
        using (CursorMut c = Space.CursorMut(Span(Va, 512 * Page)))
            Assert.That(c.ProtectNext(512 * Page, (ref PageFlags f, ref CachePolicy cp) => f = PageFlags.R), Is.Null);
        Assert.That(Space.HostStats.Syscalls, Is.EqualTo(before));
        Assert.That(Space.HostStats.Dispatches, Is.Zero);
    }

    [Test]
    public void Each_dispatch_that_applies_something_is_counted_once()
    {
        using USegment seg = Pool.AllocSegment(4);
        using (CursorMut c = Space.CursorMut(Span(Va, seg.Size)))
        {
            c.Map(seg, RW);
            c.Flusher.DispatchTlbFlush();
            c.Flusher.DispatchTlbFlush();
        }
        Assert.That(Space.HostStats.Dispatches, Is.EqualTo(1));
        UnmapAt(Va, seg.Size);
        Assert.That(Space.HostStats.Dispatches, Is.EqualTo(2));
    }

    [Test]
    public void Unmapping_scattered_pages_with_holes_and_mixed_rights_costs_one_mmap()
    {
        // Eight single pages, every other page a hole, frames in reverse order, rights alternating:
        // eight host mappings that no map could merge. The unmap resets the whole extent at once.
        var frames = Enumerable.Range(0, 8).Select(_ => Pool.AllocFrame()).ToList();
        try
        {
            for (int i = 0; i < 8; i++) MapAt(Va + (ulong)(2 * i + 1) * Page, frames[7 - i], i % 2 == 0 ? RW : R);
            Assert.That(Space.CountHostMappings(), Is.EqualTo(17), "eight pages, each between reserved holes");
            long mmaps = Space.HostStats.MmapCalls, ops = Space.HostStats.UnmapOps;
            Assert.That(UnmapAt(Va, 64 * Page), Is.EqualTo(8UL));
            Assert.That(Space.HostStats.MmapCalls - mmaps, Is.EqualTo(1), "one mmap(PROT_NONE) over the first to the last page");
            Assert.That(Space.HostStats.UnmapOps - ops, Is.EqualTo(8), "one operation queued per page before merging");
            Assert.That(Space.CountHostMappings(), Is.EqualTo(1), "the arena is one reservation again");
            Assert.That(frames.Select(f => f.ReferenceCount), Is.All.EqualTo(1), "the mappings' references were returned");
            HostMaps.AssertMirrored(Space);
        }
        finally
        {
            frames.ForEach(f => f.Dispose());
        }
    }
}
