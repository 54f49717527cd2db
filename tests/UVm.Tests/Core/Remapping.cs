using NUnit.Framework;
using UVm.Frames;
using UVm.Spaces;

namespace UVm.Tests.Core;

/// <summary>
/// Mapping over a mapped page replaces it: the page table changes at once, the host and the old
/// frame's reference follow at the flush (a stale TLB may still show the old frame until then).
/// </summary>
public sealed class Remapping : SpaceFixture
{
    private const ulong Va = 0x40000;

    [Test]
    public void Mapping_over_a_frame_replaces_it_in_the_page_table_at_once()
    {
        using UFrame old = TaggedFrame(1);
        using UFrame @new = TaggedFrame(2);
        MapAt(Va, old);

        using (CursorMut c = Space.CursorMut(Span(Va, Page)))
        {
            c.Map(@new, R);
            c.Jump(Va);
            Assert.That(Describe(c.Query()), Is.EqualTo(Ram(Va, @new, R)));
        }
        Assert.That(QueryAt(Va), Is.EqualTo(Ram(Va, @new, R)));
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void The_replaced_frame_is_released_only_after_the_dispatch()
    {
        using UFrame old = Pool.AllocFrame();
        using UFrame @new = Pool.AllocFrame();
        MapAt(Va, old);
        Assert.That(old.ReferenceCount, Is.EqualTo(2));

        using CursorMut c = Space.CursorMut(Span(Va, Page));
        c.Map(@new, RW);
        Assert.That(c.Flusher.PendingReleases, Is.EqualTo(1));
        Assert.That(old.ReferenceCount, Is.EqualTo(2), "the old mapping's reference waits for the flush");
        Assert.That(@new.ReferenceCount, Is.EqualTo(2));

        c.Flusher.DispatchTlbFlush();
        Assert.That(c.Flusher.PendingReleases, Is.Zero);
        Assert.That(old.ReferenceCount, Is.EqualTo(1), "only the handle is left");
        Assert.That(@new.ReferenceCount, Is.EqualTo(2));
    }

    [Test]
    public void Until_dispatch_the_host_still_shows_the_replaced_frame()
    {
        using UFrame old = TaggedFrame(0x01D);
        using UFrame @new = TaggedFrame(0x2E3);
        MapAt(Va, old);

        using (CursorMut c = Space.CursorMut(Span(Va, Page)))
        {
            c.Map(@new, RW);
            HostMaps.AssertMapsFrame(Space, Va, old.Paddr, "rw-s");
            Assert.That(HostMaps.ReadU64(Space, Va), Is.EqualTo(0x01DUL), "a stale host mapping still reaches the old frame, which is still alive");

            c.Flusher.DispatchTlbFlush();
            HostMaps.AssertMapsFrame(Space, Va, @new.Paddr, "rw-s");
            Assert.That(HostMaps.ReadU64(Space, Va), Is.EqualTo(0x2E3UL));
        }
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void A_replaced_frame_without_a_handle_returns_to_the_pool_after_the_dispatch()
    {
        UFrame old = Pool.AllocFrame();
        MapAt(Va, old);
        old.Dispose();
        Assert.That(Pool.FramesInUse, Is.EqualTo(1), "the mapping keeps the frame");

        using UFrame @new = Pool.AllocFrame();
        using CursorMut c = Space.CursorMut(Span(Va, Page));
        c.Map(@new, RW);
        Assert.That(Pool.FramesInUse, Is.EqualTo(2));
        c.Flusher.DispatchTlbFlush();
        Assert.That(Pool.FramesInUse, Is.EqualTo(1));
    }

    [Test]
    public void Disposing_the_cursor_dispatches_the_replacement_and_the_release()
    {
        using UFrame old = Pool.AllocFrame();
        using UFrame @new = Pool.AllocFrame();
        MapAt(Va, old);

        MapAt(Va, @new);
        Assert.That(old.ReferenceCount, Is.EqualTo(1));
        Assert.That(@new.ReferenceCount, Is.EqualTo(2));
        HostMaps.AssertMapsFrame(Space, Va, @new.Paddr, "rw-s");
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void Remapping_the_same_frame_keeps_one_mapping_reference()
    {
        using UFrame f = Pool.AllocFrame();
        MapAt(Va, f);
        MapAt(Va, f, R);

        Assert.That(f.ReferenceCount, Is.EqualTo(2));
        Assert.That(QueryAt(Va), Is.EqualTo(Ram(Va, f, R)));
        HostMaps.AssertMapsFrame(Space, Va, f.Paddr, "r--s");
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void Replacing_a_whole_segment_releases_every_old_frame_in_one_dispatch()
    {
        using USegment old = Pool.AllocSegment(16);
        using USegment @new = Pool.AllocSegment(16);
        MapAt(Va, old);

        long mmaps = Space.HostStats.MmapCalls;
        using (CursorMut c = Space.CursorMut(Span(Va, old.Size)))
        {
            c.Map(@new, RW);
            Assert.That(c.Flusher.PendingReleases, Is.EqualTo(16));
            Assert.That(c.Flusher.PendingOps, Is.EqualTo(1), "the 16 replacements form one run");
        }
        Assert.That(Space.HostStats.MmapCalls - mmaps, Is.EqualTo(1));
        for (ulong i = 0; i < 16; i++) Assert.That(Pool.ReferenceCount(old.Paddr + i * Page), Is.EqualTo(1));
        HostMaps.AssertMirrored(Space);
    }
}
