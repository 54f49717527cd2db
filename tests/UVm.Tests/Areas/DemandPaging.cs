using NUnit.Framework;
using UVm.Areas;
using UVm.Faults;
using UVm.Io;
using UVm.Spaces;

namespace UVm.Tests.Areas;

/// <summary>
/// Lazy areas: a page gets a zeroed frame on first access, and one fault fills the aligned
/// fault-around window around it, cut to the area and skipping pages already mapped.
/// </summary>
[TestFixture, NonParallelizable, CancelAfter(60_000)]
public sealed class DemandPaging : AreaFixture
{
    [Test]
    public void A_lazy_area_has_no_frames_until_touched()
    {
        ulong va = MapLazy(Parent, 64);

        Assert.That(Pool.FramesInUse, Is.Zero);
        Assert.That(Pages(Parent, Span(va, 64 * Page)), Is.Empty);
        Assert.That(Parent.Stats.DemandZeroFaults, Is.Zero);
        AssertHostMirrors(Parent);
    }

    [Test]
    public void Demand_zero_pages_read_zero()
    {
        ulong va = MapLazy(Parent, 64);

        byte[] bytes = Read(Parent, va, (int)(64 * Page));

        Assert.That(bytes.All(b => b == 0), Is.True);
        Assert.That(Pages(Parent, Span(va, 64 * Page)).Count, Is.EqualTo(64));
        Assert.That(Pool.FramesInUse, Is.EqualTo(64));
        Assert.That(Parent.Stats.DemandZeroFaults, Is.EqualTo(4), "64 pages in windows of 16");
        Assert.That(Parent.Space.UnresolvedFaults, Is.Zero);
        AssertHostMirrors(Parent);
    }

    [Test]
    public void A_write_is_visible_through_the_queried_frames_reader()
    {
        ulong va = MapLazy(Parent, 4);
        WriteU64(Parent, va + Page + 24, 0x1122_3344_5566_7788);

        var (slot, item) = Parent.QueryRange(Span(va + Page, Page)).Single();
        using (item)
        {
            Assert.That(slot, Is.EqualTo(Span(va + Page, Page)));
            var ram = (MappedRam)item!;
            Assert.That(ram.Prop.Flags & PageFlags.RWX, Is.EqualTo(PageFlags.RW));
            VmReader<Infallible> reader = ram.Frame.Reader();
            reader.Skip(24);
            Assert.That(reader.ReadVal<ulong>(), Is.EqualTo(0x1122_3344_5566_7788UL));
            Assert.That(ram.Frame.ReferenceCount, Is.EqualTo(2), "the mapping and the query's handle");
        }
        AssertHostMirrors(Parent);
    }

    [Test]
    public void A_write_through_the_frame_is_visible_to_the_guest()
    {
        ulong va = MapLazy(Parent, 1);
        WriteU64(Parent, va, 1);

        var (_, item) = Parent.QueryRange(Span(va, Page)).Single();
        using (item)
        {
            VmWriter<Infallible> w = ((MappedRam)item!).Frame.Writer();
            w.WriteVal(0xABCDUL);
        }

        Assert.That(ReadU64(Parent, va), Is.EqualTo(0xABCDUL));
    }

    [Test]
    public void One_fault_fills_the_aligned_window_around_the_page()
    {
        ulong va = MapLazy(Parent, 64);

        Assert.That(Read(Parent, va + 21 * Page + 100, 1)[0], Is.Zero);

        Assert.That(Parent.Stats.DemandZeroFaults, Is.EqualTo(1));
        Assert.That(Parent.Stats.DemandZeroPages, Is.EqualTo(16));
        Assert.That(Pages(Parent, Span(va, 64 * Page)).Keys.Order(),
            Is.EqualTo(Enumerable.Range(16, 16).Select(i => va + (ulong)i * Page)), "pages 16..31: the window holding page 21");
        AssertHostMirrors(Parent);

        Read(Parent, va + 16 * Page, (int)(16 * Page));
        Assert.That(Parent.Stats.DemandZeroFaults, Is.EqualTo(1), "the whole window is present: no more faults");
        Assert.That(Parent.Space.SpuriousFaults, Is.Zero, "fault-around installs the host mappings too");
    }

    [Test]
    public void Fault_around_stops_at_the_area_edges()
    {
        // The area is pages 3..7 of an aligned 16-page window; its neighbours are areas too.
        ulong window = 4 * MiB;
        Parent.Map(3 * Page, Lazy, At(window));
        ulong va = Parent.Map(5 * Page, Lazy, At(window + 3 * Page));
        Parent.Map(8 * Page, Lazy, At(window + 8 * Page));

        WriteU64(Parent, va + 2 * Page, 7);

        Assert.That(Parent.Stats.DemandZeroPages, Is.EqualTo(5));
        Assert.That(Pages(Parent, Span(window, 16 * Page)).Keys.Order(),
            Is.EqualTo(Enumerable.Range(3, 5).Select(i => window + (ulong)i * Page)));
        AssertHostMirrors(Parent);
    }

