using NUnit.Framework;
using UVm.Frames;
using UVm.Spaces;

namespace UVm.Tests.Core;

/// <summary>
/// ProtectNext changes one mapped slot at a time, skipping holes, and does NOT dispatch: the
/// host keeps the old rights until the cursor's flusher is dispatched.
/// </summary>
public sealed class Protection : SpaceFixture
{
    private static void ReadOnly(ref PageFlags flags, ref CachePolicy cache) => flags = PageFlags.R;

    /// <summary>Pages 0, 1, 3 and 5 of [0, 8 pages) mapped RW; the others are holes.</summary>
    private UFrame[] MapMix()
    {
        var frames = new UFrame[8];
        foreach (int i in new[] { 0, 1, 3, 5 })
        {
            frames[i] = Later(TaggedFrame((ulong)i + 100));
            MapAt((ulong)i * Page, frames[i]);
        }
        return frames;
    }

    [Test]
    public void ProtectNext_returns_each_mapped_slot_in_turn_and_skips_holes()
    {
        MapMix();
        var ranges = new List<VaddrRange>();
        var positions = new List<ulong>();
        using (CursorMut c = Space.CursorMut(Span(0, 8 * Page)))
        {
            while (c.ProtectNext(8 * Page - c.VirtAddr, ReadOnly) is { } r)
            {
                ranges.Add(r);
                positions.Add(c.VirtAddr);
            }
            Assert.That(c.VirtAddr, Is.EqualTo(8 * Page), "with nothing left the cursor stops at the span's end");
        }
        Assert.That(ranges, Is.EqualTo(new[] { Span(0, Page), Span(Page, Page), Span(3 * Page, Page), Span(5 * Page, Page) }));
        Assert.That(positions, Is.EqualTo(new[] { Page, 2 * Page, 4 * Page, 6 * Page }), "the cursor stops just past each protected slot");
    }

