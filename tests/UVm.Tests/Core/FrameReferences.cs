using NUnit.Framework;
using UVm.Frames;
using UVm.Spaces;

namespace UVm.Tests.Core;

/// <summary>Frames are reference counted: every handle and every page-table mapping holds one reference.</summary>
public sealed class FrameReferences : SpaceFixture
{
    [Test]
    public void A_new_frame_has_one_reference_held_by_its_handle()
    {
        using UFrame f = Pool.AllocFrame();
        Assert.That(f.ReferenceCount, Is.EqualTo(1));
        Assert.That(Pool.FramesInUse, Is.EqualTo(1));
        Assert.That(f.Size, Is.EqualTo(Page));
        Assert.That(f.Pool, Is.SameAs(Pool));
    }

    [Test]
    public void Clone_takes_a_reference_and_disposing_the_clone_returns_it()
    {
        using UFrame f = Pool.AllocFrame();
        UFrame clone = f.Clone();
        Assert.That(clone.Paddr, Is.EqualTo(f.Paddr));
        Assert.That(f.ReferenceCount, Is.EqualTo(2));
        clone.Dispose();
        Assert.That(f.ReferenceCount, Is.EqualTo(1));
        Assert.That(Pool.FramesInUse, Is.EqualTo(1));
    }

    [Test]
    public void The_frame_is_freed_when_its_last_handle_goes_whichever_it_is()
    {
        UFrame f = Pool.AllocFrame();
        UFrame clone = f.Clone();
        f.Dispose();
        Assert.That(clone.ReferenceCount, Is.EqualTo(1));
        Assert.That(Pool.FramesInUse, Is.EqualTo(1));
        clone.Dispose();
        Assert.That(Pool.ReferenceCount(clone.Paddr), Is.Zero);
        Assert.That(Pool.FramesInUse, Is.Zero);
    }

    [Test]
    public void A_mapping_holds_one_reference()
    {
        using UFrame f = Pool.AllocFrame();
        MapAt(0, f);
        Assert.That(f.ReferenceCount, Is.EqualTo(2));
    }

    [Test]
    public void A_mapping_takes_its_reference_before_the_dispatch()
    {
        using UFrame f = Pool.AllocFrame();
        using CursorMut c = Space.CursorMut(Span(0, Page));
        c.Map(f, RW);
        Assert.That(f.ReferenceCount, Is.EqualTo(2));
    }

    [Test]
    public void Unmap_returns_the_mappings_reference()
    {
        using UFrame f = Pool.AllocFrame();
        MapAt(0, f);
        UnmapAt(0, Page);
        Assert.That(f.ReferenceCount, Is.EqualTo(1));
    }

    [Test]
    public void A_queried_MappedRam_holds_a_reference_until_disposed()
    {
        using UFrame f = Pool.AllocFrame();
        MapAt(0, f);
        using Cursor c = Space.Cursor(Span(0, Page));
        var (_, item) = c.Query();
        Assert.That(f.ReferenceCount, Is.EqualTo(3));
        var (_, again) = c.Query();
        Assert.That(f.ReferenceCount, Is.EqualTo(4), "every query hands out a handle of its own");
        item!.Dispose();
        again!.Dispose();
        Assert.That(f.ReferenceCount, Is.EqualTo(2));
    }

    [Test]
    public void A_queried_frame_handle_outlives_the_mapping_and_the_cursor()
    {
        UFrame f = TaggedFrame(0x77);
        MapAt(0, f);
        f.Dispose();
        MappedRam ram;
        using (Cursor c = Space.Cursor(Span(0, Page)))
            ram = (MappedRam)c.Query().Item!;
        UnmapAt(0, Page);
        Assert.That(ram.Frame.ReferenceCount, Is.EqualTo(1), "only the queried handle is left");
        Assert.That(TagOf(ram.Frame), Is.EqualTo(0x77UL));
        ram.Dispose();
        Assert.That(Pool.FramesInUse, Is.Zero);
    }

    [Test]
    public void A_mapped_frame_outlives_its_handle()
    {
        UFrame f = TaggedFrame(0xAB);
        MapAt(0x4000, f);
        f.Dispose();
        Assert.That(Pool.FramesInUse, Is.EqualTo(1));
        Assert.That(Pool.ReferenceCount(f.Paddr), Is.EqualTo(1));
        Assert.That(HostMaps.ReadU64(Space, 0x4000), Is.EqualTo(0xABUL));
        Assert.That(UnmapAt(0x4000, Page), Is.EqualTo(1UL));
        Assert.That(Pool.FramesInUse, Is.Zero);
    }

    [Test]
    public void A_frame_mapped_at_two_addresses_holds_two_references()
    {
        using UFrame f = Pool.AllocFrame();
        MapAt(0, f);
        MapAt(GiB - Page, f);
        Assert.That(f.ReferenceCount, Is.EqualTo(3));
        HostMaps.WriteU64(Space, 0, 0x22);
        Assert.That(HostMaps.ReadU64(Space, GiB - Page), Is.EqualTo(0x22UL), "both addresses reach the same frame");
        HostMaps.AssertMirrored(Space);
        UnmapAt(0, Page);
        Assert.That(f.ReferenceCount, Is.EqualTo(2));
    }

    [Test]
    public void FrameAt_takes_a_reference_on_one_frame_of_the_segment()
    {
        using USegment seg = Pool.AllocSegment(4);
        using UFrame third = seg.FrameAt(2);
        Assert.That(third.Paddr, Is.EqualTo(seg.Paddr + 2 * Page));
        Assert.That(Pool.ReferenceCount(seg.Paddr + 2 * Page), Is.EqualTo(2));
        Assert.That(Pool.ReferenceCount(seg.Paddr + Page), Is.EqualTo(1));
        Assert.Throws<ArgumentOutOfRangeException>(() => seg.FrameAt(4));
    }

    [Test]
    public void Disposing_a_segment_drops_one_reference_per_frame()
    {
        USegment seg = Pool.AllocSegment(8);
        Assert.That(Pool.FramesInUse, Is.EqualTo(8));
        using UFrame kept = seg.FrameAt(5);
        seg.Dispose();
        Assert.That(Pool.FramesInUse, Is.EqualTo(1));
        Assert.That(kept.ReferenceCount, Is.EqualTo(1));
    }

    [Test]
    public void A_mapped_segment_keeps_its_frames_after_the_handle_goes()
    {
        USegment seg = Pool.AllocSegment(8);
        MapAt(0, seg);
        seg.Dispose();
        Assert.That(Pool.FramesInUse, Is.EqualTo(8));
        for (ulong i = 0; i < 8; i++) Assert.That(Pool.ReferenceCount(seg.Paddr + i * Page), Is.EqualTo(1));
    }

    [Test]
    public void Disposing_the_space_returns_every_mappings_reference()
    {
        VmSpace space = NewSpace(GiB);
        using USegment seg = Pool.AllocSegment(16);
        using UFrame f = Pool.AllocFrame();
        using (CursorMut c = space.CursorMut(Span(0, GiB)))
        {
            c.Map(seg, RW);
            c.Jump(700 * MiB);
            c.Map(f, RW);
        }
        Assert.That(f.ReferenceCount, Is.EqualTo(2));
        space.Dispose();
        Assert.That(f.ReferenceCount, Is.EqualTo(1));
        for (ulong i = 0; i < 16; i++) Assert.That(Pool.ReferenceCount(seg.Paddr + i * Page), Is.EqualTo(1));
        Assert.That(space.IsDisposed, Is.True);
    }
}