    [Test]
    public void Fault_around_skips_pages_already_mapped()
    {
        ulong va = MapLazy(Parent, 16);
        Parent.FaultAroundPages = 1;
        WriteU64(Parent, va + 5 * Page, 55);
        Parent.FaultAroundPages = 16;

        Read(Parent, va, 8);

        Assert.That(Parent.Stats.DemandZeroFaults, Is.EqualTo(2));
        Assert.That(Parent.Stats.DemandZeroPages, Is.EqualTo(16), "1 + the 15 others");
        Assert.That(ReadU64(Parent, va + 5 * Page), Is.EqualTo(55UL), "the mapped page was not replaced");
        AssertHostMirrors(Parent);
    }

    [Test]
    public void Fault_around_of_one_page_turns_it_off()
    {
        ulong va = MapLazy(Parent, 16);
        Parent.FaultAroundPages = 1;

        for (int i = 0; i < 16; i += 2) Read(Parent, va + (ulong)i * Page, 1);

        Assert.That(Parent.Stats.DemandZeroFaults, Is.EqualTo(8));
        Assert.That(Parent.Stats.DemandZeroPages, Is.EqualTo(8));
        Assert.That(Pages(Parent, Span(va, 16 * Page)).Count, Is.EqualTo(8));
        Assert.That(Pool.FramesInUse, Is.EqualTo(8));
        AssertHostMirrors(Parent);
    }

    [Test]
    public void A_larger_fault_around_window_fills_more()
    {
        ulong va = MapLazy(Parent, 512);
        Parent.FaultAroundPages = 512;

        WriteU64(Parent, va + 300 * Page, 1);

        Assert.That(Parent.Stats.DemandZeroFaults, Is.EqualTo(1));
        Assert.That(Parent.Stats.DemandZeroPages, Is.EqualTo(512));
        Assert.That(Parent.Space.CountHostMappings(), Is.EqualTo(3), "reserved below, the area in one mapping, reserved above");
        AssertHostMirrors(Parent);
    }

    [TestCase(0)]
    [TestCase(3)]
    [TestCase(24)]
    [TestCase(1024)]
    [TestCase(-16)]
    public void Fault_around_must_be_a_power_of_two_up_to_512(int pages)
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => Parent.FaultAroundPages = pages);
        Assert.That(Parent.FaultAroundPages, Is.EqualTo(16));
    }

    [Test]
    public void An_access_outside_every_area_fails_as_not_present()
    {
        ulong va = MapLazy(Parent, 4);
        long refused = Parent.Stats.Refused;

        CopyResult r = TryRead(Parent, va + 4 * Page, new byte[8]);

        AssertFault(r, va + 4 * Page, PageFaultKind.NotPresent);
        Assert.That(Parent.Stats.Refused, Is.EqualTo(refused + 1));
        Assert.That(Pool.FramesInUse, Is.Zero);
        AssertHostMirrors(Parent);
    }

    [Test]
    public void A_write_stops_exactly_at_the_end_of_the_area()
    {
        ulong va = MapLazy(Parent, 2);

        CopyResult r = TryWrite(Parent, va + 2 * Page - 100, Filled(9, 300));

        AssertFault(r, va + 2 * Page, PageFaultKind.NotPresent, bytesDone: 100);
        Assert.That(Read(Parent, va + 2 * Page - 100, 100), Is.EqualTo(Filled(9, 100)));
    }

    [Test]
    public void A_write_to_a_read_only_lazy_area_is_refused_but_a_read_maps_zero()
    {
        ulong va = MapLazy(Parent, 4, PageFlags.R);

        CopyResult w = TryWrite(Parent, va, Filled(1, 8));
        AssertFault(w, va, PageFaultKind.NotPresent);
        Assert.That(Pool.FramesInUse, Is.Zero, "a refused fault allocates nothing");

        Assert.That(Read(Parent, va, 8), Is.EqualTo(new byte[8]));
        CopyResult again = TryWrite(Parent, va, Filled(1, 8));
        AssertFault(again, va, PageFaultKind.Protection);
        Assert.That(PageAt(Parent, va)!.Value.Flags, Is.EqualTo(PageFlags.R));
        AssertHostMirrors(Parent);
    }

    [Test]
    public void With_the_pool_exhausted_a_demand_zero_fault_fails_the_copy_at_the_exact_byte()
    {
        // 80 MiB of lazy memory over a 64 MiB pool: every frame can be handed out, then the next page fails.
        ulong va = Parent.Map(80 * MiB, Lazy, Anywhere(PageFlags.RW, Huge));

        CopyResult r = TryWrite(Parent, va, Filled(0x3C, (int)(80 * MiB)));

        AssertFault(r, va + 64 * MiB, PageFaultKind.NotPresent, bytesDone: 64 * MiB);
        Assert.That(Pool.FramesInUse, Is.EqualTo((long)(64 * MiB / Page)));
        AssertHostMirrors(Parent);

        Parent.Unmap(Span(va, 16 * MiB));
        Write(Parent, va + 64 * MiB, Filled(0x3D, (int)(16 * MiB)));
        Assert.That(Read(Parent, va + 64 * MiB - Page, (int)(2 * Page)), Is.EqualTo(Filled(0x3C, (int)Page).Concat(Filled(0x3D, (int)Page))));
        AssertHostMirrors(Parent);
    }
}