    [Test]
    public void ProtectNext_changes_what_Query_reports_at_once()
    {
        UFrame[] frames = MapMix();
        using (CursorMut c = Space.CursorMut(Span(0, 8 * Page)))
        {
            Assert.That(c.ProtectNext(2 * Page, ReadOnly), Is.EqualTo(Span(0, Page)));
            c.Jump(0);
            Assert.That(Describe(c.Query()), Is.EqualTo(Ram(0, frames[0], R)));
            c.Jump(Page);
            Assert.That(Describe(c.Query()), Is.EqualTo(Ram(Page, frames[1], RW)), "only one slot is protected per call");
        }
        Assert.That(QueryAt(0), Is.EqualTo(Ram(0, frames[0], R)));
        Assert.That(QueryAt(Page), Is.EqualTo(Ram(Page, frames[1], RW)));
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void ProtectNext_returns_null_over_holes_only_and_leaves_the_cursor_at_or_past_the_span()
    {
        MapMix();
        using CursorMut c = Space.CursorMut(Span(0, 8 * Page));
        c.Jump(6 * Page);
        long ops = Space.HostStats.ProtectOps;
        Assert.That(c.ProtectNext(2 * Page, ReadOnly), Is.Null);
        Assert.That(c.VirtAddr, Is.GreaterThanOrEqualTo(8 * Page));
        Assert.That(c.Flusher.PendingOps, Is.Zero);
        Assert.That(Space.HostStats.ProtectOps, Is.EqualTo(ops));
    }

    [Test]
    public void ProtectNext_does_not_dispatch_the_host_keeps_the_old_rights_until_the_flush()
    {
        UFrame[] frames = MapMix();
        using (CursorMut c = Space.CursorMut(Span(0, 8 * Page)))
        {
            while (c.ProtectNext(8 * Page - c.VirtAddr, ReadOnly) is not null) { }
            Assert.That(c.Flusher.PendingOps, Is.GreaterThan(0));
            foreach (int i in new[] { 0, 1, 3, 5 })
                HostMaps.AssertMapsFrame(Space, (ulong)i * Page, frames[i].Paddr, "rw-s");

            c.Flusher.DispatchTlbFlush();
            Assert.That(c.Flusher.PendingOps, Is.Zero);
            foreach (int i in new[] { 0, 1, 3, 5 })
            {
                HostMaps.AssertMapsFrame(Space, (ulong)i * Page, frames[i].Paddr, "r--s");
                Assert.That(HostMaps.ReadU64(Space, (ulong)i * Page), Is.EqualTo((ulong)i + 100));
            }
            foreach (int i in new[] { 2, 4, 6, 7 })
                HostMaps.AssertReserved(Space, (ulong)i * Page);
        }
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void Disposing_the_cursor_dispatches_the_protection()
    {
        using UFrame f = Pool.AllocFrame();
        MapAt(0x8000, f);
        using (CursorMut c = Space.CursorMut(Span(0x8000, Page)))
            c.ProtectNext(Page, ReadOnly);
        HostMaps.AssertMapsFrame(Space, 0x8000, f.Paddr, "r--s");
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void ProtectNext_hands_the_op_the_current_flags_and_cache_policy()
    {
        using UFrame f = Pool.AllocFrame();
        MapAt(0, f, PageProperty.New(PageFlags.RW, CachePolicy.Writethrough));
        PageFlags seenFlags = PageFlags.None;
        CachePolicy seenCache = CachePolicy.Writeback;
        using (CursorMut c = Space.CursorMut(Span(0, Page)))
        {
            c.ProtectNext(Page, (ref PageFlags fl, ref CachePolicy ca) =>
            {
                seenFlags = fl;
                seenCache = ca;
            });
        }
        Assert.That(seenFlags, Is.EqualTo(PageFlags.RW));
        Assert.That(seenCache, Is.EqualTo(CachePolicy.Writethrough));
    }

    [Test]
    public void ProtectNext_records_the_cache_policy_without_changing_host_rights()
    {
        using UFrame f = Pool.AllocFrame();
        MapAt(0, f);
        using (CursorMut c = Space.CursorMut(Span(0, Page)))
            c.ProtectNext(Page, (ref PageFlags fl, ref CachePolicy ca) => ca = CachePolicy.Uncacheable);

        Assert.That(QueryAt(0), Is.EqualTo(Ram(0, f, PageProperty.New(PageFlags.RW, CachePolicy.Uncacheable))));
        HostMaps.AssertMapsFrame(Space, 0, f.Paddr, "rw-s");
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void Protecting_to_no_access_keeps_the_frame_mapped_but_inaccessible_on_the_host()
    {
        using UFrame f = Pool.AllocFrame();
        MapAt(0x6000, f);
        using (CursorMut c = Space.CursorMut(Span(0x6000, Page)))
            c.ProtectNext(Page, (ref PageFlags fl, ref CachePolicy ca) => fl = PageFlags.None);

        Assert.That(QueryAt(0x6000), Is.EqualTo(Ram(0x6000, f, PageProperty.New(PageFlags.None))));
        HostMaps.AssertMapsFrame(Space, 0x6000, f.Paddr, "---s");
        Assert.That(f.ReferenceCount, Is.EqualTo(2), "a protected mapping still holds its frame");
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void Rights_can_be_restored_and_the_host_follows()
    {
        using UFrame f = TaggedFrame(9);
        MapAt(0, f);
        using (CursorMut c = Space.CursorMut(Span(0, Page)))
            c.ProtectNext(Page, ReadOnly);
        HostMaps.AssertMapsFrame(Space, 0, f.Paddr, "r--s");

        using (CursorMut c = Space.CursorMut(Span(0, Page)))
            c.ProtectNext(Page, (ref PageFlags fl, ref CachePolicy ca) => fl |= PageFlags.W);
        HostMaps.AssertMapsFrame(Space, 0, f.Paddr, "rw-s");
        HostMaps.WriteU64(Space, 0, 10);
        Assert.That(TagOf(f), Is.EqualTo(10UL));
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void Status_and_user_bits_survive_in_the_entry()
    {
        using UFrame f = Pool.AllocFrame();
        MapAt(0, f);
        using (CursorMut c = Space.CursorMut(Span(0, Page)))
            c.ProtectNext(Page, (ref PageFlags fl, ref CachePolicy ca) => fl |= PageFlags.Accessed | PageFlags.Dirty | PageFlags.Avail2);

        Assert.That(QueryAt(0), Is.EqualTo(Ram(0, f, PageProperty.New(PageFlags.RW | PageFlags.Accessed | PageFlags.Dirty | PageFlags.Avail2))));
        HostMaps.AssertMapsFrame(Space, 0, f.Paddr, "rw-s");
        HostMaps.AssertMirrored(Space);
    }
}
