using NUnit.Framework;
using UVm.Frames;
using UVm.Host;
using UVm.Io;
using UVm.Spaces;

namespace UVm.Tests.Core;

/// <summary>Mapping frames and segments: the page table records them and, after dispatch, the host maps them (MAP_SHARED).</summary>
public sealed class FrameMapping : SpaceFixture
{
    [Test]
    public void A_fresh_space_maps_nothing_and_the_host_reserves_all_of_it()
    {
        Assert.That(Snapshot(Span(0, Space.Size)), Is.EqualTo(new[] { Hole(0, Space.Size) }));
        Assert.That(Space.CountHostMappings(), Is.EqualTo(1));
        HostMaps.AssertReserved(Space, 0);
        HostMaps.AssertReserved(Space, Space.Size - Page);
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void A_mapped_frame_is_queried_with_its_frame_and_property()
    {
        using UFrame f = Pool.AllocFrame();
        MapAt(0x5000, f);

        using Cursor c = Space.Cursor(Span(0x5000, Page));
        (VaddrRange range, VmQueriedItem? item) = c.Query();
        using (item)
        {
            Assert.That(range, Is.EqualTo(Span(0x5000, Page)));
            Assert.That(item, Is.TypeOf<MappedRam>());
            var ram = (MappedRam)item!;
            Assert.That(ram.Frame.Paddr, Is.EqualTo(f.Paddr));
            Assert.That(ram.Prop, Is.EqualTo(RW));
        }
        Assert.That(c.VirtAddr, Is.EqualTo(0x5000UL), "Query does not move the cursor");
    }

    [Test]
    public void A_mapped_frame_is_on_the_host_at_its_paddr_with_its_rights()
    {
        using UFrame f = Pool.AllocFrame();
        MapAt(0x5000, f);

        HostMaps.AssertMapsFrame(Space, 0x5000, f.Paddr, "rw-s");
        HostMaps.AssertReserved(Space, 0x4000);
        HostMaps.AssertReserved(Space, 0x6000);
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void Bytes_written_through_the_frame_are_visible_at_the_host_address()
    {
        using UFrame f = Pool.AllocFrame();
        MapAt(0x3000, f);

        VmWriter<Infallible> w = f.Writer();
        w.WriteVal(0x1122334455667788UL);
        w.Skip(Page - 16);
        w.WriteVal(0xCAFEF00DUL);

        Assert.That(HostMaps.ReadU64(Space, 0x3000), Is.EqualTo(0x1122334455667788UL));
        Assert.That(HostMaps.ReadU64(Space, 0x3000 + Page - 8), Is.EqualTo(0xCAFEF00DUL));
    }

    [Test]
    public void Bytes_written_at_the_host_address_are_visible_through_the_frame()
    {
        using UFrame f = Pool.AllocFrame();
        MapAt(0x3000, f);

        HostMaps.WriteU64(Space, 0x3000 + 0x100, 0xDEADBEEF_0BADF00DUL);

        VmReader<Infallible> r = f.Reader();
        r.Skip(0x100);
        Assert.That(r.ReadVal<ulong>(), Is.EqualTo(0xDEADBEEF_0BADF00DUL));
    }

    [Test]
    public void A_new_frame_reads_as_zero_through_the_host()
    {
        using UFrame f = Pool.AllocFrame();
        MapAt(0, f);
        Assert.That(HostMaps.ReadU64(Space, 0), Is.Zero);
        Assert.That(HostMaps.ReadU64(Space, Page - 8), Is.Zero);
    }

    [Test]
    public void A_segment_maps_its_frames_in_order_at_consecutive_pages()
    {
        const ulong n = 8, va = 0x10000;
        using USegment seg = Pool.AllocSegment(n);
        VmWriter<Infallible> w = seg.Writer();
        for (ulong i = 0; i < n; i++)
        {
            w.WriteVal(0xA000 + i);
            w.Skip(Page - 8);
        }
        MapAt(va, seg);

        var expected = new List<string> { Hole(va - Page, va) };
        for (ulong i = 0; i < n; i++) expected.Add($"{Span(va + i * Page, Page)} ram 0x{seg.Paddr + i * Page:x} {RW}");
        expected.Add(Hole(va + n * Page, va + (n + 1) * Page));
        Assert.That(Snapshot(Span(va - Page, (n + 2) * Page)), Is.EqualTo(expected));

        for (ulong i = 0; i < n; i++)
        {
            HostMaps.AssertMapsFrame(Space, va + i * Page, seg.Paddr + i * Page, "rw-s");
            Assert.That(HostMaps.ReadU64(Space, va + i * Page), Is.EqualTo(0xA000 + i));
        }
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void Map_does_not_dispatch_the_host_follows_at_the_flush()
    {
        using UFrame f = Pool.AllocFrame();
        using (CursorMut c = Space.CursorMut(Span(0x7000, Page)))
        {
            c.Map(f, RW);
            Assert.That(c.Flusher.PendingOps, Is.EqualTo(1));
            HostMaps.AssertReserved(Space, 0x7000);

            c.Flusher.DispatchTlbFlush();
            Assert.That(c.Flusher.PendingOps, Is.Zero);
            HostMaps.AssertMapsFrame(Space, 0x7000, f.Paddr, "rw-s");
        }
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void Disposing_the_cursor_dispatches_what_is_pending()
    {
        using UFrame f = Pool.AllocFrame();
        CursorMut c = Space.CursorMut(Span(0x7000, Page));
        c.Map(f, RW);
        TlbFlusher flusher = c.Flusher;
        c.Dispose();

        Assert.That(flusher.PendingOps, Is.Zero);
        HostMaps.AssertMapsFrame(Space, 0x7000, f.Paddr, "rw-s");
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void Mapping_moves_the_cursor_one_page_per_frame_and_a_segment_past_its_end()
    {
        using UFrame f = Pool.AllocFrame();
        using USegment seg = Pool.AllocSegment(3);
        using CursorMut c = Space.CursorMut(Span(0x1000, 8 * Page));
        c.Map(f, RW);
        Assert.That(c.VirtAddr, Is.EqualTo(0x2000UL));
        c.Map(seg, RW);
        Assert.That(c.VirtAddr, Is.EqualTo(0x5000UL));
    }

    [Test]
    public void A_read_only_mapping_is_readable_but_not_writable_on_the_host()
    {
        using UFrame f = TaggedFrame(42);
        MapAt(0x9000, f, R);

        HostMaps.AssertMapsFrame(Space, 0x9000, f.Paddr, "r--s");
        Assert.That(HostMaps.ReadU64(Space, 0x9000), Is.EqualTo(42UL));
        Assert.That(QueryAt(0x9000), Is.EqualTo(Ram(0x9000, f, R)));
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void The_first_and_last_pages_of_the_space_can_be_mapped()
    {
        using UFrame first = TaggedFrame(1);
        using UFrame last = TaggedFrame(2);
        MapAt(0, first);
        MapAt(Space.Size - Page, last);

        Assert.That(QueryAt(0), Is.EqualTo(Ram(0, first, RW)));
        Assert.That(QueryAt(Space.Size - Page), Is.EqualTo(Ram(Space.Size - Page, last, RW)));
        Assert.That(HostMaps.ReadU64(Space, 0), Is.EqualTo(1UL));
        Assert.That(HostMaps.ReadU64(Space, Space.Size - Page), Is.EqualTo(2UL));
        HostMaps.AssertMirrored(Space);
    }

    [Test]
    public void Frames_mapped_across_page_table_nodes_land_where_asked()
    {
        ulong[] vas = { 0, Huge - Page, Huge, 512 * MiB, GiB - Page };
        var frames = vas.Select(va => TaggedFrame(va | 1)).ToList();
        try
        {
            using (CursorMut c = Space.CursorMut(Span(0, GiB)))
            {
                for (int i = 0; i < vas.Length; i++)
                {
                    c.Jump(vas[i]);
                    c.Map(frames[i], RW);
                }
            }
            for (int i = 0; i < vas.Length; i++)
            {
                Assert.That(QueryAt(vas[i]), Is.EqualTo(Ram(vas[i], frames[i], RW)));
                Assert.That(HostMaps.ReadU64(Space, vas[i]), Is.EqualTo(vas[i] | 1));
            }
            HostMaps.AssertMirrored(Space);
        }
        finally
        {
            frames.ForEach(f => f.Dispose());
        }
    }

    [Test]
    public void A_frame_mapped_in_two_spaces_shares_its_contents()
    {
        VmSpace other = NewSpace(64 * MiB);
        using UFrame f = Pool.AllocFrame();
        MapAt(Space, 0x2000, f);
        MapAt(other, 0x8000, f);

        HostMaps.WriteU64(Space, 0x2000, 0x5151);
        Assert.That(HostMaps.ReadU64(other, 0x8000), Is.EqualTo(0x5151UL));
        Assert.That(f.ReferenceCount, Is.EqualTo(3), "the handle and one mapping in each space");
        HostMaps.AssertMirrored(Space);
        HostMaps.AssertMirrored(other);
    }

    [Test]
    public void A_space_whose_size_is_not_a_multiple_of_1GiB_maps_up_to_its_end()
    {
        VmSpace small = NewSpace(6 * MiB);
        using UFrame f = Pool.AllocFrame();
        MapAt(small, 6 * MiB - Page, f);

        Assert.That(QueryAt(small, 6 * MiB - Page), Is.EqualTo(Ram(6 * MiB - Page, f, RW)));
        HostMaps.AssertMapsFrame(small, 6 * MiB - Page, f.Paddr, "rw-s");
        HostMaps.AssertMirrored(small);
    }
}
